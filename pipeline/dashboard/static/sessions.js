// Sessions: newest first, by status and text, a page at a time; live.
import {
  $, show, TERMINAL, ago, api, el, elapsed, duration, fileNames, isPhotoName, live, number, reloader, statusPill,
  when,
} from "./common.js";

const TABS = [["", "All"], ["pending", "Pending"], ["processing", "Processing"],
  ["completed", "Completed"], ["warning", "Warning"], ["failed", "Failed"]];
const params = new URLSearchParams(location.search);
const state = {
  status: params.get("status") ?? "",
  q: params.get("q") ?? "",
  page: Number(params.get("page")) || 1,
  perPage: 50,
  data: null,
};
const rows = new Map(); // session id -> <tr>

function query() {
  const p = new URLSearchParams();
  if (state.status) p.set("status", state.status);
  if (state.q) p.set("q", state.q);
  if (state.page > 1) p.set("page", String(state.page));
  return p;
}

const reload = reloader(async () => {
  const p = query();
  p.set("per_page", String(state.perPage));
  state.data = await api(`api/sessions?${p}`);
  history.replaceState(null, "", `${location.pathname}${query().size ? `?${query()}` : ""}`);
  render();
});

function thumb(s) {
  if (!s.thumbnail) return el("div", { class: "thumb empty", "aria-hidden": "true" });
  return el("img", { class: "thumb", loading: "lazy", alt: "",
    src: `files/${encodeURIComponent(s.session_id)}/0/${s.thumbnail}` });
}

function chips(s) {
  const names = fileNames(s.metadata);
  const out = [];
  if (names.length) {
    out.push(el("span", { class: "chip file", title: names.join("\n"),
      text: names.length > 1 ? `${names[0]} +${names.length - 1}` : names[0] }));
  }
  for (const [key, value] of Object.entries(s.metadata ?? {})) {
    if (isPhotoName(key) || key === "source") continue;
    const shown = `${key}: ${value}`;
    out.push(el("span", { class: "chip", title: shown,
      text: shown.length > 48 ? `${shown.slice(0, 47)}…` : shown }));
    if (out.length >= 4) break;
  }
  return out;
}

function row(s) {
  const link = `sessions/${encodeURIComponent(s.session_id)}`;
  const plants = s.detected + s.estimated;
  const counted = s.photos_done > 0 || TERMINAL.has(s.status);
  const tr = el("tr", { dataset: { id: s.session_id, status: s.status } },
    el("td", { class: "thumbcell" }, el("a", { href: link, tabindex: "-1" }, thumb(s))),
    el("td", { class: "session" },
      el("a", { href: link, class: "id", title: s.session_id, text: s.session_id.slice(0, 12) }),
      el("div", { class: "chips" }, chips(s)),
      s.reason ? el("div", { class: "reason", title: s.reason, text: s.reason }) : null),
    el("td", {}, statusPill(s.status),
      TERMINAL.has(s.status) ? null : el("div", { class: "stage", text: s.stage })),
    el("td", { class: "num" }, `${s.photos_done}/${s.photo_count}`,
      s.photos_failed ? el("div", { class: "bad", text: `${s.photos_failed} failed` }) : null),
    el("td", { class: "num plants" }, counted ? number(plants) : "–"),
    el("td", { class: "num" }, counted ? number(s.detected) : "–"),
    el("td", { class: "num" }, counted ? number(s.estimated) : "–"),
    el("td", {}, when(s.created_at)),
    el("td", { class: "num duration", dataset: TERMINAL.has(s.status) ? {} :
      { running: s.created_at } }, duration(elapsed(s))));
  rows.set(s.session_id, tr);
  return tr;
}

function tabs(counts) {
  return el("div", { class: "tabs", role: "tablist" }, TABS.map(([value, label]) =>
    el("button", {
      type: "button", role: "tab", "aria-selected": String(state.status === value),
      dataset: { status: value },
      onclick: () => { state.status = value; state.page = 1; reload(); },
    }, label, el("span", { class: "count", text: number(counts?.[value || "all"] ?? 0) }))));
}

