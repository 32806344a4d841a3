// Failover that follows the primary, against real servers: shard s0 is a primary with hosts of
// its own started for the case (streaming replicas made with pg_basebackup -R, or a copy
// started as a second primary), s1 and s2 the shared shards. Its primary is stopped at once
// and a replica promoted by hand (pg_ctl promote) under a cross-shard transfer load with
// synchronous replication; two primaries of one shard refuse its writes.
#include <catch2/catch.hpp>
#include <iostream>
#include <thread>

#include "failover_support.hpp"
#include "harness.hpp"

using namespace harness;

namespace {

const std::string kPgCluster = std::string(PGSHARD_SOURCE_DIR) + "/tests/harness/pgcluster.sh";

// Shard s0's servers for one case: a primary and the hosts made from it, stopped and removed
// when the case ends.
class OwnShard {
 public:
  OwnShard() : dir_(temp_dir("failover")), primary_(free_port()) {
    std::string out;
    if (run(kPgCluster + " start " + dir_ + " " + std::to_string(primary_), &out) != 0)
      FAIL("cannot start shard s0's primary:\n" << out);
  }
  ~OwnShard() {
    run(kPgCluster + " stop " + dir_);
    run("rm -rf " + dir_);
  }
  OwnShard(const OwnShard&) = delete;
  OwnShard& operator=(const OwnShard&) = delete;
  int primary() const { return primary_; }
  // `how`: "replica" (a streaming replica) or "copy" (a base backup started as a primary).
  int add(const std::string& how) {
    const int port = free_port();
    std::string out;
    if (run(kPgCluster + " " + how + " " + dir_ + " " + std::to_string(primary_) + " " +
                std::to_string(port),
            &out) != 0)
      FAIL("cannot make a " << how << " of s0:\n" << out);
    return port;
  }
  void kill(int port) { run(kPgCluster + " kill " + dir_ + " " + std::to_string(port)); }
  void promote(int port) {
    std::string out;
    REQUIRE(run(kPgCluster + " promote " + dir_ + " " + std::to_string(port), &out) == 0);
  }
  std::string log(int port) const { return read_file(dir_ + "/" + std::to_string(port) + ".log"); }

 private:
  std::string dir_;
  int primary_;
};

std::string sql_literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

}  // namespace

