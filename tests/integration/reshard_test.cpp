// Hash buckets over real shards: rows written through pgshard land in the bucket PostgreSQL's
// satisfies_hash_partition() names, on that bucket's shard; `pgshard reshard plan --live`
// counts the moving rows and refuses what logical replication cannot move.
#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

constexpr int kBuckets = 1024;

// The map's bucket assignment, as written in its YAML: shard i holds kHeld[i].
const char* const kHeld[] = {"0-99,512-600", "100-511", "601-1023"};
// The new map moves buckets 0-49 of s0 and 100-199 of s1 to s3.
const char* const kHeldAfter[] = {"50-99,512-600", "200-511", "601-1023", "0-49,100-199"};

// "0-99,512-600" as a PostgreSQL int[] literal of every bucket it names.
std::string bucket_array(const std::string& list) {
  std::string out = "{";
  std::size_t at = 0;
  while (at < list.size()) {
    auto comma = list.find(',', at);
    if (comma == std::string::npos) comma = list.size();
    const auto item = list.substr(at, comma - at);
    const auto dash = item.find('-');
    const int lo = std::stoi(item.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(item.substr(dash + 1));
    for (int b = lo; b <= hi; ++b) out += (out.size() > 1 ? "," : "") + std::to_string(b);
    at = comma + 1;
  }
  return out + "}";
}

std::string tables_yaml(const char* const* held, int shards) {
  std::string assignment;
  for (int i = 0; i < shards; ++i)
    assignment += std::string(i ? ", " : "") + "{ shard: s" + std::to_string(i) + ", buckets: \"" +
                  held[i] + "\" }";
  return "  - { table: rs_orders, column: id, type: bigint, buckets: " + std::to_string(kBuckets) +
         ", bucket_shards: [" + assignment + "] }\n" +
         "  - { table: rs_nopk, column: id, type: bigint, buckets: " + std::to_string(kBuckets) +
         ", bucket_shards: [" + assignment + "] }\n";
}

std::string map_yaml(const std::vector<std::string>& urls, const char* const* held) {
  std::string y = "users: [{ name: app, password: secret }]\nshards:\n";
  for (std::size_t i = 0; i < urls.size(); ++i)
    y += "  - { name: s" + std::to_string(i) + ", primary: \"" + urls[i] + "\" }\n";
  return y + "sharded_tables:\n" + tables_yaml(held, static_cast<int>(urls.size()));
}

// Rows of rs_orders on `c` whose bucket (by PostgreSQL) is in `buckets`.
long rows_in(PGconn* c, const std::string& buckets) {
  query(c, "create temp table if not exists rs_probe (k bigint) partition by hash (k)");
  return std::stol(scalar(c,
                          "select count(*) from rs_orders t where exists (select 1 from "
                          "unnest('" +
                              buckets +
                              "'::int[]) r where satisfies_hash_partition('pg_temp.rs_probe'::"
                              "regclass, " +
                              std::to_string(kBuckets) + ", r, t.id))"));
}

// The `rows s0 -> s3: N rows` count the plan printed.
long planned_rows(const std::string& out, const std::string& from, const std::string& to) {
  const std::string head = "rows " + from + " -> " + to + ": ";
  const auto at = out.find(head);
  if (at == std::string::npos) return -1;
  return std::stol(out.substr(at + head.size()));
}

void set_wal_level(Cluster& cluster, const char* level) {
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), std::string("alter system set wal_level = ") + level);
  }
  for (int i = 0; i < cluster.size(); ++i) {
    cluster.kill(i);  // (restart starts a stopped server)
    cluster.restart(i);
  }
}

// 3000 rows of rs_orders through pgshard: multi-row INSERTs (split per shard), keyed
// INSERTs with Bind parameters, COPY; and one row of rs_nopk.
void write_rows(PGconn* c) {
  for (int from = 1; from <= 2000; from += 100) {
    std::string values;
    for (int k = from; k < from + 100; ++k)
      values += (values.empty() ? "(" : ", (") + std::to_string(k) + ", 'v')";
    query(c, "insert into rs_orders values " + values);
  }
  for (int k = 2001; k <= 2200; ++k) {
    const auto key = std::to_string(k);
    const char* params[] = {key.c_str()};
    PGresult* r = PQexecParams(c, "insert into rs_orders values ($1, 'p')", 1, nullptr, params,
                               nullptr, nullptr, 0);
    REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
    PQclear(r);
  }
  query(c, "insert into rs_nopk values (1, 'x')");
  std::string copy;
  for (int k = 2201; k <= 3000; ++k) copy += std::to_string(k) + "\tc\n";
  PGresult* r = PQexec(c, "copy rs_orders from stdin");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_IN);
  PQclear(r);
  REQUIRE(PQputCopyData(c, copy.data(), static_cast<int>(copy.size())) == 1);
  REQUIRE(PQputCopyEnd(c, nullptr) == 1);
  r = PQgetResult(c);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  while ((r = PQgetResult(c))) PQclear(r);
}

