// Replicas per shard, against real streaming replicas (pg_basebackup -R): every host's
// health check (role, lag in bytes and time, bans) as the console's SHOW HOSTS / SHOW
// REPLICAS report it.
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "failover_support.hpp"
#include "harness.hpp"
#include "replicas_support.hpp"

using namespace harness;

TEST_CASE("hosts: the primary and its replica are checked and shown with their roles",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  Proxy proxy(with_replica(replica, ""));
  // (Up once its own check answered; its lag once its primary's has too.)
  REQUIRE(wait_until(
      [&] { return replica_state(proxy) == "up" && replicas(proxy).at(0)["lag_bytes"] != "NULL"; },
      std::chrono::seconds(10)));
  auto row = replicas(proxy).at(0);
  CHECK(row["shard"] == "s0");
  CHECK(row["port"] == std::to_string(replica));
  CHECK(row["role"] == "replica");
  CHECK(row["lag_bytes"] != "NULL");
  CHECK(row["failures"] == "0");
  // SHOW HOSTS: every shard's primary (checked too), then the replica.
  auto c = connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
  REQUIRE(wait_until(
      [&] {
        auto rows = query(c.get(), "SHOW HOSTS");
        int primaries = 0;
        for (const auto& r : rows)
          primaries += r[3] == "primary" && r[4] == "primary" && r[5] == "up";
        return rows.size() == 4 && primaries == 3;
      },
      std::chrono::seconds(10)));
}

TEST_CASE(
    "hosts: a replica behind its primary past max_replica_lag is lagging until it "
    "catches up",
    "[replicas]") {
  auto& cluster = Cluster::get();
  // Commits replay 1.5 s late on this replica: right after one it is bytes behind.
  const int replica = cluster.replica(0, 1500);
  Proxy proxy(with_replica(replica, "max_replica_lag: { bytes: 1 }\n"));
  auto app = connect(proxy.conninfo());
  query(app.get(), "CREATE TABLE IF NOT EXISTS replica_lag_probe (id bigint)");
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(15)));
  query(app.get(), "/* pgshard: shard=s0 */ INSERT INTO replica_lag_probe VALUES (1)");
  CHECK(wait_until([&] { return replica_state(proxy) == "lagging"; }, std::chrono::seconds(3)));
  CHECK(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  query(app.get(), "DROP TABLE replica_lag_probe");
}

TEST_CASE("hosts: a replica that stops answering is down and banned, and up once back",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(1);
  // With a time limit: a restarted replica of an idle primary is not behind (it was
  // `lagging` until the primary's next commit).
  ProxyOptions o = with_replica(replica, "max_replica_lag: { time: 2s }\n");
  o.shard_extra = {
      "", "replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(replica) + "/app\"]"};
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  // A commit the replica replays again when it restarts (no restart point on an immediate
  // stop): its time is the replica's newest replayed commit.
  {
    auto direct = connect(cluster.direct(1));
    query(direct.get(), "DROP TABLE IF EXISTS hosts_mark");
    query(direct.get(), "CREATE TABLE hosts_mark (id int)");
  }
  REQUIRE(wait_until([&] { return replicas(proxy).at(0)["lag_bytes"] == "0"; },
                     std::chrono::seconds(10)));
  cluster.kill_port(replica);
  CHECK(wait_until([&] { return replica_state(proxy) == "down"; }, std::chrono::seconds(5)));
  auto row = replicas(proxy).at(0);
  CHECK(row["shard"] == "s1");
  CHECK(row["banned_until"] != "");
  CHECK(row["last_error"] != "");
  CHECK(std::stoi(row["failures"]) >= 1);
  cluster.restart_port(replica);
  CHECK(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(15)));
  CHECK(replicas(proxy).at(0)["last_error"] == "");
  // ... and stays up while its primary writes nothing.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  CHECK(replica_state(proxy) == "up");
}

