// The admin console's answers, the Prometheus exposition and the latency histogram, on
// snapshots built by hand (no network).
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "config/config.hpp"
#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/admin/console.hpp"
#include "proxy/admin/host_report.hpp"
#include "proxy/admin/http.hpp"
#include "proxy/admin/http_auth.hpp"

using namespace pgshard;

namespace {

const char* kMap = R"(users:
  - { name: app, password: secret }
  - { name: boss, password: x }
  - { name: watcher, password: y }
admin: { users: [boss], stats_users: [watcher], http: "127.0.0.1:9930" }
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:5432/app", pool_size: 8 }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:5433/app", pool_size: 8 }
sharded_tables:
  - { table: users, column: id }
)";

runtime::Snapshot two_workers() {
  runtime::Snapshot s;
  s.started = Clock::now() - std::chrono::seconds(100);
  for (int w = 0; w < 2; ++w) {
    runtime::WorkerSnapshot ws;
    ws.worker = w;
    runtime::PoolRow p;
    p.shard = 1;
    p.shard_name = "s1";
    p.user = "app";
    p.stats = {3, 1, w, 0, 4, 0};
    p.counters.queries = 10;
    p.counters.xacts = 5;
    for (int i = 0; i < 10; ++i) p.counters.query_time.add(1000 * (i + 1));
    p.counters.errors["22"] = 1;
    ws.pools.push_back(p);
    s.workers.push_back(ws);
  }
  s.taken = Clock::now();
  return s;
}

// The first message's type and, for an error, its SQLSTATE.
std::pair<char, std::string> first(const std::string& reply) {
  auto d = protocol::decode_frame(reply, 1 << 20);
  REQUIRE(d.status == protocol::DecodeStatus::kFrame);
  std::string code;
  if (d.frame.type == protocol::msg::kErrorResponse)
    code = std::string(protocol::ErrorFields::parse(d.frame.body)->code());
  return {d.frame.type, code};
}

}  // namespace

TEST_CASE("latency histogram: buckets, quantiles and sums", "[admin]") {
  pool::Histogram h;
  CHECK(h.quantile(0.5) == 0);
  for (int i = 0; i < 99; ++i) h.add(80);  // (50, 100] us
  h.add(20000000);                         // past the last bound
  CHECK(h.count == 100);
  CHECK(h.buckets[1] == 99);
  CHECK(h.buckets.back() == 1);
  CHECK(h.quantile(0.5) > 50);
  CHECK(h.quantile(0.5) <= 100);
  CHECK(h.quantile(1.0) == 10000000);  // the +Inf bucket reports the last bound
  pool::Histogram twice = h;
  twice.add(h);
  CHECK(twice.count == 200);
  CHECK(twice.sum_us == 2 * h.sum_us);
}

TEST_CASE("console answers: workers add up; permissions and bad commands", "[admin]") {
  auto cfg = config::load_string(kMap, "t.yaml");
  const auto snap = two_workers();
  const auto pools = admin::answer("SHOW POOLS", snap, *cfg, false);
  CHECK(first(pools).first == protocol::msg::kRowDescription);
  // One row for (s1, app): the two workers' pools are one pool to the operator.
  CHECK(snap.pools().size() == 1);
  CHECK(snap.pools()[0].counters.queries == 20);
  CHECK(snap.pools()[0].stats.waiting == 1);
  CHECK(snap.shards()[0].counters.errors.at("22") == 2);

  CHECK(first(admin::answer("SHOW NONSENSE", snap, *cfg, true)).second == "42601");
  CHECK(first(admin::answer("DROP TABLE users", snap, *cfg, true)).second == "42601");
  CHECK(first(admin::answer("SHUTDOWN", snap, *cfg, false)).second == "42501");
  CHECK(first(admin::answer("KILL_CLIENT 7", snap, *cfg, false)).second == "42501");
  CHECK(first(admin::answer("KILL_CLIENT x", snap, *cfg, true)).second == "42601");
  CHECK(first(admin::answer("KILL_CLIENT 7", snap, *cfg, true)).second == "42704");
  CHECK(first(admin::answer("WAIT_CLOSE", snap, *cfg, true)).second == "0A000");
  admin::Effects e;
  CHECK(first(admin::answer("PAUSE s1", snap, *cfg, true, &e)).first ==
        protocol::msg::kCommandComplete);
  CHECK(e.pools == admin::Effects::Pools::kPause);
  CHECK(e.shard == 1);
  CHECK(first(admin::answer("RESUME s9", snap, *cfg, true)).second == "42704");
  CHECK(first(admin::answer("RECONNECT", snap, *cfg, false)).second == "42501");
  CHECK(first(admin::answer("  ", snap, *cfg, true)).first == protocol::msg::kEmptyQueryResponse);
  admin::Effects stop;
  CHECK(first(admin::answer("shutdown", snap, *cfg, true, &stop)).first ==
        protocol::msg::kCommandComplete);
  CHECK(stop.shutdown);
  for (const char* what :
       {"HELP", "VERSION", "STATS", "STATS_TOTALS", "STATS_AVERAGES", "CLIENTS", "SERVERS",
        "DATABASES", "SHARDS", "CONFIG", "LISTS", "TRANSACTIONS", "ROUTES"}) {
    INFO(what);
    CHECK(first(admin::answer(std::string("SHOW ") + what, snap, *cfg, false)).first !=
          protocol::msg::kErrorResponse);
  }
}

