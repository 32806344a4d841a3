#include "proxy/admin/dashboard.hpp"

namespace pgshard::admin {

const char* const kDashboardHtml = R"html(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>pgshard dashboard</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
  h1 { font-size: 1.3em; margin: 0 0 .2em; }
  h2 { font-size: 1.05em; margin: 1.4em 0 .4em; }
  table { border-collapse: collapse; min-width: 40em; }
  th, td { border-bottom: 1px solid #ddd; padding: .25em .7em; text-align: right; }
  th:first-child, td:first-child, td.text { text-align: left; }
  .up { color: #176f2c; font-weight: 600; }
  .down { color: #b3261e; font-weight: 600; }
  .unknown, .unchecked { color: #777; }
  .lagging, .banned { color: #b26a00; font-weight: 600; }
  .bar { display: inline-block; height: .8em; background: #4a7bd0; vertical-align: middle; }
  .skewed { color: #b3261e; font-weight: 600; }
  #meta { color: #555; }
  #stale { color: #b3261e; }
</style>
</head>
<body>
<h1>pgshard</h1>
<div id="meta">loading…</div><div id="stale"></div>
<h2>Shards</h2>
<table id="shards">
  <thead><tr><th>shard</th><th>state</th><th>primary</th><th>p50 ms</th><th>p99 ms</th>
  <th>queries (5 min)</th><th>pool used / size</th><th>waiting</th><th>queries</th>
  <th>errors</th><th>database</th><th>last error</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Hosts</h2>
<div id="no_hosts">No shard lists replicas: hosts are not checked.</div>
<table id="hosts">
  <thead><tr><th>shard</th><th>host</th><th>listed as</th><th>role</th><th>state</th>
  <th>lag bytes</th><th>lag ms</th><th>reads</th><th>bans</th><th>last error</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Data distribution</h2>
<div id="tables"></div>
<h2>Transactions in doubt</h2>
<div id="in_doubt">0</div>
<h2>Errors by SQLSTATE class</h2>
<table id="errors"><thead><tr><th>class</th><th>count</th></tr></thead><tbody></tbody></table>
<script>
"use strict";
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function bytes(n) {
  if (n < 0) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}
// Each shard's hosts (primary first, then its replicas) as their last health check saw them.
function renderHosts(shards) {
  const body = document.querySelector("#hosts tbody");
  body.replaceChildren();
  for (const sh of shards) {
    for (const h of sh.hosts || []) {
      const tr = el("tr", {"data-shard": sh.name, "data-host": h.host});
      tr.append(el("td", {}, sh.name),
                el("td", {"class": "text host"}, h.host),
                el("td", {"class": "text listed"}, h.listed_as),
                el("td", {"class": "text role"}, h.role),
                el("td", {"class": "state " + h.state}, h.state),
                el("td", {"class": "lag_bytes"}, h.lag_bytes === null ? "–" : h.lag_bytes),
                el("td", {"class": "lag_ms"}, h.lag_ms === null ? "–" : h.lag_ms),
                el("td", {"class": "reads"}, h.reads),
                el("td", {"class": "bans"}, h.bans),
                el("td", {"class": "text last_error"}, h.last_error));
      body.append(tr);
    }
  }
  const any = body.children.length > 0;
  document.getElementById("hosts").style.display = any ? "" : "none";
  document.getElementById("no_hosts").style.display = any ? "none" : "";
}
function render(s) {
  document.getElementById("meta").textContent =
    "pgshard " + s.version + " · up " + Math.round(s.uptime_s) + " s · " + s.clients +
    " clients · updated " + new Date().toLocaleTimeString();
  const body = document.querySelector("#shards tbody");
  body.replaceChildren();
  for (const sh of s.shards) {
    const tr = el("tr", {"data-shard": sh.name});
    tr.append(el("td", {"class": "name"}, sh.name),
              el("td", {"class": "state " + sh.state}, sh.state),
              el("td", {"class": "text"}, sh.primary),
              el("td", {"class": "p50"}, sh.p50_ms.toFixed(2)),
              el("td", {"class": "p99"}, sh.p99_ms.toFixed(2)),
              el("td", {"class": "recent"}, sh.recent_queries),
              el("td", {"class": "pool"}, sh.pool_used + " / " + sh.pool_size),
              el("td", {"class": "waiting"}, sh.waiting),
              el("td", {"class": "queries"}, sh.queries),
              el("td", {"class": "errors"}, sh.errors),
              el("td", {"class": "size"}, bytes(sh.database_bytes)),
              el("td", {"class": "text last_error"}, sh.last_error));
    body.append(tr);
  }
  renderHosts(s.shards);
  const tables = document.getElementById("tables");
  tables.replaceChildren();
  for (const t of s.tables) {
    const most = Math.max(1, ...t.shards.map(x => x.rows));
    const skewed = t.skew > 1.5;
    tables.append(el("div", {"class": skewed ? "skewed" : ""},
                     t.table + " — skew " + t.skew.toFixed(2) +
                     (skewed ? " (uneven: the fullest shard holds " + t.skew.toFixed(1) +
                      "× the mean)" : " (even)")));
    const tab = el("table", {"data-table": t.table});
    const head = el("tr");
    head.append(el("th", {}, "shard"), el("th", {}, "rows (estimate)"), el("th", {}, "bytes"),
                el("th", {}, ""));
    const thead = el("thead");
    thead.append(head);
    tab.append(thead);
    const tb = el("tbody");
    for (const x of t.shards) {
      const tr = el("tr", {"data-shard": x.shard});
      const bar = el("td", {"class": "text"});
      bar.append(el("span", {"class": "bar", "style": "width:" +
                             Math.round(200 * Math.max(0, x.rows) / most) + "px"}));
      tr.append(el("td", {}, x.shard), el("td", {"class": "rows"}, x.rows < 0 ? "–" : x.rows),
                el("td", {"class": "bytes"}, bytes(x.bytes)), bar);
      tb.append(tr);
    }
    tab.append(tb);
    tables.append(tab);
  }
  document.getElementById("in_doubt").textContent = s.in_doubt;
  const eb = document.querySelector("#errors tbody");
  eb.replaceChildren();
  for (const e of s.errors) {
    const tr = el("tr", {"data-class": e.class});
    tr.append(el("td", {}, e.class), el("td", {"class": "count"}, e.count));
    eb.append(tr);
  }
  document.body.setAttribute("data-loaded", "1");
}
async function refresh() {
  try {
    const r = await fetch("/api/status", {cache: "no-store"});
    render(await r.json());
    document.getElementById("stale").textContent = "";
  } catch (e) {
    document.getElementById("stale").textContent = "pgshard does not answer: " + e;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)html";

}  // namespace pgshard::admin
