// Replicas per shard, against real streaming replicas (pg_basebackup -R): every host's
// health check (role, lag in bytes and time, bans) as the console's SHOW HOSTS / SHOW
// REPLICAS report it.
#include <catch2/catch.hpp>
#include <map>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {

// A proxy whose shard 0 has `replica_port` as its replica, its hosts checked every 100 ms.
ProxyOptions with_replica(int replica_port, const std::string& replication) {
  ProxyOptions o;
  o.users =
      "  - { name: app, password: secret, pool_mode: transaction }\n"
      "  - { name: admin, password: adminpw }\n";
  o.shard_extra = {"replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(replica_port) +
                   "/app\"]"};
  o.extra_top =
      "admin: { users: [admin] }\nhealth: { interval: 100ms, timeout: 1s, ban_time: 1s }\n" +
      replication;
  return o;
}

// SHOW REPLICAS as maps from column name to value, one per row.
std::vector<std::map<std::string, std::string>> replicas(const Proxy& p) {
  auto c = connect(p.conninfo("dbname=pgshard", "admin", "adminpw"));
  PGresult* r = PQexec(c.get(), "SHOW REPLICAS");
  std::vector<std::map<std::string, std::string>> rows;
  if (PQresultStatus(r) == PGRES_TUPLES_OK)
    for (int i = 0; i < PQntuples(r); ++i) {
      std::map<std::string, std::string> row;
      for (int j = 0; j < PQnfields(r); ++j)
        row[PQfname(r, j)] = PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j);
      rows.push_back(std::move(row));
    }
  PQclear(r);
  return rows;
}

std::string replica_state(const Proxy& p) {
  auto rows = replicas(p);
  return rows.size() == 1 ? rows[0]["state"] : "rows: " + std::to_string(rows.size());
}

}  // namespace

TEST_CASE("hosts: the primary and its replica are checked and shown with their roles",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  Proxy proxy(with_replica(replica, ""));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
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
  ProxyOptions o = with_replica(replica, "");
  o.shard_extra = {
      "", "replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(replica) + "/app\"]"};
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
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
}
