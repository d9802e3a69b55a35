// System: queues, workers, the S3 breaker, Redis. Refreshed when something changes (the
// live stream) and on demand; no timer asks the server.
import { $, show, api, duration, el, live, number, reloader } from "./common.js";

let doc = null;
let at = null;
const reload = reloader(async () => {
  doc = await api("api/system");
  at = new Date();
  render();
});

function queues(rows) {
  return el("table", { class: "queues" },
    el("thead", {}, el("tr", {}, ["role", "queue", "waiting", "scheduled", "running",
      "workers"].map((h, i) => el("th", { class: i >= 2 ? "num" : null, text: h })))),
    el("tbody", {}, rows.map((q) => el("tr", { dataset: { role: q.role } },
      el("td", { class: "strong", text: q.role }), el("td", {}, el("code", { text: q.queue })),
      el("td", { class: "num", text: number(q.waiting) + (q.partial ? "+" : "") }),
      el("td", { class: "num", title: "retries waiting for their backoff, deferred uploads",
        text: number(q.scheduled) }),
      el("td", { class: "num", text: number(q.running) }),
      el("td", { class: `num ${q.workers ? "" : "bad"}`, text: number(q.workers) })))));
}

function workers(rows) {
  if (!rows.length) {
    return el("p", { class: "error", text: "No live worker: sessions wait until one starts " +
      "(plantpipe workers, or arq workers.<role>.WorkerSettings)." });
  }
  return el("table", { class: "workers" },
    el("thead", {}, el("tr", {}, ["role", "host", "pid", "up", "last seen", "id"]
      .map((h) => el("th", { text: h })))),
    el("tbody", {}, rows.map((w) => el("tr", {},
      el("td", { class: "strong", text: w.role }), el("td", { text: w.host }),
      el("td", { text: String(w.pid) }), el("td", { text: duration(w.up_s * 1000) }),
      el("td", { text: `${w.seen_s_ago} s ago` }), el("td", {}, el("code", { text: w.worker_id }))))));
}

function breaker(b) {
  const words = { closed: "closed: uploads flow", half_open: "half open: one trial upload",
    open: "open: uploads deferred, not dropped" };
  return el("div", { class: "card" }, el("h2", { text: "S3 circuit breaker" }),
    el("p", {}, el("span", { class: `pill breaker-${b.state}`, text: b.state.replace("_", " ") }),
      " ", words[b.state] ?? ""),
    el("p", { class: "muted", text: `${b.failures} of ${b.fail_max} consecutive failures; ` +
      `opened ${b.opened_count} time(s); trial after ${b.reset_s} s` }));
}

function redis(r) {
  return el("div", { class: "card" }, el("h2", { text: "Redis" }),
    el("dl", {},
      el("dt", { text: "memory" }), el("dd", { text: `${r.used_memory_human} of ` +
        `${r.maxmemory_human}${r.used_share !== null ? ` (${Math.round(r.used_share * 100)} %)` :
          ""}; peak ${r.peak_memory_human}` }),
      el("dt", { text: "policy" }), el("dd", { class: r.policy_ok ? "" : "bad" }, r.policy,
        r.policy_ok ? "" : " — must be noeviction: queued jobs and photos could be evicted"),
      el("dt", { text: "version" }), el("dd", { text: r.version }),
      el("dt", { text: "up" }), el("dd", { text: duration(r.uptime_s * 1000) }),
      el("dt", { text: "clients" }), el("dd", { text: number(r.connected_clients) })));
}

function render() {
  show(
    el("div", { class: "title" }, el("h1", { text: "System" }),
      el("span", { class: "total", text: `key prefix ${doc.prefix} · as of ` +
        at.toLocaleTimeString() }),
      el("button", { type: "button", class: "secondary", onclick: () => reload(), text: "Refresh" })),
    el("section", {}, el("h2", { text: "Queues" }), queues(doc.queues)),
    el("section", {}, el("h2", { text: `Workers (${doc.workers.length})` }), workers(doc.workers)),
    el("div", { class: "cards" }, breaker(doc.breaker), redis(doc.redis),
      el("div", { class: "card" }, el("h2", { text: "Dead letters" }),
        el("p", {}, el("a", { href: "dead-letters", text: `${number(doc.dead_letters)} jobs ` +
          "gave up" })))));
}

reload();
live({ onChange: () => reload(2000), onResync: () => reload() });