TEST_CASE("metrics: Prometheus text with one declaration per family", "[admin]") {
  auto cfg = config::load_string(kMap, "t.yaml");
  std::vector<admin::ShardSample> samples(2);
  samples[0].pinged = Clock::now();
  samples[0].answered = true;
  samples[0].database_bytes = 123456789012;
  samples[0].tables["users"] = {42, 8192};
  const auto text = admin::HttpServer::metrics(two_workers(), *cfg, samples);
  CHECK(text.find("pgshard_queries_total{shard=\"s1\",user=\"app\"} 20\n") != std::string::npos);
  CHECK(text.find("pgshard_query_duration_seconds_count{shard=\"s1\"} 20\n") != std::string::npos);
  CHECK(text.find("pgshard_query_duration_seconds_bucket{shard=\"s1\",le=\"+Inf\"} 20\n") !=
        std::string::npos);
  CHECK(text.find("pgshard_shard_database_bytes{shard=\"s0\"} 123456789012\n") !=
        std::string::npos);
  CHECK(text.find("pgshard_table_rows{shard=\"s0\",table=\"users\"} 42\n") != std::string::npos);
  CHECK(text.find("pgshard_shard_up{shard=\"s0\"} 1\n") != std::string::npos);
  CHECK(text.find("pgshard_shard_up{shard=\"s1\"}") == std::string::npos);  // never pinged
  CHECK(text.find("pgshard_errors_total{shard=\"s1\",user=\"app\",class=\"22\"} 2\n") !=
        std::string::npos);
  std::istringstream in(text);
  std::string line;
  std::set<std::string> declared;
  while (std::getline(in, line))
    if (line.rfind("# TYPE ", 0) == 0)
      CHECK(declared.insert(line.substr(7, line.find(' ', 7) - 7)).second);
  // Cumulative buckets never decrease.
  std::regex bucket(R"(pgshard_query_duration_seconds_bucket\{shard="s1",le="[^"]+"\} (\d+))");
  long long last = -1;
  for (std::sregex_iterator it(text.begin(), text.end(), bucket), end; it != end; ++it) {
    const long long v = std::stoll((*it)[1]);
    CHECK(v >= last);
    last = v;
  }
  CHECK(last == 20);
}

