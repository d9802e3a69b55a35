// Upload: drop photos on the page (or choose them) to start a session.
import { $, show, actionToken, api, el, forgetToken, AUTH, showError } from "./common.js";

const TYPES = new Set(["image/jpeg", "image/jpg", "image/png", "image/webp"]);
const EXTENSIONS = /\.(jpe?g|png|webp)$/i;
let limits = null;
let busy = false;

function mib(bytes) {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 0)} MiB`;
}

function metadataFrom(text) {
  const out = {};
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const at = line.indexOf("=");
    if (at <= 0) throw new Error(`metadata line "${line.trim()}": write key=value`);
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

function problems(files) {
  const found = [];
  if (files.length > limits.max_photos) {
    found.push(`${files.length} photos: at most ${limits.max_photos} at once`);
  }
  for (const f of files) {
    if (!(TYPES.has(f.type) || (!f.type && EXTENSIONS.test(f.name)))) {
      found.push(`${f.name}: not a JPEG, PNG or WebP photo`);
    } else if (f.size > limits.max_upload_bytes) {
      found.push(`${f.name}: ${mib(f.size)}, over the ${mib(limits.max_upload_bytes)} limit`);
    }
  }
  return found;
}

function report(kind, ...content) {
  $("#upload-status").replaceChildren(el("div", { class: kind }, ...content));
}

async function send(files) {
  if (busy || !files.length) return;
  const found = problems(files);
  if (found.length) {
    report("error", el("strong", { text: "Not sent: " }),
      el("ul", {}, found.map((p) => el("li", { text: p }))));
    return;
  }
  let metadata;
  try {
    metadata = metadataFrom($("#metadata").value);
  } catch (err) {
    report("error", err.message);
    return;
  }
  const token = await actionToken();
  if (!token) {
    report("error", "Not sent: uploading needs the dashboard token.");
    return;
  }
  const form = new FormData();
  for (const f of files) form.append("photos", f, f.name);
  form.append("metadata", JSON.stringify(metadata));
  busy = true;
  const bar = el("progress", { max: "100", value: "0" });
  report("info", `Sending ${files.length} photo(s)… `, bar);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "api/sessions");
  xhr.setRequestHeader("X-Plantpipe-Token", token);
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = (100 * e.loaded) / e.total; };
  xhr.onerror = () => { busy = false; report("error", "The upload did not reach the server."); };
  xhr.onload = () => {
    busy = false;
    let data = {};
    try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
    if (xhr.status >= 200 && xhr.status < 300) {
      report("ok", "Session started: opening it…");
      location.assign(data.url);
      return;
    }
    if (xhr.status === 403 && AUTH === "token") forgetToken();
    report("error", el("strong", { text: "Refused: " }), data.error ?? `${xhr.status}`);
  };
  xhr.send(form);
}

function render() {
  const input = el("input", { type: "file", id: "files", multiple: true,
    accept: "image/jpeg,image/png,image/webp", class: "visually-hidden" });
  input.addEventListener("change", () => send([...input.files]));
  const zone = el("div", { id: "dropzone", class: "dropzone", tabindex: "0", role: "button",
    "aria-label": "drop photos here, or choose them" },
    el("div", { class: "big", text: "Drop nursery photos here" }),
    el("div", { text: `JPEG, PNG or WebP, up to ${mib(limits.max_upload_bytes)} each, ` +
      `${limits.max_photos} at once: they become one session.` }),
    el("label", { for: "files", class: "button primary", text: "or choose photos…" }), input);
  zone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  show(
    el("h1", { text: "Upload" }),
    el("label", { for: "metadata", class: "field" }, "Metadata, one ", el("code", { text: "key=value" }),
      " per line (optional: shown with the session and searchable)"),
    el("textarea", { id: "metadata", rows: "3", placeholder: "bench=A-12\ngrower=Ana",
      spellcheck: "false" }),
    zone,
    el("div", { id: "upload-status", "aria-live": "polite" }),
    el("p", { class: "muted" }, "Photos are checked as ", el("code", { text: "client.submit" }),
      " checks them (type, size, readable) before anything is stored. Storage: ",
      limits.storage, "."));
}

// The whole page takes the drop, so a photo let go anywhere is not opened by the browser.
for (const name of ["dragenter", "dragover"]) {
  document.addEventListener(name, (e) => {
    e.preventDefault();
    $("#dropzone")?.classList.add("over");
  });
}
document.addEventListener("dragleave", (e) => {
  if (e.target === document.documentElement || e.clientX <= 0) $("#dropzone")?.classList.remove("over");
});
document.addEventListener("drop", (e) => {
  e.preventDefault();
  $("#dropzone")?.classList.remove("over");
  send([...(e.dataTransfer?.files ?? [])]);
});

$("#live").hidden = true; // this page follows nothing live
api("api/overview").then((overview) => { limits = overview; render(); }).catch(showError);