TEST_CASE("reads: plain reads go to the replica, anything that may write or lock to the primary",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const int primary = cluster.port(0);
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), now()") == replica);
  // The extended protocol (a Bind parameter) reads there too.
  {
    const char* values[] = {"7"};
    PGresult* r = PQexecParams(c.get(), "SELECT inet_server_port(), $1::int", 1, nullptr, values,
                               nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    CHECK(std::stoi(PQgetvalue(r, 0, 0)) == replica);
    PQclear(r);
  }
  // Volatile functions, advisory locks, set_config: the primary.
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), random()") == primary);
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), pg_advisory_xact_lock(7)") == primary);
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), txid_current()") == primary);
  // Inside a transaction block every statement stays on the primary.
  query(c.get(), "BEGIN");
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == primary);
  query(c.get(), "COMMIT");
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  // Session pooling keeps the client's server: the primary.
  auto keeper = connect(proxy.conninfo("", "keeper"));
  CHECK(ran_on(keeper.get(), "SELECT inet_server_port()") == primary);
  // The replica's row counts the reads it was sent.
  CHECK(std::stoi(replicas(proxy).at(0)["reads"]) >= 4);
}

TEST_CASE("reads: read-your-writes on a replica 400 ms behind; eventual reads go back in time",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0, 400);
  one_row_table(cluster, "ryw_probe");
  CHECK(stale_reads(replica, "ryw_probe", "session", "") == 0);
  CHECK(stale_reads(replica, "ryw_probe", "eventual", "") > 0);  // (so the session case could fail)
}