TEST_CASE("metrics: the families in a fixed order, each sample under its own", "[admin]") {
  // Dashboards and scrapers diff the exposition; its order is part of the interface.
  auto cfg = config::load_string(kMap, "t.yaml");
  std::vector<admin::ShardSample> samples(2);
  samples[1].pinged = Clock::now();
  samples[1].database_bytes = 7;
  samples[1].tables["users"] = {3, 16384};
  auto snap = two_workers();
  snap.workers[0].clients.push_back({});
  snap.workers[0].clients.back().state = "active";
  snap.workers[1].clients.push_back({});
  snap.workers[1].clients.back().state = "login";
  snap.workers[0].routes.single = 4;
  snap.workers[1].routes.refused = 2;
  snap.workers[1].routes.merges[1] = 3;
  snap.workers[1].routes.refusals["0A000"] = 2;
  snap.workers[0].cache_size = 5;
  snap.workers[1].cache_hits = 6;
  snap.workers[1].cache_misses = 1;
  snap.committed_2pc = 9;
  snap.in_doubt = 1;
  const auto text = admin::HttpServer::metrics(snap, *cfg, samples);
  const std::vector<std::string> families = {"pgshard_up",
                                             "pgshard_uptime_seconds",
                                             "pgshard_clients",
                                             "pgshard_server_connections",
                                             "pgshard_pool_size",
                                             "pgshard_pool_waiting_clients",
                                             "pgshard_pool_max_wait_seconds",
                                             "pgshard_pool_waits_total",
                                             "pgshard_pool_wait_seconds_total",
                                             "pgshard_queries_total",
                                             "pgshard_transactions_total",
                                             "pgshard_bytes_sent_total",
                                             "pgshard_bytes_received_total",
                                             "pgshard_server_logins_total",
                                             "pgshard_server_login_failures_total",
                                             "pgshard_errors_total",
                                             "pgshard_query_duration_seconds",
                                             "pgshard_transaction_duration_seconds",
                                             "pgshard_shard_up",
                                             "pgshard_shard_database_bytes",
                                             "pgshard_table_rows",
                                             "pgshard_table_bytes",
                                             "pgshard_statements_total",
                                             "pgshard_multi_shard_statements_total",
                                             "pgshard_refusals_total",
                                             "pgshard_parse_cache_entries",
                                             "pgshard_parse_cache_hits_total",
                                             "pgshard_parse_cache_misses_total",
                                             "pgshard_2pc_committed_total",
                                             "pgshard_2pc_rolled_back_total",
                                             "pgshard_2pc_in_doubt",
                                             "pgshard_host_up",
                                             "pgshard_host_in_recovery",
                                             "pgshard_host_lag_bytes",
                                             "pgshard_host_lag_seconds",
                                             "pgshard_host_timeline",
                                             "pgshard_host_takes_writes",
                                             "pgshard_host_reads_total",
                                             "pgshard_host_bans_total",
                                             "pgshard_host_read_your_writes_waits_total",
                                             "pgshard_host_primary_fallbacks_total",
                                             "pgshard_shard_writes_refused",
                                             "pgshard_shard_failovers_total",
                                             "pgshard_host_query_duration_seconds"};
  std::vector<std::string> declared;
  // The sampled families are declared together, then sampled shard by shard.
  const std::set<std::string> sampled = {"pgshard_shard_up", "pgshard_shard_database_bytes",
                                         "pgshard_table_rows", "pgshard_table_bytes"};
  std::istringstream in(text);
  std::string line, current;
  std::vector<std::string> samples_seen;
  while (std::getline(in, line)) {
    if (line.rfind("# HELP ", 0) == 0) continue;
    if (line.rfind("# TYPE ", 0) == 0) {
      current = line.substr(7, line.find(' ', 7) - 7);
      declared.push_back(current);
      continue;
    }
    const auto name = line.substr(0, line.find_first_of("{ "));
    samples_seen.push_back(line);
    if (sampled.contains(name)) continue;
    const bool own = name == current || name == current + "_bucket" || name == current + "_sum" ||
                     name == current + "_count";
    if (!own) FAIL_CHECK("sample outside its family: " << line << " under " << current);
  }
  CHECK(declared == families);
  auto has = [&](const std::string& l) {
    return std::find(samples_seen.begin(), samples_seen.end(), l) != samples_seen.end();
  };
  CHECK(has("pgshard_up 1"));
  CHECK(has("pgshard_clients{state=\"active\"} 1"));
  CHECK(has("pgshard_clients{state=\"idle\"} 0"));
  CHECK(has("pgshard_clients{state=\"login\"} 1"));
  CHECK(has("pgshard_pool_size{shard=\"s1\",user=\"app\"} 8"));
  CHECK(has("pgshard_server_connections{shard=\"s1\",user=\"app\",state=\"active\"} 4"));
  CHECK(has("pgshard_server_connections{shard=\"s1\",user=\"app\",state=\"idle\"} 2"));
  CHECK(has("pgshard_server_connections{shard=\"s1\",user=\"app\",state=\"login\"} 0"));
  CHECK(has("pgshard_transactions_total{shard=\"s1\",user=\"app\"} 10"));
  CHECK(has("pgshard_shard_up{shard=\"s1\"} 0"));
  CHECK(has("pgshard_table_bytes{shard=\"s1\",table=\"users\"} 16384"));
  CHECK(has("pgshard_statements_total{route=\"single_shard\"} 4"));
  CHECK(has("pgshard_statements_total{route=\"refused\"} 2"));
  CHECK(has("pgshard_multi_shard_statements_total{merge=\"sort\"} 3"));
  CHECK(has("pgshard_refusals_total{sqlstate=\"0A000\"} 2"));
  CHECK(has("pgshard_parse_cache_entries 5"));
  CHECK(has("pgshard_parse_cache_hits_total 6"));
  CHECK(has("pgshard_parse_cache_misses_total 1"));
  CHECK(has("pgshard_2pc_committed_total 9"));
  CHECK(has("pgshard_2pc_rolled_back_total 0"));
  CHECK(has("pgshard_2pc_in_doubt 1"));
  // Within a family, samples keep their order: the states, the routes.
  auto at = [&](const std::string& l) {
    return std::find(samples_seen.begin(), samples_seen.end(), l) - samples_seen.begin();
  };
  CHECK(at("pgshard_clients{state=\"active\"} 1") < at("pgshard_clients{state=\"idle\"} 0"));
  CHECK(at("pgshard_clients{state=\"idle\"} 0") < at("pgshard_clients{state=\"login\"} 1"));
  CHECK(at("pgshard_statements_total{route=\"single_shard\"} 4") <
        at("pgshard_statements_total{route=\"refused\"} 2"));
  CHECK(at("pgshard_shard_database_bytes{shard=\"s1\"} 7") <
        at("pgshard_table_rows{shard=\"s1\",table=\"users\"} 3"));
}