TEST_CASE(
    "failover: writes follow a replica promoted by hand; no acknowledged commit is lost "
    "(synchronous replication), nothing stays prepared",
    "[failover]") {
  auto& cluster = Cluster::get();
  OwnShard own;
  const int r1 = own.add("replica"), r2 = own.add("replica");
  // Synchronous replication to r1 (promoted later): a commit the primary acknowledged is on it.
  {
    auto standby = connect(host_direct(r1));
    const std::string upstream = scalar(standby.get(), "SHOW primary_conninfo");
    query(standby.get(),
          "ALTER SYSTEM SET primary_conninfo = " + sql_literal(upstream + " application_name=r1"));
    query(standby.get(), "SELECT pg_reload_conf()");
    auto p = connect(host_direct(own.primary()));
    query(p.get(), "ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (r1)'");
    query(p.get(), "ALTER SYSTEM SET synchronous_commit = on");
    query(p.get(), "SELECT pg_reload_conf()");
    REQUIRE(wait_until(
        [&] {
          return scalar(p.get(),
                        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'r1' "
                        "AND sync_state = 'sync'") == "1";
        },
        std::chrono::seconds(15)));
  }
  for (int i : {1, 2}) {
    auto c = connect(cluster.direct(i));
    query(c.get(), "DROP TABLE IF EXISTS fo_accounts, fo_done, fo_open");
  }
  // (primary + replicas here, `hosts:` in the split-brain case.)
  ProxyOptions o = failover_map(host_url(own.primary()), "replicas: [" + host_quoted_url(r1) +
                                                             ", " + host_quoted_url(r2) + "]");
  o.extra_top += "read_from: replicas\n";
  Proxy proxy(o);
  auto app = connect(proxy.conninfo());
  TransferLoad load;
  load.create(app.get());
  query(app.get(), "CREATE TABLE fo_open (id int)");  // (unsharded: on s0)
  REQUIRE(wait_until(
      [&] {
        return host_column(proxy, r1, "role") == "replica" &&
               host_column(proxy, r2, "role") == "replica" &&
               host_column(proxy, own.primary(), "role") == "primary";
      },
      std::chrono::seconds(10)));

  load.conninfo = proxy.conninfo("connect_timeout=5");
  load.start();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  // A transaction open on the old primary when it dies.
  auto open_txn = connect(proxy.conninfo());
  query(open_txn.get(), "BEGIN");
  query(open_txn.get(), "INSERT INTO fo_open VALUES (1)");
  const int before_kill = load.committed;
  own.kill(own.primary());
  const auto killed = std::chrono::steady_clock::now();
  own.promote(r1);
  const auto promoted = std::chrono::steady_clock::now();
  // Writes to s0 through pgshard work again on the promoted replica.
  const auto write_sql = "/* pgshard: shard=s0 */ INSERT INTO fo_open VALUES (2)";
  const bool writes_back = wait_until([&] { return try_statement(proxy.conninfo(), write_sql); },
                                      std::chrono::seconds(10));
  const auto back = std::chrono::steady_clock::now();
  CHECK(writes_back);
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::cout << "failover: promote took " << ms(promoted - killed)
            << " ms; writes through pgshard back " << ms(back - promoted)
            << " ms after the promotion\n";
  CHECK(back - promoted < std::chrono::seconds(5));
  // The transaction open on the old primary ends with an error, never a COMMIT.
  PGresult* r = PQexec(open_txn.get(), "COMMIT");
  const std::string commit_tag = PQcmdStatus(r);
  CHECK(PQresultStatus(r) != PGRES_COMMAND_OK);
  CHECK(commit_tag != "COMMIT");
  PQclear(r);
  // The load goes on against the new primary.
  const int at_failover = load.committed;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  load.finish();
  std::cout << "failover: " << load.committed << " transfers committed (" << before_kill
            << " before the kill, " << load.committed - at_failover << " in the 2 s after), "
            << load.failed << " failed\n";
  CHECK(load.committed > at_failover);

  // Nothing left prepared: recovery resolves what the old primary had prepared, on the new one.
  const std::vector<std::string> now_primaries = {host_direct(r1), cluster.direct(1),
                                                  cluster.direct(2)};
  CHECK(wait_nothing_prepared(now_primaries, std::chrono::seconds(45)));
  CHECK(load.total(now_primaries) == TransferLoad::start_total());
  // Every COMMIT the clients saw succeed is there.
  CHECK(load.missing(now_primaries) == 0);
  {
    auto c = connect(host_direct(r1));
    CHECK(scalar(c.get(), "SELECT count(*) FROM fo_open WHERE id = 1") == "0");
  }

  // The replica left in recovery (r2) still follows the dead primary, on the old timeline:
  // what it shows may never be the new primary's data, so it serves no reads (before: reads
  // went on there, stale without limit) and the new primary answers them.
  auto reader = connect(proxy.conninfo());
  CHECK(scalar(reader.get(), "/* pgshard: shard=s0 */ SELECT inet_server_port()") ==
        std::to_string(r1));
  CHECK(host_column(proxy, r2, "state") == "lagging");
  // SHOW HOSTS: r1 takes the writes on a new timeline, one failover; the log says so.
  CHECK(host_column(proxy, r1, "writes") == "yes");
  CHECK(host_column(proxy, r1, "role") == "primary");
  CHECK(std::stoi(host_column(proxy, r1, "timeline")) >= 2);
  CHECK(host_column(proxy, r1, "failovers") == "1");
  CHECK(host_column(proxy, own.primary(), "writes") == "no");
  CHECK_THAT(
      read_file(proxy.log_path()),
      Catch::Contains("shard s0: primary moved from 127.0.0.1:" + std::to_string(own.primary()) +
                      " to 127.0.0.1:" + std::to_string(r1)));
  query(app.get(), "DROP TABLE fo_accounts, fo_done, fo_open");
}

