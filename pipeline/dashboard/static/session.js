// One session: per photo the pictures, the plants found, the count; live.
import {
  $, show, ARGUMENT, TERMINAL, api, duration, el, isPhotoName, live, number, reloader, setTitle,
  statusPill, when,
} from "./common.js";

const id = ARGUMENT;
const base = `api/sessions/${encodeURIComponent(id)}`;
const opened = new Set(); // <details> the operator opened stay open on updates
let doc = null;

const reload = reloader(async () => {
  doc = await api(base);
  render();
});

// ---- the full-size viewer

const viewer = el("dialog", { class: "lightbox", "aria-label": "full size" });
viewer.addEventListener("click", (event) => {
  if (event.target === viewer || event.target.closest("button.close")) viewer.close();
});
document.body.append(viewer);

function view(url, caption) {
  const image = el("img", { src: url, alt: caption });
  viewer.replaceChildren(
    el("div", { class: "frame" }, image),
    el("div", { class: "caption" }, el("span", { text: caption }),
      el("a", { href: url, target: "_blank", rel: "noopener", text: "open in a new tab" }),
      el("button", { type: "button", class: "close secondary", text: "Close" })));
  viewer.showModal();
}

// ---- pieces

function stat(label, value, extra = "") {
  return el("div", { class: `stat ${extra}` }, el("div", { class: "value", text: value }),
    el("div", { class: "label", text: label }));
}

function picture(photo, file, label, full, fullLabel) {
  const entry = photo.files[file];
  const caption = el("figcaption", { text: label });
  if (!entry || entry.state !== "uploaded") {
    const note = !entry
      ? (photo.state === "failed" ? "not made (the photo failed)"
        : TERMINAL.has(doc.session.status) ? "not made" : "not ready yet")
      : entry.state === "failed" ? "upload failed: see Dead letters" : "uploading…";
    return el("figure", { class: "picture" },
      el("div", { class: `placeholder ${entry?.state ?? ""}`, text: note }), caption);
  }
  const target = photo.files[full]?.state === "uploaded" ? photo.files[full].url : entry.url;
  return el("figure", { class: "picture" },
    el("button", { type: "button", class: "zoom", title: `open the ${fullLabel} full size`,
      onclick: () => view(target, `${photoTitle(photo)} · ${fullLabel}`) },
      el("img", { src: entry.url, alt: `${label} of ${photoTitle(photo)}`, loading: "lazy" })),
    caption);
}

function photoTitle(photo) {
  return `Photo ${photo.index + 1}` + (photo.name ? ` · ${photo.name}` : "");
}

function segmentsTable(photo) {
  if (!photo.segments.length) {
    return photo.state === "done" ? el("p", { class: "muted", text: "No container found." })
      : null;
  }
  return el("table", { class: "segments" },
    el("thead", {}, el("tr", {}, ["#", "container", "confidence", "detected", "estimated",
      "plants"].map((h, i) => el("th", { class: i >= 2 ? "num" : null, text: h })))),
    el("tbody", {}, photo.segments.map((s) => el("tr", {},
      el("td", { text: String(s.index + 1) }),
      el("td", { title: s.class_name, text: s.container_type }),
      el("td", { class: "num", text: s.confidence.toFixed(2) }),
      el("td", { class: "num", text: number(s.detected) }),
      el("td", { class: "num", text: number(s.estimated) }),
      el("td", { class: "num strong", text: number(s.detected + s.estimated) }))),
    photo.unassigned_detected ? el("tr", { class: "muted" },
      el("td", { text: "–" }), el("td", { text: "outside containers" }), el("td", {}),
      el("td", { class: "num", text: number(photo.unassigned_detected) }), el("td", {}),
      el("td", { class: "num", text: number(photo.unassigned_detected) })) : null));
}

function details(key, summary, ...content) {
  const node = el("details", { open: opened.has(key) }, el("summary", { text: summary }),
    ...content);
  node.addEventListener("toggle", () => (node.open ? opened.add(key) : opened.delete(key)));
  return node;
}