namespace {

const char* kReplicaMap = R"(users: [{ name: app, password: secret }]
shards:
  - name: s0
    primary: "postgres://app:secret@10.0.0.1:5432/app"
    replicas: ["postgres://app:secret@10.0.0.2:5432/app", "postgres://app:secret@10.0.0.3:5433/app"]
  - { name: s1, primary: "postgres://app:secret@10.0.0.4:5432/app" }
sharded_tables:
  - { table: users, column: id }
health: { ban_time: 5s }
)";

// Shard s0's primary at 5000, its first replica up 4000 bytes and 1.5 s behind with 3
// reads, its second replica failing its check; s1's primary never checked. Pools: s0's
// primary served 2 requests, its first replica 4.
runtime::Snapshot with_hosts(const config::Config& cfg) {
  runtime::HostHealth health;
  health.configure(cfg);
  const auto now = Clock::now();
  health.record(0, {false, 5000, 0, 7}, now, cfg.replication);
  health.record(1, {true, 1000, 1500, 7}, now, cfg.replication);
  health.record_failure(2, "connection refused", now, cfg.replication);
  for (int i = 0; i < 3; ++i) health.count_read(0, 0, runtime::ReadCount::kReplica);
  health.count_read(0, -1, runtime::ReadCount::kFallback);
  health.count_read(0, -1, runtime::ReadCount::kWaitedForReplica);
  runtime::Snapshot snap;
  snap.started = now - std::chrono::seconds(10);
  snap.taken = now;
  snap.hosts = health.snapshot();
  runtime::WorkerSnapshot w;
  auto pool = [&](int target, const std::string& name, int requests) {
    runtime::PoolRow p;
    p.shard = target;
    p.shard_name = name;
    p.user = "app";
    for (int i = 0; i < requests; ++i) p.counters.query_time.add(700);
    w.pools.push_back(p);
  };
  pool(0, "s0", 2);
  pool(2, "s0 replica 10.0.0.2:5432", 4);  // targets: s0, s1, then s0's replicas
  snap.workers.push_back(w);
  return snap;
}

}  // namespace