TEST_CASE("failover: two primaries of one shard refuse its writes (08006) until one is gone",
          "[failover]") {
  OwnShard own;
  // A base backup started without standby.signal: the same system and timeline, a primary.
  const int copy = own.add("copy");
  ProxyOptions o =
      failover_map("[" + host_quoted_url(own.primary()) + ", " + host_quoted_url(copy) + "]");
  const int http = free_port();
  const auto admin = o.extra_top.find("admin: { users: [admin] }");
  REQUIRE(admin != std::string::npos);
  o.extra_top.replace(
      admin, 25, "admin: { users: [admin], http: \"127.0.0.1:" + std::to_string(http) + "\" }");
  Proxy proxy(o);
  REQUIRE(wait_until(
      [&] {
        return host_column(proxy, own.primary(), "role") == "primary" &&
               host_column(proxy, copy, "role") == "primary";
      },
      std::chrono::seconds(10)));
  CHECK(host_column(proxy, own.primary(), "writes") == "refused");
  CHECK(host_column(proxy, copy, "writes") == "refused");
  CHECK(host_column(proxy, copy, "timeline") == host_column(proxy, own.primary(), "timeline"));
  auto app = connect(proxy.conninfo());
  const std::string write_sql =
      "/* pgshard: shard=s0 */ SELECT inet_server_port(), txid_current() > 0";
  std::string message;
  CHECK(error_code(app.get(), write_sql, &message) == "08006");
  CHECK_THAT(message, Catch::Contains("127.0.0.1:" + std::to_string(own.primary())) &&
                          Catch::Contains("127.0.0.1:" + std::to_string(copy)));
  // A shard that refuses its writes is not ready (before: /ready answered 200).
  const auto ready = http_get(http, "/ready");
  CHECK(ready.status == 503);
  CHECK_THAT(ready.body, Catch::Contains("more than one primary"));
  // One of them gone: the other takes the writes again, on the same connection.
  own.kill(copy);
  CHECK(wait_until(
      [&] {
        PGresult* r = PQexec(app.get(), write_sql.c_str());
        const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK &&
                        std::string(PQgetvalue(r, 0, 0)) == std::to_string(own.primary());
        PQclear(r);
        return ok;
      },
      std::chrono::seconds(10)));
  CHECK(host_column(proxy, own.primary(), "writes") == "yes");
  CHECK(host_column(proxy, own.primary(), "failovers") == "0");
  CHECK(
      wait_until([&] { return http_get(http, "/ready").status == 200; }, std::chrono::seconds(15)));
  CHECK_THAT(read_file(proxy.log_path()), Catch::Contains("has more than one primary"));
}

TEST_CASE("failover: a transaction open on the old primary when the writes move never commits",
          "[failover]") {
  // A replica promoted while its primary still runs takes the writes (a higher timeline).
  // Before, the transaction open on the old primary went on there and its COMMIT answered
  // COMMIT: an acknowledged commit on a host nobody reads any more.
  OwnShard own;
  const int r1 = own.add("replica");
  {
    auto d = connect(host_direct(own.primary()));
    query(d.get(), "CREATE TABLE fo_moved (id int)");
  }
  Proxy proxy(
      failover_map("[" + host_quoted_url(own.primary()) + ", " + host_quoted_url(r1) + "]"));
  REQUIRE(wait_until(
      [&] {
        return host_column(proxy, own.primary(), "writes") == "yes" &&
               host_column(proxy, r1, "role") == "replica";
      },
      std::chrono::seconds(10)));
  {
    // The table has reached the replica before it is promoted.
    auto d = connect(host_direct(r1));
    REQUIRE(wait_until(
        [&] { return scalar(d.get(), "SELECT to_regclass('fo_moved') IS NOT NULL") == "t"; },
        std::chrono::seconds(10)));
  }
  auto app = connect(proxy.conninfo());
  query(app.get(), "BEGIN");
  query(app.get(), "/* pgshard: shard=s0 */ INSERT INTO fo_moved VALUES (1)");
  own.promote(r1);
  REQUIRE(wait_until([&] { return host_column(proxy, r1, "writes") == "yes"; },
                     std::chrono::seconds(10)));
  std::string message;
  CHECK(error_code(app.get(), "/* pgshard: shard=s0 */ INSERT INTO fo_moved VALUES (2)",
                   &message) == "08006");
  CHECK_THAT(message, Catch::Contains("primary moved"));
  PGresult* r = PQexec(app.get(), "COMMIT");
  CHECK(std::string(PQcmdStatus(r)) != "COMMIT");
  PQclear(r);
  for (int port : {own.primary(), r1}) {
    auto d = connect(host_direct(port));
    CHECK(scalar(d.get(), "SELECT count(*) FROM fo_moved") == "0");
  }
  // The connection goes on, on the new primary.
  CHECK(scalar(app.get(), "/* pgshard: shard=s0 */ SELECT inet_server_port()") ==
        std::to_string(r1));
}

TEST_CASE("failover: the node id lease is taken on shard 0's primary, not a replica listed first",
          "[failover]") {
  // A Patroni map lists the leader anywhere. Before, the lease was taken on the host the map
  // lists first before the checks had found the primary, and stayed there on the standby
  // (hot standby grants advisory locks), while instances leasing later on the primary could
  // take the same node: duplicate pgshard.unique_id() values.
  OwnShard own;
  const int r1 = own.add("replica");
  Proxy proxy(
      failover_map("[" + host_quoted_url(r1) + ", " + host_quoted_url(own.primary()) + "]"));
  auto leases_on = [](int port) {
    auto c = connect(host_direct(port));
    return scalar(c.get(),
                  "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = "
                  "1885827944");
  };
  CHECK(wait_until([&] { return leases_on(own.primary()) == "1"; }, std::chrono::seconds(10)));
  CHECK(leases_on(r1) == "0");
  CHECK(host_column(proxy, own.primary(), "writes") == "yes");
  CHECK(host_column(proxy, own.primary(), "failovers") == "0");
}