function photoCard(photo) {
  const counted = photo.detected !== null && photo.detected !== undefined;
  const links = ["original", "processed"]
    .filter((f) => photo.files[f]?.state === "uploaded")
    .map((f) => el("a", { href: photo.files[f].url, target: "_blank", rel: "noopener",
      text: f === "original" ? "original" : "visualization" }));
  const timings = Object.entries(photo.timings_ms);
  return el("article", { class: `photo ${photo.state}`, dataset: { index: photo.index } },
    el("header", {}, el("h3", { text: photoTitle(photo) }), statusPill(photo.state)),
    el("div", { class: "photo-body" },
    el("div", { class: "pictures" },
      picture(photo, "thumbnail_original", "photo", "original", "photo"),
      picture(photo, "thumbnail_processed", "plants found", "processed", "visualization")),
    el("div", { class: "findings" },
      el("div", { class: "counts" },
        stat("plants", counted ? number(photo.detected + (photo.estimated ?? 0)) : "–", "big"),
        stat("detected", counted ? number(photo.detected) : "–"),
        stat("estimated", counted ? number(photo.estimated ?? 0) : "–"),
        photo.avg_confidence !== null ? stat("confidence", photo.avg_confidence.toFixed(2))
          : null),
      photo.reason ? el("div", { class: "error" },
        el("strong", { text: photo.error_code ?? "error" }), ": ", photo.reason) : null,
      photo.warnings.length ? el("ul", { class: "warnings" },
        photo.warnings.map((w) => el("li", { text: w }))) : null,
      segmentsTable(photo),
      el("div", { class: "facts" },
        photo.width ? el("span", { text: `${photo.width}×${photo.height} px` }) : null,
        photo.provider ? el("span", { text: photo.provider }) : null,
        links.length ? el("span", { class: "links" }, "open: ", links.flatMap((a, i) =>
          i ? [" · ", a] : [a])) : null),
      timings.length ? details(`timings-${photo.index}`, "timings",
        el("table", { class: "timings" }, el("tbody", {}, timings.map(([k, v]) => el("tr", {},
          el("td", { text: k }), el("td", { class: "num", text: `${number(v)} ms` })))))) : null)));
}

function metadataTable(metadata) {
  const entries = Object.entries(metadata).filter(([k]) => !isPhotoName(k));
  if (!entries.length) return null;
  return el("table", { class: "metadata" }, el("tbody", {}, entries.map(([k, v]) =>
    el("tr", {}, el("th", { text: k }), el("td", { text: v })))));
}

function eventText(event) {
  const d = event.data ?? {};
  if (event.type === "session.status") {
    return `${d.previous ?? ""} → ${d.status}${d.reason ? `: ${d.reason}` : ""}`;
  }
  if (event.type.startsWith("photo.")) {
    const counts = d.detected !== null && d.detected !== undefined
      ? ` · ${d.detected} detected, ${d.estimated ?? 0} estimated` : "";
    return `photo ${Number(d.index) + 1}${counts}${d.reason ? ` · ${d.reason}` : ""}`;
  }
  if (event.type.startsWith("artifact.")) {
    return `${d.key ?? ""}${d.reason ? ` · ${d.error_code}: ${d.reason}` : ""}`;
  }
  if (event.type === "artifacts.ready") return `${d.uploaded} of ${d.total} files in the store`;
  if (event.type === "session.created") return `${d.photos} photo(s)`;
  return JSON.stringify(d);
}

function timeline(events) {
  return details("events", `events (${events.length})`,
    el("table", { class: "events" }, el("tbody", {}, [...events].reverse().map((e) =>
      el("tr", {}, el("td", {}, when(e.at)), el("td", { class: "type", text: e.type }),
        el("td", { text: eventText(e) }))))));
}

function render() {
  const s = doc.session;
  const t = doc.totals;
  const summary = doc.summary;
  setTitle(`Session ${id.slice(0, 8)}`);
  const took = summary ? duration((summary.completed_at ? new Date(summary.completed_at)
    : new Date()) - new Date(summary.created_at)) : "–";
  const links = [
    doc.results?.state === "uploaded" ? el("a", { href: doc.results.url, target: "_blank",
      rel: "noopener", text: "results.json" }) : null,
    el("a", { href: base, target: "_blank", rel: "noopener", text: "JSON" }),
  ].filter(Boolean);
  show(
    el("p", { class: "crumbs" }, el("a", { href: "", text: "Sessions" }), " / "),
    el("div", { class: "title" },
      el("h1", {}, "Session ", el("code", { class: "sid", text: id })),
      el("span", { id: "session-status" }, statusPill(s.status)),
      TERMINAL.has(s.status) ? null : el("span", { class: "stage", text: s.stage })),
    s.reason ? el("div", { class: s.status === "failed" ? "error" : "warning-box",
      text: s.reason }) : null,
    el("section", { class: "stats" },
      stat("plants", number(t.plants), "big"),
      stat("detected", number(t.detected)),
      stat("estimated", number(t.estimated)),
      stat("confidence", t.avg_confidence === null ? "–" : t.avg_confidence.toFixed(2)),
      stat("photos done", `${t.photos_done}/${s.photo_count}`),
      stat("files stored", `${doc.artifacts.uploaded}/${doc.artifacts.total}`,
        doc.artifacts.failed ? "bad" : ""),
      stat(TERMINAL.has(s.status) ? "took" : "running for", took),
      el("div", { class: "stat" }, el("div", { class: "value small" }, when(s.created_at)),
        el("div", { class: "label", text: "created" }))),
    el("div", { class: "sessionmeta" }, metadataTable(s.metadata),
      el("p", { class: "links" }, "open: ", links.flatMap((a, i) => (i ? [" · ", a] : [a])))),
    doc.artifacts.failed ? el("p", { class: "error" },
      `${doc.artifacts.failed} file(s) could not be stored: `,
      el("a", { href: "dead-letters", text: "see the dead letters" }), " to retry them.") : null,
    el("section", { class: "photos" }, doc.photos.map(photoCard)),
    timeline(doc.events));
}

reload();
live({ session: id, onChange: () => reload(200), onResync: () => reload() });