TEST_CASE("metrics: every host of the shards, with role, lag, reads, bans and latency", "[admin]") {
  // Before: replicas had only SHOW HOSTS; /metrics had no family per host.
  auto cfg = config::load_string(kReplicaMap, "t.yaml");
  const auto text = admin::HttpServer::metrics(with_hosts(*cfg), *cfg, {});
  INFO(text);
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  const std::string p0 = R"({shard="s0",host="10.0.0.1:5432",role="primary"})";
  const std::string r1 = R"({shard="s0",host="10.0.0.2:5432",role="replica"})";
  const std::string r2 = R"({shard="s0",host="10.0.0.3:5433",role="replica"})";
  const std::string p1 = R"({shard="s1",host="10.0.0.4:5432",role="primary"})";
  CHECK(has("pgshard_host_up" + p0 + " 1"));
  CHECK(has("pgshard_host_up" + r1 + " 1"));
  CHECK(has("pgshard_host_up" + r2 + " 0"));
  CHECK(text.find("pgshard_host_up" + p1) == std::string::npos);  // never checked
  CHECK(has("pgshard_host_in_recovery" + p0 + " 0"));
  CHECK(has("pgshard_host_in_recovery" + r1 + " 1"));
  CHECK(has("pgshard_host_lag_bytes" + r1 + " 4000"));
  CHECK(has("pgshard_host_lag_seconds" + r1 + " 1.5"));
  CHECK(text.find("pgshard_host_lag_bytes" + p0) == std::string::npos);
  CHECK(text.find("pgshard_host_lag_bytes" + r2) == std::string::npos);  // not known
  CHECK(has("pgshard_host_reads_total" + r1 + " 3"));
  CHECK(has("pgshard_host_reads_total" + p0 + " 2"));
  CHECK(has("pgshard_host_bans_total" + r2 + " 1"));
  CHECK(has("pgshard_host_bans_total" + r1 + " 0"));
  CHECK(has("pgshard_host_read_your_writes_waits_total" + p0 + " 1"));
  CHECK(has("pgshard_host_primary_fallbacks_total" + p0 + " 1"));
  CHECK(text.find("pgshard_host_primary_fallbacks_total" + r1) == std::string::npos);
  // Latency per host, the replicas' pools included; a host without requests shows zeros.
  CHECK(has("pgshard_host_query_duration_seconds_count" + r1 + " 4"));
  CHECK(has(R"(pgshard_host_query_duration_seconds_bucket{shard="s0",host="10.0.0.2:5432",)"
            R"(role="replica",le="0.001"} 4)"));
  CHECK(has(R"(pgshard_host_query_duration_seconds_bucket{shard="s0",host="10.0.0.2:5432",)"
            R"(role="replica",le="0.0005"} 0)"));
  CHECK(has("pgshard_host_query_duration_seconds_count" + p0 + " 2"));
  CHECK(has("pgshard_host_query_duration_seconds_count" + r2 + " 0"));
  CHECK(has("pgshard_host_query_duration_seconds_sum" + p1 + " 0"));
  // Without replicas nothing is checked: the families are declared, with no samples.
  auto plain = config::load_string(kMap, "t.yaml");
  const auto none = admin::HttpServer::metrics(two_workers(), *plain, {});
  CHECK(none.find("# TYPE pgshard_host_up gauge\n") != std::string::npos);
  CHECK(none.find("pgshard_host_up{") == std::string::npos);
  CHECK(none.find("pgshard_host_query_duration_seconds_count{") == std::string::npos);
}

