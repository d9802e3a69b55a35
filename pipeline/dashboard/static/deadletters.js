// Dead letters: what failed, why, how often; retry one, retry all, discard — each confirmed.
import {
  $, show, act, api, confirmDialog, el, live, number, reloader, toast, when,
} from "./common.js";

let doc = null;
const reload = reloader(async () => {
  doc = await api("api/dead-letters");
  render();
});

async function run(path, done) {
  try {
    const answer = await act(path);
    toast(done(answer), "ok");
  } catch (err) {
    toast(`Refused: ${err.message}`, "error");
  }
  reload();
}

function what(letter) {
  return `${letter.function}${letter.target ? ` of ${letter.target}` : ""} (${letter.error_code})`;
}

async function retry(letter) {
  const yes = await confirmDialog({ title: "Retry this job?",
    message: `${what(letter)} is queued again as it was. ` +
      "Fix the cause first, or it fails the same way.", confirm: "Retry" });
  if (yes) run(`api/dead-letters/${encodeURIComponent(letter.id)}/retry`,
    () => `Queued again: ${letter.function}`);
}

async function discard(letter) {
  const yes = await confirmDialog({ title: "Discard this dead letter?",
    message: `${what(letter)} is dropped for good: it cannot be ` +
      "retried afterwards. The action is logged.", confirm: "Discard", danger: true });
  if (yes) run(`api/dead-letters/${encodeURIComponent(letter.id)}/discard`,
    () => "Discarded");
}

async function retryAll() {
  const yes = await confirmDialog({ title: `Retry ${doc.replayable} dead letters?`,
    message: "Every replayable job is queued again. Fix the cause first.",
    confirm: `Retry ${doc.replayable}` });
  if (yes) run("api/dead-letters/retry-all", (a) => `Queued again: ${a.replayed.length}` +
    (a.not_replayable ? ` (${a.not_replayable} cannot be replayed)` : ""));
}

function causes(rows) {
  if (!rows.length) return null;
  return el("section", {}, el("h2", { text: "By cause" }),
    el("table", { class: "causes" },
      el("thead", {}, el("tr", {}, ["job", "code", "letters", "tries", "last", "example"]
        .map((h, i) => el("th", { class: i === 2 || i === 3 ? "num" : null, text: h })))),
      el("tbody", {}, rows.map((c) => el("tr", {},
        el("td", { text: c.function }), el("td", {}, el("code", { text: c.error_code })),
        el("td", { class: "num", text: number(c.count) }),
        el("td", { class: "num", text: number(c.tries) }),
        el("td", {}, when(c.last_failed_at)),
        el("td", { class: "reason", text: c.example }))))));
}

function letters(rows) {
  return el("table", { class: "letters" },
    el("thead", {}, el("tr", {}, ["failed", "job", "what", "code", "tries", "session", "why", ""]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((d) => el("tr", { dataset: { id: d.id } },
      el("td", {}, when(d.failed_at)),
      el("td", { title: `${d.queue} · ${d.job_id}`, text: d.function }),
      el("td", { class: "target", title: d.target }, d.target ? el("code", {
        text: d.session_id && d.target.startsWith(`${d.session_id}/`)
          ? `…/${d.target.slice(d.session_id.length + 1)}` : d.target }) : "–"),
      el("td", {}, el("code", { text: d.error_code })),
      el("td", { class: "num", text: String(d.attempts) }),
      el("td", {}, d.session_id ? el("a", { href: `sessions/${encodeURIComponent(d.session_id)}`,
        text: d.session_id.slice(0, 12) }) : "–"),
      el("td", { class: "reason", text: d.reason }),
      el("td", { class: "actions" },
        d.replayable ? el("button", { type: "button", class: "primary small", text: "Retry",
          onclick: () => retry(d) }) : el("span", { class: "muted", title: "its photo is " +
          "already recorded as failed: resubmit the photo", text: "not replayable" }),
        el("button", { type: "button", class: "secondary small", text: "Discard",
          onclick: () => discard(d) }))))));
}

function actions(rows) {
  if (!rows.length) return null;
  return el("section", {}, el("h2", { text: "Recent actions" }),
    el("table", { class: "audit" }, el("tbody", {}, rows.map((a) => el("tr", {},
      el("td", {}, when(new Date(a.at * 1000).toISOString())),
      el("td", { text: a.action }),
      el("td", { text: Object.entries(a.details).map(([k, v]) => `${k} ${v}`).join(" · ") }),
      el("td", { class: "muted", text: a.client }))))));
}

function render() {
  const n = doc.letters.length;
  show(
    el("div", { class: "title" }, el("h1", { text: "Dead letters" }),
      el("span", { class: "total", text: `${number(n)} jobs gave up` }),
      el("button", { type: "button", class: "primary", disabled: doc.replayable === 0,
        onclick: retryAll, text: `Retry all (${doc.replayable})` })),
    n ? null : el("p", { class: "empty", text: "Nothing failed for good. Jobs that give up " +
      "(after their retries, or at once for a permanent error such as AccessDenied) land here." }),
    causes(doc.causes),
    n ? el("section", {}, el("h2", { text: "Letters" }), letters(doc.letters)) : null,
    actions(doc.actions));
}

reload();
live({ onChange: (kind) => { if (kind === "deadletters") reload(300); },
  onResync: () => reload() });
