// What the [replicas] files share: proxies reading shard replicas, SHOW REPLICAS, tables made
// on the shards, and the stale-read count of read-your-writes.
#include "replicas_support.hpp"

#include <catch2/catch.hpp>
#include <map>

namespace harness {

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

int ran_on(PGconn* c, const std::string& sql) {
  return std::stoi(query(c, sql).at(0).at(0));
}

ProxyOptions reading_replica(int replica_port, const std::string& consistency) {
  ProxyOptions o =
      with_replica(replica_port, "read_from: replicas\nread_consistency: " + consistency +
                                     "\nread_your_writes: { wait: 20ms }\n");
  o.users =
      "  - { name: app, password: secret, pool_mode: transaction }\n"
      "  - { name: keeper, password: secret, pool_mode: session }\n"
      "  - { name: admin, password: adminpw }\n";
  return o;
}

void one_row_table(Cluster& cluster, const std::string& name) {
  auto direct = connect(cluster.direct(0));
  query(direct.get(), "DROP TABLE IF EXISTS " + name);
  query(direct.get(), "CREATE TABLE " + name + " (id int PRIMARY KEY, v int)");
  query(direct.get(), "INSERT INTO " + name + " VALUES (1, 0)");
}

int stale_reads(int replica, const std::string& table, const std::string& consistency,
                const std::string& begin) {
  const std::string write = "/* pgshard: shard=s0 */ UPDATE " + table + " SET v = ";
  const std::string read = "/* pgshard: shard=s0 */ SELECT v FROM " + table + " WHERE id = 1";
  Proxy proxy(reading_replica(replica, consistency));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  REQUIRE(wait_until(
      [&] {
        auto c = connect(proxy.conninfo());
        return PQstatus(c.get()) == CONNECTION_OK &&
               error_code(c.get(), read) == "";  // the table has reached the replica
      },
      std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  int stale = 0;
  for (int i = 1; i <= 10; ++i) {
    query(c.get(), write + std::to_string(i) + " WHERE id = 1");
    if (!begin.empty()) query(c.get(), begin);
    stale += scalar(c.get(), read) != std::to_string(i);
    if (!begin.empty()) query(c.get(), "COMMIT");
  }
  return stale;
}

void fan_table(Cluster& cluster, const std::string& name) {
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE IF EXISTS " + name);
    query(direct.get(), "CREATE TABLE " + name + " (id bigint PRIMARY KEY)");
    query(direct.get(), "INSERT INTO " + name + " SELECT g FROM generate_series(1, " +
                            std::to_string(i + 2) + ") g");
  }
}

ProxyOptions two_replicas(int r0, int r1, const std::string& table, const std::string& extra) {
  ProxyOptions o = reading_replica(r0, "eventual");
  o.sharded_tables = "  - { table: " + table + ", column: id, type: bigint }\n";
  o.shard_extra = {
      "replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(r0) + "/app\"]",
      "replicas: [\"postgres://app:secret@127.0.0.1:" + std::to_string(r1) + "/app\"]"};
  o.extra_top += extra;
  return o;
}

bool both_replicas_up(const Proxy& proxy) {
  auto rows = replicas(proxy);
  return rows.size() == 2 && rows[0]["state"] == "up" && rows[1]["state"] == "up";
}

}  // namespace harness