TEST_CASE("metrics: a shard with two primaries is down, its writes refused; timelines", "[admin]") {
  // Before: pgshard_shard_up said 1 during a split brain; no timeline or writer per host.
  auto cfg = config::load_string(kReplicaMap, "t.yaml");
  runtime::HostHealth health;
  health.configure(*cfg);
  const auto now = Clock::now();
  health.record(0, {false, 5000, 0, 7, 3}, now, cfg->replication);
  health.record(1, {true, 4000, 0, 7, 3}, now, cfg->replication);
  health.record_failure(2, "connection refused", now, cfg->replication);
  runtime::Snapshot snap;
  snap.started = snap.taken = now;
  snap.hosts = health.snapshot();
  std::vector<admin::ShardSample> samples(2);
  for (auto& s : samples) {
    s.answered = true;
    s.pinged = now;
  }
  auto text = admin::HttpServer::metrics(snap, *cfg, samples);
  INFO(text);
  auto has = [&](const std::string& line) { return text.find(line + "\n") != std::string::npos; };
  const std::string p0 = R"({shard="s0",host="10.0.0.1:5432",role="primary"})";
  const std::string r1 = R"({shard="s0",host="10.0.0.2:5432",role="replica"})";
  CHECK(has(R"(pgshard_shard_up{shard="s0"} 1)"));
  CHECK(has(R"(pgshard_shard_writes_refused{shard="s0"} 0)"));
  CHECK(has("pgshard_host_timeline" + p0 + " 3"));
  CHECK(has("pgshard_host_takes_writes" + p0 + " 1"));
  CHECK(has("pgshard_host_takes_writes" + r1 + " 0"));
  // The replica is promoted by hand while the old primary still answers: two primaries.
  health.record(1, {false, 6000, 0, 7, 3}, now, cfg->replication);
  snap.hosts = health.snapshot();
  text = admin::HttpServer::metrics(snap, *cfg, samples);
  CHECK(has(R"(pgshard_shard_up{shard="s0"} 0)"));
  CHECK(has(R"(pgshard_shard_up{shard="s1"} 1)"));
  CHECK(has(R"(pgshard_shard_writes_refused{shard="s0"} 1)"));
  CHECK(has("pgshard_host_takes_writes" + p0 + " 0"));
  CHECK(has("pgshard_host_takes_writes" + r1 + " 0"));
  CHECK(admin::shard_writes(snap, 0).refused);
  CHECK(admin::shard_writes(snap, 0).writer.empty());
  // The old primary goes back to recovery on a newer timeline: writes move, counted.
  health.record(0, {true, 6000, 0, 7, 4}, now, cfg->replication);
  health.record(1, {false, 6100, 0, 7, 4}, now, cfg->replication);
  snap.hosts = health.snapshot();
  text = admin::HttpServer::metrics(snap, *cfg, samples);
  CHECK(has(R"(pgshard_shard_up{shard="s0"} 1)"));
  CHECK(has("pgshard_host_takes_writes" + r1 + " 1"));
  CHECK(has("pgshard_host_timeline" + r1 + " 4"));
  CHECK(has(R"(pgshard_shard_failovers_total{shard="s0"} 1)"));
  CHECK(admin::shard_writes(snap, 0).writer == "10.0.0.2:5432");
}

TEST_CASE("status JSON: each shard's hosts with role, state and lag", "[admin]") {
  auto cfg = config::load_string(kReplicaMap, "t.yaml");
  const auto snap = with_hosts(*cfg);
  const auto s0 = admin::hosts_json(snap, 0);
  INFO(s0);
  CHECK(s0.find(R"({"host":"10.0.0.1:5432","listed_as":"primary","role":"primary","state":"up",)"
                R"("lag_bytes":null,"lag_ms":null,"reads":2,"bans":0,"last_error":""})") !=
        std::string::npos);
  CHECK(s0.find(R"({"host":"10.0.0.2:5432","listed_as":"replica","role":"replica","state":"up",)"
                R"("lag_bytes":4000,"lag_ms":1500,"reads":3,)") != std::string::npos);
  CHECK(s0.find(R"({"host":"10.0.0.3:5433","listed_as":"replica","role":"unknown",)"
                R"("state":"down",)") != std::string::npos);
  CHECK(s0.find(R"("last_error":"connection refused"})") != std::string::npos);
  CHECK(admin::hosts_json(snap, 1) ==
        R"([{"host":"10.0.0.4:5432","listed_as":"primary","role":"unknown","state":"unchecked",)"
        R"("lag_bytes":null,"lag_ms":null,"reads":0,"bans":0,"last_error":""}])");
  runtime::Snapshot without;
  CHECK(admin::hosts_json(without, 0) == "[]");
}