// PostgreSQL's own hash places every row: each shard holds only its buckets' rows.
void check_placement(Cluster& cluster) {
  long total = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    const long here = std::stol(scalar(d.get(), "select count(*) from rs_orders"));
    INFO("shard s" << i);
    CHECK(here > 0);
    CHECK(rows_in(d.get(), bucket_array(kHeld[i])) == here);
    total += here;
  }
  CHECK(total == 3000);
}

// Runs `sql` on each of the first `n` shards, directly.
void on_shards(int n, const std::string& sql) {
  for (int i = 0; i < n; ++i) {
    auto d = connect(Cluster::get().direct(i));
    query(d.get(), sql);
  }
}

}  // namespace

TEST_CASE("bucketed hash: rows land on their bucket's shard and the plan counts what moves",
          "[reshard]") {
  auto& cluster = Cluster::get();
  auto on = [&](int i, const std::string& sql) {
    auto d = connect(cluster.direct(i));
    query(d.get(), sql);
  };
  for (int i = 0; i < cluster.size(); ++i) {
    on(i, "drop table if exists rs_orders, rs_nopk");
    on(i, "create table rs_orders (id bigint primary key, note text)");
    on(i, "create table rs_nopk (id bigint, note text)");
  }
  ProxyOptions o;
  o.sharded_tables = tables_yaml(kHeld, 3);
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  write_rows(c.get());
  CHECK(scalar(c.get(), "select count(*) from rs_orders") == "3000");

  check_placement(cluster);
  // A keyed read finds its row, and EXPLAIN (ROUTE) names the bucket.
  CHECK(scalar(c.get(), "select note from rs_orders where id = 2100") == "p");
  const auto explained = query(c.get(), "explain (route) select * from rs_orders where id = 42");
  REQUIRE(explained.size() == 1);
  CHECK(explained[0][0] == "s2");  // bucket 610: s2 holds 601-1023
  CHECK(explained[0][1].find("bucket 610 of 1024") != std::string::npos);

  // s3 of the new map: a database of its own on shard s2's server.
  on(2, "drop database if exists rs_target");
  on(2, "create database rs_target");
  std::vector<std::string> urls;
  for (int i = 0; i < cluster.size(); ++i)
    urls.push_back("postgres://app:secret@127.0.0.1:" + std::to_string(cluster.port(i)) + "/app");
  const auto dir = temp_dir("reshard-plan");
  std::ofstream(dir + "/old.yaml") << map_yaml(urls, kHeld);
  urls.push_back("postgres://app:secret@127.0.0.1:" + std::to_string(cluster.port(2)) +
                 "/rs_target");
  std::ofstream(dir + "/new.yaml") << map_yaml(urls, kHeldAfter);
  const std::string plan =
      pgshard_binary() + " reshard plan --from " + dir + "/old.yaml --to " + dir + "/new.yaml";

  std::string out;
  CHECK(run(plan + " 2>&1", &out) == 0);
  INFO(out);
  CHECK(out.find("150 of 1024 buckets move") != std::string::npos);
  CHECK(out.find("s0 -> s3: 50 buckets 0-49") != std::string::npos);
  CHECK(out.find("s1 -> s3: 100 buckets 100-199") != std::string::npos);

  // Refused: wal_level replica on the sources, no table on the target, no key on rs_nopk.
  CHECK(run(plan + " --live 2>&1", &out) == 1);
  CHECK(out.find("REFUSED shard s0 has wal_level replica") != std::string::npos);
  CHECK(out.find("ALTER SYSTEM SET wal_level = logical") != std::string::npos);
  CHECK(out.find("REFUSED target shard s3 has no table rs_orders") != std::string::npos);
  CHECK(out.find("REFUSED table rs_nopk on shard s0 has no primary key or replica identity") !=
        std::string::npos);

  set_wal_level(cluster, "logical");
  {
    auto t = connect("host=127.0.0.1 port=" + std::to_string(cluster.port(2)) +
                     " user=app password=secret dbname=rs_target");
    query(t.get(), "create table rs_orders (id bigint primary key, note text)");
    query(t.get(), "create table rs_nopk (id bigint, note text)");
  }
  CHECK(run(plan + " --live 2>&1", &out) == 1);
  CHECK(out.find("wal_level") == std::string::npos);
  CHECK(out.find("has no table") == std::string::npos);
  CHECK(out.find("REFUSED table rs_nopk on shard s1 has no primary key") != std::string::npos);
  for (int i = 0; i < cluster.size(); ++i) on(i, "alter table rs_nopk replica identity full");

  CHECK(run(plan + " --live 2>&1", &out) == 0);
  CHECK(out.find("live: OK") != std::string::npos);
  // The counts equal the rows PostgreSQL places in the moving buckets.
  auto s0 = connect(cluster.direct(0));
  auto s1 = connect(cluster.direct(1));
  const long from_s0 = rows_in(s0.get(), bucket_array("0-49"));
  const long from_s1 = rows_in(s1.get(), bucket_array("100-199"));
  CHECK(from_s0 > 0);
  CHECK(from_s1 > 0);
  CHECK(planned_rows(out, "s0", "s3") == from_s0);
  CHECK(out.find("(counted with PostgreSQL's partition hash)") != std::string::npos);
  // rs_orders is listed first: its s1 -> s3 line is the first after its s0 -> s3 line.
  CHECK(planned_rows(out.substr(out.find("rows s0 -> s3")), "s1", "s3") == from_s1);

  set_wal_level(cluster, "replica");
  on(2, "drop database rs_target");
  for (int i = 0; i < cluster.size(); ++i) on(i, "drop table rs_orders, rs_nopk");
}