function pager(data) {
  if (data.pages <= 1) return null;
  const go = (page) => () => { state.page = page; reload(); window.scrollTo(0, 0); };
  return el("nav", { class: "pager", "aria-label": "pages" },
    el("button", { type: "button", disabled: data.page <= 1, onclick: go(data.page - 1),
      text: "‹ Newer" }),
    el("span", { text: `page ${data.page} of ${data.pages}` }),
    el("button", { type: "button", disabled: data.page >= data.pages, onclick: go(data.page + 1),
      text: "Older ›" }));
}

let search = null;
function toolbar(data) {
  if (!search) {
    search = el("input", { type: "search", name: "q", value: state.q, autocomplete: "off",
      placeholder: "Search ids, metadata, file names, errors", "aria-label": "search" });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.q = search.value.trim(); state.page = 1; reload(); }, 250);
    });
  }
  return el("div", { class: "toolbar" }, tabs(data.counts), search,
    el("a", { class: "button primary", href: "upload", text: "Upload photos" }));
}

function render() {
  const data = state.data;
  rows.clear();
  const body = el("tbody", {}, data.sessions.map(row));
  const filtered = state.status || state.q;
  const empty = data.sessions.length ? null : el("p", { class: "empty" }, filtered
    ? "No session matches."
    : ["No sessions yet. Drop photos on the ", el("a", { href: "upload", text: "upload page" }),
      ", or submit some with ", el("code", { text: "plantpipe submit PHOTO" }), "."]);
  show(
    el("h1", {}, "Sessions", el("span", { class: "total",
      text: `${number(data.total)} ${filtered ? "matching" : "in all"}` })),
    toolbar(data),
    el("table", { class: "sessions" },
      el("thead", {}, el("tr", {},
        ["", "Session", "Status", "Photos", "Plants", "Detected", "Estimated", "Created",
          "Duration"].map((h, i) => el("th", { class: i >= 3 && i <= 6 ? "num" : null,
          text: h })))),
      body),
    empty,
    pager(data));
}

function matches(s) {
  if (state.status && s.status !== state.status) return false;
  if (!state.q) return true;
  const hay = `${s.session_id}\n${JSON.stringify(s.metadata)}\n${s.reason ?? ""}`.toLowerCase();
  return hay.includes(state.q.toLowerCase());
}

function changed(kind, message) {
  if (kind !== "session" || !state.data) return;
  if (message.counts) {
    state.data.counts = message.counts;
    const bar = $(".tabs");
    if (bar) bar.replaceWith(tabs(message.counts));
  }
  const s = message.summary;
  if (!s) return;
  const current = rows.get(s.session_id);
  if (current) {
    if (state.status && s.status !== state.status) { reload(600); return; }
    const fresh = row(s);
    fresh.classList.add("flash");
    current.replaceWith(fresh);
    return;
  }
  const newest = state.data.sessions[0];
  if (state.page === 1 && matches(s) && (!newest || s.created_at >= newest.created_at)) {
    state.data.sessions.unshift(s);
    state.data.total += 1;
    const body = $("table.sessions tbody");
    if (!body) { render(); return; }
    const fresh = row(s);
    fresh.classList.add("flash");
    body.prepend(fresh);
    $(".empty")?.remove();
    if (state.data.sessions.length > state.perPage) {
      const gone = state.data.sessions.pop();
      rows.get(gone.session_id)?.remove();
      rows.delete(gone.session_id);
    }
    $("h1 .total").textContent = `${number(state.data.total)} ${state.status || state.q ?
      "matching" : "in all"}`;
  }
}

// Durations of running sessions tick here, in the page (no request).
setInterval(() => {
  for (const cell of document.querySelectorAll("td.duration[data-running]")) {
    cell.textContent = duration(Date.now() - new Date(cell.dataset.running).getTime());
  }
  for (const time of document.querySelectorAll("time[datetime]")) {
    time.textContent = ago(time.getAttribute("datetime"));
  }
}, 1000);

reload();
live({ onChange: changed, onResync: () => reload() });