TEST_CASE("config: the admin section names known users and a host:port", "[admin]") {
  auto cfg = config::load_string(kMap, "t.yaml");
  CHECK(cfg->admin.is_admin("boss"));
  CHECK(!cfg->admin.is_admin("watcher"));
  CHECK(cfg->admin.may_view("watcher"));
  CHECK(!cfg->admin.may_view("app"));
  CHECK(cfg->admin.http_port == 9930);
  auto error_of = [](std::string yaml) {
    try {
      config::load_string(yaml, "t.yaml");
    } catch (const config::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  std::string bad = kMap;
  bad.replace(bad.find("users: [boss]"), 13, "users: [nobody]");
  CHECK(error_of(bad).find("t.yaml:5: admin.users: 'nobody' is not one of the users") !=
        std::string::npos);
  bad = kMap;
  bad.replace(bad.find("127.0.0.1:9930"), 14, "9930");
  CHECK(error_of(bad).find("admin.http must be host:port") != std::string::npos);
}

TEST_CASE("config: the HTTP endpoint's limits, credentials and TLS", "[admin]") {
  auto with_admin = [](const std::string& keys) {
    std::string yaml = kMap;
    const std::string from = "http: \"127.0.0.1:9930\"";
    return yaml.replace(yaml.find(from), from.size(), from + ", " + keys);
  };
  auto error_of = [](const std::string& yaml) {
    try {
      config::load_string(yaml, "t.yaml");
    } catch (const config::ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  auto plain = config::load_string(kMap, "t.yaml");
  CHECK(plain->admin.http_max_connections == 64);
  CHECK(plain->admin.http_idle_timeout == std::chrono::seconds(10));
  CHECK(plain->admin.http_auth_token.empty());
  CHECK(plain->admin.http_basic_auth.empty());

  char path[] = "/tmp/pgshard-secret-XXXXXX";
  const int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  close(fd);
  std::ofstream(path) << "tok-from-file\n";
  auto cfg = config::load_string(
      with_admin("http_max_connections: 8, http_idle_timeout: 2s, http_auth_token_file: " +
                 std::string(path) + ", http_basic_auth: \"mon:pw\""),
      "t.yaml");
  CHECK(cfg->admin.http_max_connections == 8);
  CHECK(cfg->admin.http_idle_timeout == std::chrono::seconds(2));
  CHECK(cfg->admin.http_auth_token == "tok-from-file");
  CHECK(cfg->admin.http_basic_auth == "mon:pw");

  CHECK(error_of(with_admin("http_max_connections: 0"))
            .find("t.yaml:5: admin.http_max_connections "
                  "must be an integer between 1 and") != std::string::npos);
  CHECK(error_of(with_admin("http_idle_timeout: soon"))
            .find("admin.http_idle_timeout must be a "
                  "duration") != std::string::npos);
  CHECK(error_of(with_admin("http_auth_token: x, http_auth_token_file: " + std::string(path)))
            .find("admin.http_auth_token and admin.http_auth_token_file are exclusive") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_auth_token_file: /nonexistent/token"))
            .find("admin.http_auth_token_file: cannot read '/nonexistent/token'") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_auth_token: \"\"")).find("must be a non-empty value") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_auth_token: \"a b\"")).find("must not contain spaces") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_basic_auth: nocolon")).find("must be user:password") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_basic_auth: \":pw\"")).find("must be user:password") !=
        std::string::npos);
  CHECK(error_of(with_admin("http_tls_cert: a.crt")).find("go together") != std::string::npos);
  CHECK(error_of(with_admin("http_token: x")).find("unknown key 'http_token' in admin") !=
        std::string::npos);
  std::remove(path);
}

TEST_CASE("HTTP credentials: bearer token or basic auth; probes open", "[admin]") {
  config::Admin none;
  CHECK(admin::http_authorized(none, ""));
  CHECK(admin::http_challenges(none).empty());

  config::Admin a;
  a.http_auth_token = "t0ken";
  CHECK(admin::http_authorized(a, "Bearer t0ken"));
  CHECK(admin::http_authorized(a, "bearer  t0ken "));
  CHECK(!admin::http_authorized(a, ""));
  CHECK(!admin::http_authorized(a, "Bearer t0ke"));
  CHECK(!admin::http_authorized(a, "Bearer t0ken2"));
  CHECK(!admin::http_authorized(a, "Bearer"));
  CHECK(!admin::http_authorized(a, "Bearert0ken"));
  CHECK(!admin::http_authorized(a, "Basic " + protocol::base64_encode("x:t0ken")));
  CHECK(admin::http_challenges(a) == std::vector<std::string>{"Bearer realm=\"pgshard\""});

  a.http_basic_auth = "mon:p:w";  // the password may hold a colon
  CHECK(admin::http_authorized(a, "Basic " + protocol::base64_encode("mon:p:w")));
  CHECK(admin::http_authorized(a, "Bearer t0ken"));
  CHECK(!admin::http_authorized(a, "Basic " + protocol::base64_encode("mon:p")));
  CHECK(!admin::http_authorized(a, "Basic " + protocol::base64_encode("other:p:w")));
  CHECK(!admin::http_authorized(a, "Basic not-base64!"));
  CHECK(!admin::http_authorized(a, "Digest mon"));
  CHECK(admin::http_challenges(a).size() == 2);

  for (const char* open : {"/health", "/healthz", "/ready", "/readyz"})
    CHECK(admin::http_open_path(open));
  for (const char* closed : {"/metrics", "/api/status", "/dashboard", "/", "/health/x", "/HEALTH"})
    CHECK(!admin::http_open_path(closed));
}

