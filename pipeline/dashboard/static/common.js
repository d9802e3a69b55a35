// What every page shares: DOM building (text only, never HTML), the JSON API, actions with
// their token, confirmations, the live stream, formatting. No build step, nothing from
// elsewhere: the browser loads these files as they are.

export const $ = (selector, root = document) => root.querySelector(selector);

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
export const AUTH = meta("plantpipe-auth");
export const ARGUMENT = meta("plantpipe-argument");
const TOKEN_KEY = "plantpipe-dashboard-token";
const COOKIE = "plantpipe_dashboard";

// An element with properties and children. Strings become text nodes, so whatever a string
// holds (file names, metadata, error text) shows as text and is never parsed as HTML.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      node.addEventListener(key.slice(2), value);
    } else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// Replace the page's content (null and false children are left out, as in el()).
export function show(...children) {
  $("#main").replaceChildren(...children.flat(Infinity).filter((c) => c !== null &&
    c !== undefined && c !== false));
}

export class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function answer(resp) {
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(data.error || `${resp.status} ${resp.statusText}`, resp.status);
  return data;
}

export async function api(path) {
  return answer(await fetch(path, { headers: { Accept: "application/json" } }));
}

function cookieToken() {
  const entry = document.cookie.split("; ").find((c) => c.startsWith(`${COOKIE}=`));
  return entry ? decodeURIComponent(entry.slice(COOKIE.length + 1)) : "";
}

// The header value an action carries: the page's cookie, or the dashboard token the operator
// entered (asked for once, kept in this browser).
export async function actionToken({ ask = true } = {}) {
  if (AUTH !== "token") return cookieToken();
  const kept = localStorage.getItem(TOKEN_KEY) || "";
  if (kept || !ask) return kept;
  const given = await askToken();
  if (given) localStorage.setItem(TOKEN_KEY, given);
  return given;
}

export function forgetToken() {
  localStorage.removeItem(TOKEN_KEY);
}

// POST an action (JSON body or a FormData). A refused token is forgotten, so the next try
// asks again.
export async function act(path, { body, form } = {}) {
  const token = await actionToken();
  const headers = { Accept: "application/json", "X-Plantpipe-Token": token };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method: "POST",
    headers,
    credentials: "same-origin",
    body: form ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  if (resp.status === 403 && AUTH === "token") forgetToken();
  return answer(resp);
}

// A modal in the page (an HTML <dialog>, not window.confirm): resolves true or false.
export function confirmDialog({ title, message, confirm = "Confirm", danger = false }) {
  return new Promise((resolve) => {
    const dialog = el("dialog", { class: "confirm" },
      el("h2", { text: title }),
      el("p", { text: message }),
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "secondary", value: "no", text: "Cancel" }),
        el("button", { type: "button", class: danger ? "danger" : "primary", value: "yes",
          text: confirm })));
    dialog.addEventListener("click", (event) => {
      const value = event.target?.value;
      if (value === "yes" || value === "no") dialog.close(value);
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes");
    });
    document.body.append(dialog);
    dialog.showModal();
    dialog.querySelector("button.secondary").focus();
  });
}

function askToken() {
  return new Promise((resolve) => {
    const input = el("input", { type: "password", name: "token", autocomplete: "off",
      "aria-label": "dashboard token", placeholder: "PLANTPIPE_DASHBOARD_TOKEN" });
    const dialog = el("dialog", { class: "confirm token" },
      el("h2", { text: "Dashboard token" }),
      el("p", { text: "Actions on this dashboard need its token (the value of " +
        "PLANTPIPE_DASHBOARD_TOKEN where it runs). It is kept in this browser." }),
      el("form", { method: "dialog" }, input,
        el("div", { class: "buttons" },
          el("button", { type: "submit", value: "no", class: "secondary", text: "Cancel" }),
          el("button", { type: "submit", value: "yes", class: "primary", text: "Use token" }))));
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(dialog.returnValue === "yes" ? input.value.trim() : "");
    });
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

export function toast(message, kind = "info") {
  const box = $("#toasts");
  const item = el("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" },
    message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 9000 : 5000);
}