TEST_CASE(
    "list table: plan --live counts a key the old default held and the new map lists "
    "for the new default's shard",
    "[reshard]") {
  auto& cluster = Cluster::get();
  REQUIRE(cluster.size() >= 3);
  on_shards(3, "drop table if exists rs_regions");
  on_shards(3, "create table rs_regions (id int primary key, region text)");
  std::vector<std::string> urls;
  for (int i = 0; i < 3; ++i)
    urls.push_back("postgres://app:secret@127.0.0.1:" + std::to_string(cluster.port(i)) + "/app");
  // Old map: s0 [eu, uk], s1 [us], default s1. s1 holds us, fr and de (by default).
  {
    auto s0 = connect(cluster.direct(0));
    query(s0.get(), "insert into rs_regions values (1, 'eu'), (2, 'uk'), (3, 'uk')");
    auto s1 = connect(cluster.direct(1));
    query(s1.get(),
          "insert into rs_regions values (4, 'us'), (5, 'fr'), (6, 'fr'), (7, 'fr'), (8, 'de')");
  }
  auto map = [&](int shards, const std::string& lists, const char* fallback) {
    std::string y = "users: [{ name: app, password: secret }]\nshards:\n";
    for (int i = 0; i < shards; ++i)
      y += "  - { name: s" + std::to_string(i) + ", primary: \"" + urls[i] + "\" }\n";
    return y + "sharded_tables:\n  - { table: rs_regions, column: region, type: text, " +
           "function: list, lists: [" + lists + "], default: " + fallback + " }\n";
  };
  const auto dir = temp_dir("reshard-list");
  std::ofstream(dir + "/old.yaml")
      << map(2, "{ shard: s0, values: [eu, uk] }, { shard: s1, values: [us] }", "s1");
  // New map: s0 [eu], s2 [uk, fr], s1 [us], default s2: fr and de move s1 -> s2.
  std::ofstream(dir + "/new.yaml") << map(
      3,
      "{ shard: s0, values: [eu] }, { shard: s2, values: [uk, fr] }, { shard: s1, values: [us] }",
      "s2");
  std::string out;
  run(pgshard_binary() + " reshard plan --live --from " + dir + "/old.yaml --to " + dir +
          "/new.yaml 2>&1",
      &out);
  INFO(out);
  CHECK(planned_rows(out, "s0", "s2") == 2);  // uk
  CHECK(planned_rows(out, "s1", "s2") == 4);  // fr (3 rows) and de
  on_shards(3, "drop table rs_regions");
}

TEST_CASE(
    "a sharding_key hint finds the row of the table it names, whatever the first "
    "table's bucket map",
    "[reshard]") {
  const int shards = Cluster::get().size();
  on_shards(shards, "drop table if exists rs_bi, rs_bx");
  on_shards(shards, "create table rs_bi (id bigint primary key, note text)");
  on_shards(shards, "create table rs_bx (id bigint primary key, note text)");
  ProxyOptions o;
  o.sharded_tables =
      "  - { table: rs_bi, column: id, type: bigint, buckets: 1024 }\n"
      "  - { table: rs_bx, column: id, type: bigint, buckets: 16 }\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  // Keys whose rs_bx shard differs from the shard rs_bi's map gives them.
  std::vector<std::string> keys;
  for (int k = 1; k <= 60; ++k) {
    query(c.get(), "insert into rs_bx values (" + std::to_string(k) + ", 'x')");
    const auto bi =
        query(c.get(), "explain (route) select * from rs_bi where id = " + std::to_string(k));
    const auto bx =
        query(c.get(), "explain (route) select * from rs_bx where id = " + std::to_string(k));
    if (bi.at(0).at(0) != bx.at(0).at(0)) keys.push_back(std::to_string(k));
  }
  REQUIRE(keys.size() >= 3);
  for (const auto& k : keys) {
    INFO("key " << k);
    const auto hinted = "/* pgshard: sharding_key=" + k + " */ select count(*) from rs_bx";
    CHECK(scalar(c.get(), hinted + " where id = " + k) == "1");
    query(c.get(), "begin");
    query(c.get(), "set local pgshard.sharding_key = '" + k + "'");
    CHECK(scalar(c.get(), "select note from rs_bx where id = " + k) == "x");
    query(c.get(), "commit");
  }
  std::string message;
  CHECK(error_code(c.get(),
                   "/* pgshard: sharding_key=1 */ select * from rs_bi join rs_bx using (id)",
                   &message) == "0A000");
  CHECK(message.find("rs_bi and rs_bx") != std::string::npos);
  on_shards(shards, "drop table rs_bi, rs_bx");
}
