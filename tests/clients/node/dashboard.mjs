// The dashboard in a real browser (Debian's chromium driven by playwright-core), against the
// running cluster of tests/clients/run.sh: every shard's row, its state and numbers, and
// the rows of the sharded table per shard as the shards themselves count them, and each
// shard's hosts (s0 has a streaming replica) with their role, state and lag.
// Env: PGSHARD_HTTP (host:port of admin.http), EXPECTED_ROWS (JSON {shard: rows}),
// EXPECTED_HOSTS (JSON [[shard, host:port, listed as]...] in the map's order),
// KILL_SHARD (a command that stops shard s2), ARTIFACTS (screenshot directory).
import { chromium } from "playwright-core";
import { execSync } from "node:child_process";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";

const url = `http://${process.env.PGSHARD_HTTP}/dashboard`;
const expected = JSON.parse(process.env.EXPECTED_ROWS);
const expectedHosts = JSON.parse(process.env.EXPECTED_HOSTS);
const artifacts = process.env.ARTIFACTS;
mkdirSync(artifacts, { recursive: true });

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--headless"],
});
try {
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.error(`page error: ${e}`));
  page.on("console", (m) => m.type() === "error" && console.error(`page console: ${m.text()}`));
  await page.goto(url);
  await page.waitForSelector("body[data-loaded='1']", { timeout: 15000 });

  // One row per shard, each up, with the requests it served.
  const shards = await page.$$eval("#shards tbody tr", (rows) =>
    rows.map((r) => ({
      name: r.dataset.shard,
      state: r.querySelector(".state").textContent,
      queries: Number(r.querySelector(".queries").textContent),
      pool: r.querySelector(".pool").textContent,
    })));
  assert.deepEqual(shards.map((s) => s.name), Object.keys(expected));
  for (const s of shards) {
    assert.equal(s.state, "up", `shard ${s.name} state`);
    assert.ok(s.queries > 0, `shard ${s.name} served no queries: ${s.queries}`);
    assert.match(s.pool, /^\d+ \/ 4$/);
  }

  // Hosts: every shard's primary and s0's replica, each up once checked; the replica's lag
  // in bytes once its primary's position is known too.
  const hostsShown = async () =>
    page.$$eval("#hosts tbody tr", (rows) =>
      rows.map((r) => ({
        shard: r.dataset.shard,
        host: r.dataset.host,
        listed: r.querySelector(".listed").textContent,
        role: r.querySelector(".role").textContent,
        state: r.querySelector(".state").textContent,
        lag: r.querySelector(".lag_bytes").textContent,
      })));
  const settled = (hs) =>
    hs.length === expectedHosts.length && hs.every((h) => h.state === "up") &&
    hs.every((h) => h.listed === "primary" || /^\d+$/.test(h.lag));
  let hosts = [];
  for (let i = 0; i < 20 && !settled(hosts); i++) {
    if (i) await page.waitForTimeout(1000);
    hosts = await hostsShown();
  }
  assert.deepEqual(hosts.map((h) => [h.shard, h.host, h.listed]), expectedHosts);
  for (const h of hosts) {
    assert.equal(h.state, "up", `host ${h.host} state`);
    assert.equal(h.role, h.listed, `host ${h.host} answers as it is listed`);
    if (h.listed === "replica") assert.match(h.lag, /^\d+$/, `replica ${h.host} lag bytes`);
    else assert.equal(h.lag, "–", `primary ${h.host} has no lag`);
  }
  assert.equal(await page.isVisible("#no_hosts"), false);

  // Data distribution: the page refreshes itself; the shards' statistics catch up within
  // their flush interval and pgshard's sampling period.
  const rowsShown = async () =>
    page.$$eval("table[data-table='users'] tbody tr", (rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.shard, Number(r.querySelector(".rows").textContent)])));
  let shown = {};
  for (let i = 0; i < 60; i++) {
    shown = await rowsShown();
    if (JSON.stringify(shown) === JSON.stringify(expected)) break;
    await page.waitForTimeout(1000);
  }
  assert.deepEqual(shown, expected, "rows per shard on the dashboard");
  const skew = await page.textContent("#tables > div");
  assert.match(skew, /^users — skew \d+\.\d\d/);
  await page.screenshot({ path: `${artifacts}/dashboard.png`, fullPage: true });

  // A shard stopped: the page shows it down within a few refreshes.
  execSync(process.env.KILL_SHARD);
  let state = "";
  for (let i = 0; i < 20 && state !== "down"; i++) {
    await page.waitForTimeout(1000);
    state = await page.textContent("#shards tbody tr[data-shard='s2'] .state");
  }
  assert.equal(state, "down", "a stopped shard is shown down");
  // Its host too (the health checks see it within a second).
  let hostState = "";
  for (let i = 0; i < 10 && hostState !== "down"; i++) {
    hostState = await page.textContent(`#hosts tbody tr[data-shard='s2'] .state`);
    if (hostState !== "down") await page.waitForTimeout(1000);
  }
  assert.equal(hostState, "down", "a stopped shard's primary is shown down among the hosts");
  await page.screenshot({ path: `${artifacts}/dashboard-shard-down.png`, fullPage: true });
  console.log(`dashboard: ${JSON.stringify(shown)} rows shown; ${hosts.length} hosts; s2 down; ` +
              `screenshots in ${artifacts}`);
} finally {
  await browser.close();
}