TEST_CASE("reads: SHOW pgshard.read_token prepared (asyncpg's fetchval) answers as a Query",
          "[replicas]") {
  // Attacker: the named statement (Parse, Describe, then Bind, Execute) went to a shard,
  // which answered 42704 (unrecognized configuration parameter).
  Proxy proxy(reading_replica(Cluster::get().replica(0), "session"));
  auto c = connect(proxy.conninfo());
  // (A statement that may write: txid_current assigns a transaction id.)
  CHECK(scalar(c.get(), "/* pgshard: shard=s0 */ SELECT txid_current() > 0") == "t");
  const std::string token = scalar(c.get(), "SHOW pgshard.read_token");
  CHECK(token.rfind("s0:", 0) == 0);
  PGresult* r = PQprepare(c.get(), "token", "SHOW pgshard.read_token", 0, nullptr);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  r = PQdescribePrepared(c.get(), "token");
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(PQnfields(r) == 1);
  CHECK(std::string(PQfname(r, 0)) == "pgshard.read_token");
  PQclear(r);
  for (int i = 0; i < 2; ++i) {
    r = PQexecPrepared(c.get(), "token", 0, nullptr, nullptr, nullptr, 0);
    INFO(PQresultErrorMessage(r));
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    CHECK(std::string(PQgetvalue(r, 0, 0)) == token);
    PQclear(r);
  }
  // The unnamed statement too, and the other pgshard settings.
  query(c.get(), "SET pgshard.sharding_key = '5'");
  r = PQexecParams(c.get(), "SHOW pgshard.sharding_key", 0, nullptr, nullptr, nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(std::string(PQgetvalue(r, 0, 0)) == "5");
  PQclear(r);
}

TEST_CASE("reads: a read token carries a write to another connection", "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0, 400);
  one_row_table(cluster, "token_probe");
  Proxy proxy(reading_replica(replica, "session"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  const std::string read = "/* pgshard: shard=s0 */ SELECT v FROM token_probe WHERE id = 1";
  REQUIRE(wait_until(
      [&] {
        auto c = connect(proxy.conninfo());
        return error_code(c.get(), read) == "";
      },
      std::chrono::seconds(10)));
  auto writer = connect(proxy.conninfo());
  CHECK(scalar(writer.get(), "SHOW pgshard.read_token") == "");  // nothing written yet
  int untokened_stale = 0;
  std::string previous;
  for (int i = 1; i <= 5; ++i) {
    query(writer.get(), "/* pgshard: shard=s0 */ UPDATE token_probe SET v = " + std::to_string(i) +
                            " WHERE id = 1");
    // (A read of its own first: the token shown after it still covers the write.)
    if (i % 2 == 0) CHECK(scalar(writer.get(), read) == std::to_string(i));
    const std::string token = scalar(writer.get(), "SHOW pgshard.read_token");
    CHECK(token.rfind("s0:", 0) == 0);
    CHECK(token != previous);  // every write moves the primary's WAL position on
    previous = token;
    auto reader = connect(proxy.conninfo());
    query(reader.get(), "SET pgshard.read_token = '" + token + "'");
    CHECK(scalar(reader.get(), read) == std::to_string(i));
    auto plain = connect(proxy.conninfo());  // without the token: the replica, behind
    untokened_stale += scalar(plain.get(), read) != std::to_string(i);
  }
  CHECK(untokened_stale > 0);
  auto c = connect(proxy.conninfo());
  CHECK(error_code(c.get(), "SET pgshard.read_token = 'nonsense'") == "22023");
}

TEST_CASE("reads: a multi-shard read uses each shard's replica only without atomic visibility",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int r0 = cluster.replica(0), r1 = cluster.replica(1);
  fan_table(cluster, "fan_probe");
  auto reads_of_replicas = [&](const std::string& visibility) {
    Proxy proxy(two_replicas(r0, r1, "fan_probe", visibility));
    REQUIRE(wait_until([&] { return both_replicas_up(proxy); }, std::chrono::seconds(15)));
    auto c = connect(proxy.conninfo());
    // Every shard's rows, whichever host answers (the replicas have replayed the inserts).
    const std::string count = "SELECT count(*) FROM fan_probe";
    REQUIRE(wait_until(  // (until the replicas have replayed the table)
        [&] { return error_code(c.get(), count).empty() && scalar(c.get(), count) == "9"; },
        std::chrono::seconds(10)));
    int reads = 0;
    for (auto& row : replicas(proxy)) reads += std::stoi(row["reads"]) > 0;
    return reads;  // replicas that served
  };
  CHECK(reads_of_replicas("atomic_visibility: false\n") == 2);
  CHECK(reads_of_replicas("") == 0);
}

TEST_CASE("reads: a replica gone before its check noticed sends its reads elsewhere",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const int primary = cluster.port(0);
  ProxyOptions o = reading_replica(replica, "eventual");
  // Checks far apart: the reads find the replica gone before a check does.
  const auto at = o.extra_top.find("interval: 100ms");
  REQUIRE(at != std::string::npos);
  o.extra_top.replace(at, 15, "interval: 60s");
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  cluster.kill_port(replica);
  // Nothing was sent to the replica: the primary answers (before: 08001), and the replica
  // is kept from reads until a check finds it back.
  for (int i = 0; i < 3; ++i) CHECK(ran_on(c.get(), "SELECT inet_server_port()") == primary);
  CHECK(replica_state(proxy) != "up");
  cluster.restart_port(replica);
}

TEST_CASE("reads: a replica lost mid-read fails the read naming the replica", "[replicas]") {
  // Before: the error named only the shard ("shard s0: terminating connection ..."), as if
  // its primary had gone (attacker F7).
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  REQUIRE(PQsendQuery(c.get(), "SELECT count(*) FROM generate_series(1, 400000000)") == 1);
  auto direct = connect("host=127.0.0.1 port=" + std::to_string(replica) +
                        " user=app password=secret dbname=app");
  REQUIRE(wait_until(
      [&] {
        return query(direct.get(),
                     "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                     "'SELECT count(*) FROM generate_series%' AND pid <> pg_backend_pid()")
                   .at(0)
                   .at(0) == "1";
      },
      std::chrono::seconds(10)));
  query(direct.get(),
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE "
        "'SELECT count(*) FROM generate_series%' AND pid <> pg_backend_pid()");
  std::string error;
  while (PGresult* r = PQgetResult(c.get())) {
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) error = PQresultErrorMessage(r);
    PQclear(r);
  }
  INFO(error);
  CHECK(error.find("shard s0 replica 127.0.0.1:" + std::to_string(replica) + ": terminating") !=
        std::string::npos);
  // The session goes on (on another server).
  CHECK(query(c.get(), "SELECT 1").at(0).at(0) == "1");
}

TEST_CASE("metrics: each host's role, lag, reads, bans, fallbacks and latency; /api/status",
          "[replicas]") {
  // Before: per-host state was only on the console (SHOW HOSTS); /metrics and the dashboard's
  // JSON had none of it.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const int http = free_port();
  ProxyOptions o = reading_replica(replica, "eventual");
  const std::string console = "admin: { users: [admin] }\n";
  o.extra_top.replace(
      o.extra_top.find(console), console.size(),
      "admin: { users: [admin], http: \"127.0.0.1:" + std::to_string(http) + "\" }\n");
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  const std::string r =
      "{shard=\"s0\",host=\"127.0.0.1:" + std::to_string(replica) + "\",role=\"replica\"}";
  const std::string p =
      "{shard=\"s0\",host=\"127.0.0.1:" + std::to_string(cluster.port(0)) + "\",role=\"primary\"}";
  auto metrics = [&] { return http_get(http, "/metrics").body; };
  REQUIRE(wait_until([&] { return metric(metrics(), "pgshard_host_lag_bytes" + r) >= 0; },
                     std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  for (int i = 0; i < 5; ++i) CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  auto m = metrics();
  INFO(m);
  CHECK(metric(m, "pgshard_host_up" + r) == 1);
  CHECK(metric(m, "pgshard_host_up" + p) == 1);
  CHECK(metric(m, "pgshard_host_in_recovery" + r) == 1);
  CHECK(metric(m, "pgshard_host_in_recovery" + p) == 0);
  CHECK(metric(m, "pgshard_host_lag_seconds" + r) >= 0);
  CHECK(metric(m, "pgshard_host_reads_total" + r) >= 5);
  CHECK(metric(m, "pgshard_host_query_duration_seconds_count" + r) >= 5);
  CHECK(metric(m, "pgshard_host_bans_total" + r) == 0);
  CHECK(metric(m, "pgshard_host_primary_fallbacks_total" + p) == 0);
  CHECK(metric(m, "pgshard_host_up{shard=\"s1\",host=\"127.0.0.1:" +
                      std::to_string(cluster.port(1)) + "\",role=\"primary\"}") == 1);
  const auto status = http_get(http, "/api/status").body;
  CHECK(status.find("\"hosts\":[{\"host\":\"127.0.0.1:" + std::to_string(cluster.port(0)) +
                    "\",\"listed_as\":\"primary\",\"role\":\"primary\",\"state\":\"up\"") !=
        std::string::npos);
  CHECK(status.find("{\"host\":\"127.0.0.1:" + std::to_string(replica) +
                    "\",\"listed_as\":\"replica\",\"role\":\"replica\",\"state\":\"up\"") !=
        std::string::npos);
  // The replica stops: down and banned (one ban), reads fall back to the primary (counted).
  cluster.kill_port(replica);
  CHECK(wait_until([&] { return metric(metrics(), "pgshard_host_up" + r) == 0; },
                   std::chrono::seconds(5)));
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == cluster.port(0));
  m = metrics();
  CHECK(metric(m, "pgshard_host_bans_total" + r) >= 1);  // (one more per ban_time down)
  CHECK(metric(m, "pgshard_host_primary_fallbacks_total" + p) >= 1);
  CHECK(http_get(http, "/api/status").body.find("\"state\":\"down\"") != std::string::npos);
  cluster.restart_port(replica);
  CHECK(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(15)));
}

namespace {

// A PostgreSQL cluster of its own (initdb'd apart from the shards: another system
// identifier) with a streaming replica, stopped and removed when destroyed.
class ForeignCluster {
 public:
  ForeignCluster() : dir_(temp_dir("foreign")), primary_(free_port()) {
    std::string out;
    REQUIRE(run(script_ + " start " + dir_ + " " + std::to_string(primary_), &out) == 0);
    replica_ = free_port();
    REQUIRE(run(script_ + " replica " + dir_ + " " + std::to_string(primary_) + " " +
                    std::to_string(replica_),
                &out) == 0);
  }
  ~ForeignCluster() {
    run(script_ + " stop " + dir_);
    run("rm -rf " + dir_);
  }
  int replica() const { return replica_; }
  int primary() const { return primary_; }
  // A copy of the primary started as a primary of its own: two hosts out of recovery on
  // one timeline (a split brain).
  int copy() {
    const int port = free_port();
    std::string out;
    REQUIRE(
        run(script_ + " copy " + dir_ + " " + std::to_string(primary_) + " " + std::to_string(port),
            &out) == 0);
    return port;
  }
  // A copy of the primary in recovery with nothing to stream from (after `setup` ran there).
  int orphan(const std::string& setup) {
    auto c = connect("host=127.0.0.1 port=" + std::to_string(primary_) +
                     " user=app password=secret dbname=app");
    query(c.get(), setup);
    const int port = free_port();
    std::string out;
    REQUIRE(run(script_ + " orphan " + dir_ + " " + std::to_string(primary_) + " " +
                    std::to_string(port),
                &out) == 0);
    return port;
  }
  // A replica of the primary (after `setup` ran there) promoted while the primary runs on:
  // two hosts out of recovery, the promoted one on the next timeline.
  int promoted(const std::string& setup) {
    const int port = orphan(setup);  // (a copy in recovery: its timeline is the primary's)
    std::string out;
    REQUIRE(run(script_ + " promote " + dir_ + " " + std::to_string(port), &out) == 0);
    return port;
  }

 private:
  const std::string script_ = std::string(PGSHARD_SOURCE_DIR) + "/tests/harness/pgcluster.sh";
  std::string dir_;
  int primary_ = 0;
  int replica_ = 0;
};

}  // namespace

TEST_CASE("pgshard check --live reports replicas that are not replicas of their primary",
          "[replicas]") {
  // Before: replicas were not checked at all; a map listing another cluster's server (or a
  // primary) as a shard's replica passed.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const auto dir = temp_dir("check-replicas");
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE IF EXISTS replica_check");
    query(direct.get(), "CREATE TABLE replica_check (id bigint)");
  }
  auto url = [](int port) {
    return "\"postgres://app:secret@127.0.0.1:" + std::to_string(port) + "/app\"";
  };
  auto check = [&](const std::string& replicas, std::string* out) {
    std::string yaml = "users: [{ name: app, password: secret }]\nshards:\n";
    for (int i = 0; i < cluster.size(); ++i)
      yaml += "  - { name: s" + std::to_string(i) + ", primary: " + url(cluster.port(i)) +
              (i == 0 ? ", replicas: [" + replicas + "]" : "") + " }\n";
    yaml += "sharded_tables: [{ table: replica_check, column: id }]\n";
    std::ofstream(dir + "/map.yaml") << yaml;
    return run(pgshard_binary() + " check --live " + dir + "/map.yaml 2>&1", out);
  };
  std::string out;
  CHECK(check(url(replica), &out) == 0);
  INFO(out);
  CHECK(out.find("every replica (1) replicates its shard's primary") != std::string::npos);
  // Another shard's primary listed as a replica: not in recovery (the harness's shards are
  // copies of one initdb, so it has the same system identifier).
  CHECK(check(url(replica) + ", " + url(cluster.port(1)), &out) != 0);
  INFO(out);
  CHECK(out.find("ERROR shard s0: more than one host is out of recovery, none on a higher "
                 "timeline: shard s0 "
                 "(postgres://app@127.0.0.1:" +
                 std::to_string(cluster.port(0)) +
                 "/app) and shard s0 replica (postgres://"
                 "app@127.0.0.1:" +
                 std::to_string(cluster.port(1)) + "/app)") != std::string::npos);
  CHECK(out.find("1 problem found") != std::string::npos);
  // After a failover the map may list the primary as a replica and a replica as the
  // primary: the shard is checked on the host out of recovery (before: "not in recovery").
  {
    std::string yaml = "users: [{ name: app, password: secret }]\nshards:\n";
    for (int i = 0; i < cluster.size(); ++i)
      yaml += "  - { name: s" + std::to_string(i) +
              ", primary: " + url(i == 0 ? replica : cluster.port(i)) +
              (i == 0 ? ", replicas: [" + url(cluster.port(0)) + "]" : "") + " }\n";
    yaml += "sharded_tables: [{ table: replica_check, column: id }]\n";
    std::ofstream(dir + "/map.yaml") << yaml;
    CHECK(run(pgshard_binary() + " check --live " + dir + "/map.yaml 2>&1", &out) == 0);
    INFO(out);
    CHECK(out.find("every replica (1) replicates its shard's primary") != std::string::npos);
  }
  // A replica of another cluster: in recovery, but with another system identifier.
  ForeignCluster foreign;
  CHECK(check(url(foreign.replica()), &out) != 0);
  INFO(out);
  CHECK(out.find("ERROR shard s0 replica (postgres://app@127.0.0.1:" +
                 std::to_string(foreign.replica()) +
                 "/app): not a replica of the shard's primary: its system identifier is ") !=
        std::string::npos);
  // A replica of the shard's cluster that streams from nothing (left behind by a failover):
  // before, it passed.
  {
    ForeignCluster lone;
    const int orphan = lone.orphan("CREATE TABLE replica_check (id bigint)");
    std::string yaml = "users: [{ name: app, password: secret }]\nshards:\n";
    yaml +=
        "  - { name: s0, primary: " + url(lone.primary()) + ", replicas: [" + url(orphan) + "] }\n";
    yaml += "sharded_tables: [{ table: replica_check, column: id }]\n";
    std::ofstream(dir + "/map.yaml") << yaml;
    CHECK(run(pgshard_binary() + " check --live " + dir + "/map.yaml 2>&1", &out) != 0);
    INFO(out);
    CHECK(out.find("ERROR shard s0 replica (postgres://app@127.0.0.1:" + std::to_string(orphan) +
                   "/app): in recovery but not streaming from any primary") != std::string::npos);
  }
  // An old primary still up beside the one promoted on the next timeline: pgshard writes to
  // the newer (as choose_writer), and check says the old one is to be made a standby
  // (before: "more than one host is out of recovery ... pgshard refuses the shard's writes").
  {
    ForeignCluster split;
    const int promoted = split.promoted("CREATE TABLE replica_check (id bigint)");
    std::string yaml = "users: [{ name: app, password: secret }]\nshards:\n";
    yaml += "  - { name: s0, primary: " + url(split.primary()) + ", replicas: [" + url(promoted) +
            "] }\n";
    yaml += "sharded_tables: [{ table: replica_check, column: id }]\n";
    std::ofstream(dir + "/map.yaml") << yaml;
    CHECK(run(pgshard_binary() + " check --live " + dir + "/map.yaml 2>&1", &out) != 0);
    INFO(out);
    CHECK(out.find("ERROR shard s0 (postgres://app@127.0.0.1:" + std::to_string(split.primary()) +
                   "/app): out of recovery on timeline 1, older than shard s0 replica "
                   "(postgres://app@127.0.0.1:" +
                   std::to_string(promoted) + "/app)'s 2") != std::string::npos);
    CHECK(out.find("refuses the shard's writes") == std::string::npos);
  }
  // One nobody answers on.
  const int closed = free_port();
  CHECK(check(url(closed), &out) != 0);
  CHECK(out.find("ERROR shard s0 replica (postgres://app@127.0.0.1:" + std::to_string(closed) +
                 "/app): cannot connect: ") != std::string::npos);
  run("rm -rf " + dir);
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE replica_check");
  }
}

TEST_CASE("reads: a write refused for two primaries gives the session no read token",
          "[replicas]") {
  // Attacker: while two hosts of s0 were out of recovery on one timeline, a write refused
  // with 08006 still gave the session a token for s0 (the WAL position of one of the two).
  ForeignCluster split;
  const int copy = split.copy();
  ProxyOptions o =
      failover_map("[" + host_quoted_url(split.primary()) + ", " + host_quoted_url(copy) + "]");
  o.extra_top += "read_from: replicas\n";
  Proxy proxy(o);
  REQUIRE(wait_until(
      [&] {
        return host_column(proxy, split.primary(), "writes") == "refused" &&
               host_column(proxy, copy, "writes") == "refused";
      },
      std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  const std::string write = "SELECT txid_current() > 0";
  CHECK(error_code(c.get(), "/* pgshard: shard=s0 */ " + write) == "08006");
  CHECK(scalar(c.get(), "SHOW pgshard.read_token") == "");
  // A write on another shard gives a token for that shard only.
  CHECK(scalar(c.get(), "/* pgshard: shard=s1 */ " + write) == "t");
  const std::string token = scalar(c.get(), "SHOW pgshard.read_token");
  INFO(token);
  CHECK(token.rfind("s1:", 0) == 0);
  CHECK(token.find("s0:") == std::string::npos);
}

TEST_CASE(
    "hosts: a replica whose checks hang is banned after health.timeout; reads go to the primary",
    "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const int primary = cluster.port(0);
  Proxy proxy(reading_replica(replica, "eventual"));  // health.timeout 1s
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  {
    // Accepts connections, never answers: the check times out.
    FrozenShard frozen(FrozenShard::AtPort{replica});
    CHECK(wait_until([&] { return replica_state(proxy) == "down"; }, std::chrono::seconds(5)));
    CHECK(replicas(proxy).at(0)["last_error"] != "");
    for (int i = 0; i < 3; ++i) CHECK(ran_on(c.get(), "SELECT inet_server_port()") == primary);
  }
  CHECK(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(15)));
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
}

TEST_CASE("reads: RELOAD with replica pools open keeps them sized by their shard", "[replicas]") {
  // A replica's pool is a target past the shards: RELOAD sized each pool by
  // shards[target], past the end of the map for a replica (heap-buffer-overflow under ASan).
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  CHECK(ran_on(c.get(), "SELECT inet_server_port()") == replica);
  auto adm = connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
  query(adm.get(), "RELOAD");
  std::vector<Conn> clients;
  for (int i = 0; i < 4; ++i) clients.push_back(connect(proxy.conninfo()));
  for (auto& k : clients) CHECK(ran_on(k.get(), "SELECT inet_server_port()") == replica);
  CHECK(proxy.running());
}

namespace {

// Every shard with a replica behind by its own delay, reading from replicas, checked every
// 100 ms; table ryw_many (id, v) sharded by id.
ProxyOptions every_shard_replicated(const std::vector<int>& replicas,
                                    const std::string& consistency) {
  ProxyOptions o = reading_replica(replicas[0], consistency);
  o.shard_extra.clear();
  for (const int port : replicas)
    o.shard_extra.push_back("replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(port) +
                            "/app\"]");
  o.sharded_tables = "  - { table: ryw_many, column: id, type: bigint }\n";
  return o;
}

bool all_replicas_up(const Proxy& p, std::size_t n) {
  const auto rows = replicas(p);
  if (rows.size() != n) return false;
  for (const auto& r : rows)
    if (r.at("state") != "up") return false;
  return true;
}

// One statement on `c` without Catch2 (called from several threads): its one value, or
// "ERROR <sqlstate>".
std::string one_value(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  std::string out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
    out = PQgetvalue(r, 0, 0);
  else if (PQresultStatus(r) == PGRES_FATAL_ERROR)
    out = std::string("ERROR ") + PQresultErrorField(r, PG_DIAG_SQLSTATE);
  PQclear(r);
  return out;
}

// Each shard's replica holds as many ryw_many rows as its primary (within 10 s).
bool replicas_caught_up(Cluster& cluster, const std::vector<int>& replicas) {
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    auto primary = connect(cluster.direct(static_cast<int>(i)));
    const auto want = one_value(primary.get(), "SELECT count(*) FROM ryw_many");
    const bool ok = wait_until(
        [&] {
          auto r = connect("host=127.0.0.1 port=" + std::to_string(replicas[i]) +
                           " user=app password=secret dbname=app");
          return one_value(r.get(), "SELECT count(*) FROM ryw_many") == want;
        },
        std::chrono::seconds(10));
    if (!ok) return false;
  }
  return true;
}

// Every shard's replica, 400, 150 and 300 ms behind, and table ryw_many (id, v) made
// afresh on every shard.
std::vector<int> replicated_ryw_many(Cluster& cluster) {
  const std::vector<int> reps = {cluster.replica(0, 400), cluster.replica(1, 150),
                                 cluster.replica(2, 300)};
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE IF EXISTS ryw_many");
    query(direct.get(), "CREATE TABLE ryw_many (id bigint PRIMARY KEY, v int)");
  }
  return reps;
}

}  // namespace