// Runs `load` now or after `delay` ms; calls that come while one runs coalesce into one
// more run after it. No timer runs unless something asked for a reload.
export function reloader(load) {
  let timer = null;
  let running = false;
  let again = false;
  async function run() {
    timer = null;
    if (running) { again = true; return; }
    running = true;
    try { await load(); } catch (err) { showError(err); } finally { running = false; }
    if (again) { again = false; run(); }
  }
  return (delay = 0) => {
    if (timer !== null) return;
    timer = setTimeout(run, delay);
  };
}

export function showError(err) {
  const main = $("#main");
  if (main.querySelector(".loading")) {
    main.replaceChildren(el("p", { class: "error", text: `Could not load: ${err.message}` }));
  } else {
    toast(err.message, "error");
  }
}

// The live stream (server-sent events, pushed by the server; no polling). `onChange` gets
// each message; `onResync` runs when the page must reload its data: on every (re)connect,
// and when the server says changes were dropped. Closed while the tab is hidden, so open
// tabs in the background hold no connection.
export function live({ session = null, onChange = () => {}, onResync = () => {} } = {}) {
  const dot = $("#live");
  let source = null;
  const url = "api/events" + (session ? `?session=${encodeURIComponent(session)}` : "");
  const state = (on, label) => {
    dot.className = `live ${on ? "on" : "off"}`;
    dot.textContent = label;
  };
  function open() {
    source = new EventSource(url);
    source.addEventListener("hello", () => { state(true, "live"); onResync(); });
    source.addEventListener("session", (e) => onChange("session", JSON.parse(e.data)));
    source.addEventListener("deadletters", () => { onChange("deadletters", {}); refreshBadge(); });
    source.addEventListener("resync", () => onResync());
    source.onerror = () => {
      state(false, "reconnecting…");
      // The browser retries a dropped stream by itself, but not one the server refused
      // (e.g. 503 while Redis is away): open it again a little later.
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(() => { if (!source && !document.hidden) open(); }, 5000);
      }
    };
  }
  document.addEventListener("visibilitychange", () => {
    if (document.hidden && source) {
      source.close();
      source = null;
      state(false, "paused");
    } else if (!document.hidden && !source) {
      open();
    }
  });
  open();
}

const refreshBadge = (() => {
  const load = reloader(async () => {
    const overview = await api("api/overview");
    const link = $('nav a[data-nav="dead-letters"]');
    if (!link) return;
    link.querySelector(".badge")?.remove();
    if (overview.dead_letters > 0) {
      link.append(el("span", { class: "badge", text: String(overview.dead_letters),
        title: `${overview.dead_letters} dead letters` }));
    }
  });
  return () => load(500);
})();
refreshBadge();

// ---- formatting

export const STATUS_LABEL = {
  pending: "pending", processing: "processing", completed: "completed", warning: "warning",
  failed: "failed",
};

export function statusPill(status) {
  return el("span", { class: `pill ${status}`, text: STATUS_LABEL[status] ?? status });
}

export function number(n) {
  return n === null || n === undefined ? "–" : Number(n).toLocaleString("en");
}

export function duration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
  const s = Math.max(0, ms) / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.round(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s - m * 60)} s`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m - h * 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

export function ago(iso) {
  const then = new Date(iso).getTime();
  const s = Math.round((Date.now() - then) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString("en", { day: "numeric", month: "short" });
}

export function when(iso) {
  return el("time", { datetime: iso, title: new Date(iso).toLocaleString(), text: ago(iso) });
}

export const TERMINAL = new Set(["completed", "warning", "failed"]);

// How long a session took (or has taken so far).
export function elapsed(summary) {
  const start = new Date(summary.created_at).getTime();
  const end = summary.completed_at ? new Date(summary.completed_at).getTime() : Date.now();
  return end - start;
}

// The photos' file names a session records in its metadata: "photo.0", "photo.1", …
export function isPhotoName(key) {
  return /^photo\.\d+$/.test(key);
}

export function fileNames(metadata) {
  const names = [];
  while (metadata && Object.hasOwn(metadata, `photo.${names.length}`)) {
    names.push(String(metadata[`photo.${names.length}`]));
  }
  return names;
}

export function setTitle(text) {
  document.title = `${text} · plantpipe`;
}