TEST_CASE("reload: what may change live and what is refused, by name", "[admin]") {
  auto running = config::load_string(kMap, "t.yaml");
  auto with = [&](const std::string& from, const std::string& to) {
    std::string yaml = kMap;
    const auto at = yaml.find(from);
    REQUIRE(at != std::string::npos);
    return config::load_string(yaml.replace(at, from.size(), to), "t.yaml");
  };
  auto refused = [&](const config::Config& next) {
    std::string all;
    for (const auto& r : config::reload_refusals(*running, next)) all += r + "\n";
    return all;
  };
  // Live: users, passwords, pool sizes, timeouts, log level.
  CHECK(refused(*with("password: x }", "password: changed }")).empty());
  CHECK(refused(*with("pool_size: 8 }\n  - { name: s1", "pool_size: 2 }\n  - { name: s1")).empty());
  CHECK(refused(*with("sharded_tables:",
                      "log_level: debug\ntimeouts: { pool_wait: 1s }\nsharded_tables:"))
            .empty());
  // Refused, each named.
  CHECK(refused(*with("column: id }", "column: id, function: ring }")) ==
        "sharded table users: function hash -> ring (reshard)\n");
  CHECK(refused(*with("column: id }", "column: uid }")) ==
        "sharded table users: key column id -> uid (reshard)\n");
  CHECK(refused(*with("127.0.0.1:5433/app", "127.0.0.1:6000/app")).find("shard s1 primary") == 0);
  CHECK(refused(*with("- { table: users, column: id }",
                      "- { table: users, column: id }\n  - { table: orders, column: uid }"))
            .find("sharded table orders added") == 0);
  CHECK(refused(*with("http: \"127.0.0.1:9930\"", "http: \"127.0.0.1:9931\"")) ==
        "admin.http address\n");
  // The endpoint's credentials and limits change live (a rotated Secret); its TLS files not.
  CHECK(refused(*with("http: \"127.0.0.1:9930\"",
                      "http: \"127.0.0.1:9930\", http_auth_token: rotated, "
                      "http_max_connections: 5"))
            .empty());
  CHECK(refused(*with("http: \"127.0.0.1:9930\"",
                      "http: \"127.0.0.1:9930\", http_tls_cert: a.crt, http_tls_key: a.key")) ==
        "admin.http_tls_cert / admin.http_tls_key\n");
  auto swapped = with("name: s0, primary: \"postgres://app:secret@127.0.0.1:5432/app\"",
                      "name: s9, primary: \"postgres://app:secret@127.0.0.1:5432/app\"");
  CHECK(refused(*swapped).find("shard 0 renamed or reordered: s0 -> s9") == 0);
}

TEST_CASE("SHOW STATS averages run over the last stats period once there is one", "[admin]") {
  auto cfg = config::load_string(kMap, "t.yaml");
  auto snap = two_workers();  // 20 requests on s1 in total, over 100 s
  auto avg_queries = [&] {
    const auto reply = admin::answer("SHOW STATS_AVERAGES", snap, *cfg, false);
    std::string value;
    for (const auto m : protocol::frames(reply))
      if (m.frame.type == protocol::msg::kDataRow)
        value = std::string(*protocol::DataRow::parse(m.frame.body)->values[2]);
    return value;
  };
  CHECK(avg_queries() == "0");  // 20 over 100 s, rounded down
  const auto end = Clock::now();
  runtime::PeriodMark a{end - std::chrono::seconds(10), {}}, b{end, {}};
  a.shards[1].queries = 5;
  b.shards[1].queries = 105;
  snap.period.emplace(a, b);
  CHECK(avg_queries() == "10");  // 100 in the 10 s period
}