TEST_CASE("reads: many clients writing then reading random keys on three replicated shards",
          "[replicas]") {
  // Issue 34's test: replicas 150-400 ms behind on every shard, 8 clients each writing a
  // random key of its own and reading it back at once: never stale under `session`; the
  // same load under `eventual` reads the past (so the first count could fail).
  auto& cluster = Cluster::get();
  const auto reps = replicated_ryw_many(cluster);
  constexpr int kKeys = 64, kClients = 8, kPairs = 12;
  auto stale_reads = [&](const std::string& consistency, std::set<std::string>* errors) {
    Proxy proxy(every_shard_replicated(reps, consistency));
    REQUIRE(
        wait_until([&] { return all_replicas_up(proxy, reps.size()); }, std::chrono::seconds(15)));
    {
      auto c = connect(proxy.conninfo());
      query(c.get(), "DELETE FROM ryw_many");
      for (int k = 1; k <= kKeys; ++k)
        query(c.get(), "INSERT INTO ryw_many VALUES (" + std::to_string(k) + ", 0)");
    }
    REQUIRE(replicas_caught_up(cluster, reps));
    std::atomic<int> stale{0};
    std::mutex mu;
    std::vector<std::thread> clients;
    for (int t = 0; t < kClients; ++t)
      clients.emplace_back([&, t] {
        auto c = connect(proxy.conninfo());
        std::mt19937 rng(static_cast<unsigned>(t * 7919 + 1));
        for (int i = 1; i <= kPairs; ++i) {
          // Keys k with k % kClients == t: no two clients write one row.
          const int key = t + 1 + kClients * static_cast<int>(rng() % (kKeys / kClients));
          const std::string v = std::to_string(t * 1000 + i);
          const auto w = one_value(c.get(), "UPDATE ryw_many SET v = " + v + " WHERE id = " +
                                                std::to_string(key) + " RETURNING v");
          const auto r =
              one_value(c.get(), "SELECT v FROM ryw_many WHERE id = " + std::to_string(key));
          if (w != v || r.rfind("ERROR", 0) == 0) {
            std::lock_guard lock(mu);
            errors->insert(w + " / " + r);
          }
          stale += r != v;
        }
      });
    for (auto& th : clients) th.join();
    return stale.load();
  };
  std::set<std::string> errors;
  CHECK(stale_reads("session", &errors) == 0);
  CHECK(errors.empty());
  CHECK(stale_reads("eventual", &errors) > 0);
  CHECK(errors.empty());
}

TEST_CASE("reads: a read token carries writes on three shards to another pgshard instance",
          "[replicas]") {
  // A web request writes through one pgshard; a worker reads through another with the
  // request's token: every shard's write is seen, though each replica is behind.
  auto& cluster = Cluster::get();
  const auto reps = replicated_ryw_many(cluster);
  Proxy a(every_shard_replicated(reps, "session")), b(every_shard_replicated(reps, "session"));
  REQUIRE(
      wait_until([&] { return all_replicas_up(a, reps.size()) && all_replicas_up(b, reps.size()); },
                 std::chrono::seconds(15)));
  auto writer = connect(a.conninfo());
  constexpr int kKeys = 12;
  for (int k = 1; k <= kKeys; ++k)
    query(writer.get(), "INSERT INTO ryw_many VALUES (" + std::to_string(k) + ", 0)");
  REQUIRE(replicas_caught_up(cluster, reps));
  int untokened_stale = 0;
  for (int round = 1; round <= 3; ++round) {
    // One write per key (every shard), then the token of them all.
    query(writer.get(), "UPDATE ryw_many SET v = " + std::to_string(round));
    const std::string token = scalar(writer.get(), "SHOW pgshard.read_token");
    INFO(token);
    CHECK(token.find("s0:") != std::string::npos);
    CHECK(token.find("s1:") != std::string::npos);
    CHECK(token.find("s2:") != std::string::npos);
    auto reader = connect(b.conninfo());
    auto plain = connect(b.conninfo());
    query(reader.get(), "SET pgshard.read_token = '" + token + "'");
    for (int k = 1; k <= kKeys; ++k) {
      const std::string read = "SELECT v FROM ryw_many WHERE id = " + std::to_string(k);
      CHECK(scalar(reader.get(), read) == std::to_string(round));
      untokened_stale += scalar(plain.get(), read) != std::to_string(round);
    }
  }
  CHECK(untokened_stale > 0);  // (without the token the replicas are behind)
}

TEST_CASE(
    "reads: a search_path naming pg_catalog after another schema keeps plain-named calls "
    "on the primary",
    "[replicas]") {
  // Attacker (MEDIUM): public.abs shadowing pg_catalog.abs through search_path ran on the
  // replica as a built-in (a lock taken in such a function excluded nobody on the primary).
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const int primary = cluster.port(0);
  auto direct = connect(cluster.direct(0));
  query(direct.get(),
        "CREATE OR REPLACE FUNCTION public.abs(integer) RETURNS integer LANGUAGE sql AS "
        "'SELECT 7'");
  auto standby = connect("host=127.0.0.1 port=" + std::to_string(replica) +
                         " user=app password=secret dbname=app");
  REQUIRE(wait_until(
      [&] {
        return scalar(standby.get(),
                      "SELECT count(*) FROM pg_proc WHERE proname = 'abs' AND pronamespace = "
                      "'public'::regnamespace") == "1";
      },
      std::chrono::seconds(10)));
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), abs(-1)") == replica);
  query(c.get(), "SET search_path = public, pg_catalog");
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), abs(-1)") == primary);
  CHECK(scalar(c.get(), "SELECT abs(-1)") == "7");
  // Qualified calls, and a path with pg_catalog first, read the replica again.
  CHECK(ran_on(c.get(), "SELECT pg_catalog.inet_server_port(), pg_catalog.abs(-1)") == replica);
  query(c.get(), "SET search_path = pg_catalog, public");
  CHECK(ran_on(c.get(), "SELECT inet_server_port(), abs(-1)") == replica);
  query(direct.get(), "DROP FUNCTION public.abs(integer)");
}
