// The move of `pgshard reshard start|status|verify|abort` over real shards with wal_level
// logical: 3 -> 4 shards of a bucketed hash table under a write load through pgshard, the
// rows copied and followed by PostgreSQL's logical replication (row-filtered publications),
// verified against the sources and a shadow copy kept by the test, then undone by abort with
// no slot, publication or subscription left.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "harness.hpp"
#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_plan.hpp"
#include "proxy/router/hashing.hpp"

using namespace harness;
using namespace pgshard;

namespace {

constexpr int kBuckets = 1024;

std::string url(int port, const std::string& db = "app") {
  return "postgres://app:secret@127.0.0.1:" + std::to_string(port) + "/" + db;
}

// rm_orders (and with `events`, rm_events: a bigserial column) on 1024 buckets.
std::string table_yaml(const std::vector<int>& owners, int shards, bool events = false) {
  std::string held;
  for (int s = 0; s < shards; ++s)
    held += std::string(s ? ", " : "") + "{ shard: s" + std::to_string(s) + ", buckets: \"" +
            config::bucket_ranges(owners, s) + "\" }";
  std::string out;
  for (const char* table : {"rm_orders", "rm_events"})
    if (events || table == std::string("rm_orders"))
      out += std::string("  - { table: ") + table +
             ", column: id, type: bigint, buckets: " + std::to_string(kBuckets) +
             ", bucket_shards: [" + held + "] }\n";
  return out;
}

std::string map_yaml(const std::vector<std::string>& urls, const std::vector<int>& owners,
                     bool events = false) {
  std::string y = "users: [{ name: app, password: secret }]\nshards:\n";
  for (std::size_t i = 0; i < urls.size(); ++i)
    y += "  - { name: s" + std::to_string(i) + ", primary: \"" + urls[i] + "\" }\n";
  return y + "sharded_tables:\n" + table_yaml(owners, static_cast<int>(urls.size()), events);
}

int bucket_of(int64_t key) {
  return router::hash_to_index(*router::partition_hash(config::KeyType::kInt8, std::to_string(key)),
                               kBuckets);
}

// wal_level logical and room for the subscriptions' workers, on every shard (restarts them).
void enable_logical(Cluster& cluster) {
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    if (scalar(d.get(), "show wal_level") == "logical") return;
    query(d.get(), "alter system set wal_level = logical");
    query(d.get(), "alter system set max_logical_replication_workers = 10");
    query(d.get(), "alter system set max_worker_processes = 16");
  }
  for (int i = 0; i < cluster.size(); ++i) {
    cluster.kill(i);
    cluster.restart(i);
  }
}

// Rows written through pgshard by a thread: inserts of new keys, updates and deletes of
// known ones; `shadow` holds what each committed statement left (key -> v).
class Writer {
 public:
  Writer(std::string conninfo, std::map<int64_t, int>& shadow)
      : conninfo_(std::move(conninfo)), shadow_(shadow) {}
  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  ~Writer() { stop(); }
  long statements() const { return done_; }
  long errors() const { return errors_; }
  std::string last_error() {
    std::lock_guard lock(mu_);
    return last_error_;
  }

 private:
  bool exec(PGconn* c, const std::string& sql) {
    PGresult* r = PQexec(c, sql.c_str());
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    if (!ok) {
      ++errors_;
      std::lock_guard lock(mu_);
      last_error_ = PQresultErrorMessage(r);
    }
    PQclear(r);
    return ok;
  }
  void loop() {
    PGconn* c = PQconnectdb(conninfo_.c_str());
    std::mt19937_64 rng(7);
    int64_t next = 100000;
    while (!stop_ && PQstatus(c) == CONNECTION_OK) {
      const int what = static_cast<int>(rng() % 10);
      const int64_t old = static_cast<int64_t>(rng() % 3000) + 1;
      if (what < 5) {
        const int64_t k = next++;
        if (exec(c, "insert into rm_orders values (" + std::to_string(k) + ", 0, 'w')"))
          shadow_[k] = 0;
      } else if (what < 9 && shadow_.count(old)) {
        if (exec(c, "update rm_orders set v = v + 1 where id = " + std::to_string(old)))
          ++shadow_[old];
      } else if (shadow_.count(old)) {
        if (exec(c, "delete from rm_orders where id = " + std::to_string(old))) shadow_.erase(old);
      }
      ++done_;
      std::this_thread::sleep_for(std::chrono::milliseconds(3));
    }
    PQfinish(c);
  }

  std::string conninfo_;
  std::map<int64_t, int>& shadow_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<long> done_{0}, errors_{0};
  std::mutex mu_;
  std::string last_error_;
};

std::string reshard(const std::string& args, int* rc) {
  std::string out;
  *rc = run(pgshard_binary() + " reshard " + args + " 2>&1", &out);
  return out;
}

// Replication objects the reshard may have left on the server of shard i (every database).
std::string leftovers(int i) {
  auto d = connect(Cluster::get().direct(i));
  return scalar(d.get(),
                "select coalesce(string_agg(x, ' '), '') from (select 'slot:' || slot_name x "
                "from pg_replication_slots union all select 'sub:' || subname from "
                "pg_subscription union all select 'pub:' || pubname from pg_publication) o");
}

// key -> v of rm_orders on `c`.
std::map<int64_t, int> rows_on(PGconn* c) {
  std::map<int64_t, int> out;
  for (const auto& r : query(c, "select id, v from rm_orders"))
    out[std::stoll(r[0])] = std::stoi(r[1]);
  return out;
}

}  // namespace

TEST_CASE("reshard row filter: the SQL bucket of a key is PostgreSQL's and pgshard's",
          "[reshard-move]") {
  auto d = connect(Cluster::get().direct(0));
  struct Case {
    config::KeyType type;
    const char* values;  // SQL producing column k of the type
    int modulus;
  };
  const Case cases[] = {
      {config::KeyType::kInt8,
       "select (g * 7919 - 5000000)::bigint from generate_series(1, 5000) g", 1024},
      {config::KeyType::kInt4,
       "select (g * 104729 - 200000000)::int from generate_series(1, 3000) g", 48},
      {config::KeyType::kInt2, "select (g * 13 - 30000)::smallint from generate_series(1, 3000) g",
       7},
      {config::KeyType::kText, "select 'key-' || g from generate_series(1, 3000) g", 1000},
      {config::KeyType::kUuid, "select md5(g::text)::uuid from generate_series(1, 3000) g", 64},
  };
  for (const auto& c : cases) {
    const std::string type = config::to_string(c.type);
    INFO("type " << type << " modulus " << c.modulus);
    query(d.get(), "drop table if exists rf_probe");
    query(d.get(), "create temp table rf_probe (k " + type + ") partition by hash (k)");
    const std::string r = admin::hash_remainder_sql(c.type, "k", c.modulus);
    // Every value's remainder is the one satisfies_hash_partition() accepts, and no other.
    CHECK(scalar(d.get(), "select count(*) from (" + std::string(c.values) +
                              ") v(k) where not satisfies_hash_partition('rf_probe'::regclass, " +
                              std::to_string(c.modulus) + ", " + r +
                              ", k) or "
                              "satisfies_hash_partition('rf_probe'::regclass, " +
                              std::to_string(c.modulus) + ", (" + r + " + 1) % " +
                              std::to_string(c.modulus) + ", k)") == "0");
    // And pgshard's own hash agrees (what the router places by).
    for (const auto& row :
         query(d.get(), "select k::text, " + r + " from (" + c.values + ") v(k) limit 200")) {
      const auto h = router::partition_hash(c.type, row[0]);
      REQUIRE(h);
      CHECK(router::hash_to_index(*h, c.modulus) == std::stoi(row[1]));
    }
    query(d.get(), "drop table rf_probe");
  }
}

// The shard of `key` on a ring table (the first point at or after its hash, wrapping).
int ring_shard(const config::ShardedTable& t, int64_t key) {
  const auto h = *router::partition_hash(config::KeyType::kInt8, std::to_string(key));
  auto it = std::lower_bound(t.ring.begin(), t.ring.end(), std::make_pair(h, INT32_MIN));
  return (it == t.ring.end() ? t.ring.front() : *it).second;
}

TEST_CASE("reshard row filter: a ring move's arcs select the keys that change shard",
          "[reshard-move]") {
  auto yaml = [](int shards) {
    std::string y = "users: [{ name: app, password: secret }]\nshards:\n";
    for (int i = 0; i < shards; ++i)
      y += "  - { name: s" + std::to_string(i) + ", primary: \"postgres://h:1/app\" }\n";
    return y + "sharded_tables:\n  - { table: r, column: k, type: bigint, function: ring }\n";
  };
  const auto a = config::load_string(yaml(3), "a.yaml");
  const auto b = config::load_string(yaml(4), "b.yaml");
  const auto plan = admin::plan_reshard(*a, *b);
  REQUIRE(plan.size() == 1);
  REQUIRE(plan[0].moves.size() == 3);  // s0, s1, s2 -> s3
  auto d = connect(Cluster::get().direct(0));
  const std::string keys = "select (g * 7919 - 20000000)::bigint from generate_series(1, 4000) g";
  for (const auto& m : plan[0].moves) {
    INFO(m.from << " -> " << m.to);
    std::set<int64_t> expected;
    for (int g = 1; g <= 4000; ++g) {
      const int64_t k = int64_t{g} * 7919 - 20000000;
      if ("s" + std::to_string(ring_shard(a->sharded_tables[0], k)) == m.from &&
          "s" + std::to_string(ring_shard(b->sharded_tables[0], k)) == m.to)
        expected.insert(k);
    }
    std::set<int64_t> selected;
    for (const auto& row : query(d.get(), "select k from (" + keys + ") v(k) where " +
                                              admin::move_filter_sql(plan[0], m)))
      selected.insert(std::stoll(row[0]));
    CHECK(expected.size() > 100);
    CHECK(selected == expected);
  }
}

namespace {

struct MoveSetup {
  std::string dir, old_map, new_map;
  std::vector<int> old_owners, new_owners;
  std::string target;   // conninfo of s3: database rm_target on shard s2's server
  bool events = false;  // rm_events is in the maps too
};

// Three shards with rm_orders, a fourth (database rm_target, no table: start copies it), the
// old map (1024 buckets evenly) and the new one (rebalanced over 4: a quarter moves to s3).
MoveSetup setup_move(const std::string& name, bool events) {
  auto& cluster = Cluster::get();
  enable_logical(cluster);
  MoveSetup m;
  m.events = events;
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists rm_orders");
    query(d.get(), "create table rm_orders (id bigint primary key, v int not null, note text)");
    query(d.get(), "drop table if exists rm_events");
    query(d.get(), "create table rm_events (id bigint primary key, n bigserial)");
  }
  {
    auto d = connect(cluster.direct(2));
    query(d.get(), "drop database if exists rm_target");
    query(d.get(), "create database rm_target");
  }
  m.target = "host=127.0.0.1 port=" + std::to_string(cluster.port(2)) +
             " user=app password=secret dbname=rm_target";
  m.dir = temp_dir(name);
  m.old_owners = config::even_buckets(kBuckets, 3);
  m.new_owners = config::rebalance_buckets(m.old_owners, 4);
  std::vector<std::string> urls;
  for (int i = 0; i < 3; ++i) urls.push_back(url(cluster.port(i)));
  m.old_map = m.dir + "/old.yaml";
  m.new_map = m.dir + "/new.yaml";
  std::ofstream(m.old_map) << map_yaml(urls, m.old_owners, events);
  urls.push_back(url(cluster.port(2), "rm_target"));
  std::ofstream(m.new_map) << map_yaml(urls, m.new_owners, events);
  return m;
}

void load_rows(PGconn* c, std::map<int64_t, int>& shadow) {
  for (int from = 1; from <= 3000; from += 500) {
    std::string values;
    for (int k = from; k < from + 500; ++k) {
      values += (values.empty() ? "(" : ", (") + std::to_string(k) + ", " + std::to_string(k % 7) +
                ", 'n')";
      shadow[k] = k % 7;
    }
    query(c, "insert into rm_orders values " + values);
  }
}

// The setup, pgshard on the old map and 3000 rows written through it (`shadow`: key -> v).
struct MoveCase {
  explicit MoveCase(const std::string& name, bool events = false)
      : m(setup_move(name, events)), proxy(options(m)), c(connect(proxy.conninfo())) {
    load_rows(c.get(), shadow);
  }
  static ProxyOptions options(const MoveSetup& m) {
    ProxyOptions o;
    o.sharded_tables = table_yaml(m.old_owners, 3, m.events);
    return o;
  }
  MoveSetup m;
  Proxy proxy;
  Conn c;
  std::map<int64_t, int> shadow;
};

bool caught_up(const MoveSetup& m) {
  int rc = 0;
  const auto out = reshard("status --to " + m.new_map, &rc);
  return rc == 0 && out.find("caught up: yes") != std::string::npos;
}

// After abort: nothing left on any server, the target's table empty, every row of `shadow`
// on the shard the old map names with its value.
void check_undone(const MoveSetup& m, const std::map<int64_t, int>& shadow) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    INFO("server of shard s" << i);
    CHECK(leftovers(i) == "");
  }
  auto t = connect(m.target);
  CHECK(scalar(t.get(), "select count(*) from rm_orders") == "0");
  std::map<int64_t, int> placed;
  long misplaced = 0;
  for (int i = 0; i < 3; ++i) {
    auto d = connect(cluster.direct(i));
    for (const auto& [k, v] : rows_on(d.get())) {
      placed[k] = v;
      misplaced += m.old_owners[static_cast<std::size_t>(bucket_of(k))] != i;
    }
  }
  CHECK(misplaced == 0);
  CHECK(placed == shadow);
  std::ifstream state(m.new_map + ".reshard-state");
  CHECK(!state.good());
}

// `status` once caught up with no writes: each move's rm_orders rows on the target equal
// those on the source, and no errors.
void check_counts_agree(const MoveSetup& m) {
  int rc = 0;
  const auto out = reshard("status --to " + m.new_map, &rc);
  INFO(out);
  int moves = 0;
  for (std::size_t at = out.find("rows rm_orders "); at != std::string::npos;
       at = out.find("rows rm_orders ", at + 1), ++moves) {
    const auto counts = out.substr(at + 15, out.find(' ', at + 15) - at - 15);
    const auto slash = counts.find('/');
    CHECK(std::stol(counts.substr(0, slash)) > 0);
    CHECK(counts.substr(0, slash) == counts.substr(slash + 1));
  }
  CHECK(moves == 3);
  CHECK(out.find("ERRORS") == std::string::npos);
}

}  // namespace

TEST_CASE("reshard 3 -> 4 shards under writes: start, status, verify, abort", "[reshard-move]") {
  MoveCase k("reshard-move");
  auto& [m, proxy, c, shadow] = k;
  Writer writer(proxy.conninfo(), shadow);
  writer.start();

  int rc = 0;
  auto out = reshard("start --from " + m.old_map + " --to " + m.new_map, &rc);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("schema of rm_orders copied s0 -> s3") != std::string::npos);
  CHECK(out.find("start: copying") != std::string::npos);
  // A second start is refused while this one runs.
  CHECK(reshard("start --from " + m.old_map + " --to " + m.new_map, &rc).find("in progress") !=
        std::string::npos);
  CHECK(rc == 1);
  // And so is one to another copy of the new map: the tables are already being moved.
  std::ofstream(m.dir + "/other.yaml") << read_file(m.new_map);
  out = reshard("start --from " + m.old_map + " --to " + m.dir + "/other.yaml", &rc);
  CHECK(rc == 1);
  CHECK(out.find("REFUSED table rm_orders on shard s0 is being moved by another reshard") !=
        std::string::npos);

  REQUIRE(wait_until([&] { return caught_up(m); }, std::chrono::seconds(60)));
  out = reshard("status --to " + m.new_map, &rc);
  INFO(out);
  CHECK(out.find("s0 -> s3") != std::string::npos);
  CHECK(out.find("tables 1/1 synchronized") != std::string::npos);

  // Verified while the writer goes on, and again once it stopped.
  out = reshard("verify --to " + m.new_map, &rc);
  INFO(out);
  CHECK(rc == 0);
  CHECK(out.find("verify: OK, 0 rows differ") != std::string::npos);
  writer.stop();
  INFO("writer: " << writer.statements() << " statements, " << writer.errors()
                  << " errors, last: " << writer.last_error());
  CHECK(writer.statements() > 100);
  CHECK(writer.errors() == 0);
  out = reshard("verify --to " + m.new_map, &rc);
  CHECK(rc == 0);
  // Writes stopped and caught up: each move's rows on the target equal those on the source.
  check_counts_agree(m);

  // The target holds exactly the shadow's rows the new map gives s3, with their values.
  auto t = connect(m.target);
  std::map<int64_t, int> expected;
  for (const auto& [k, v] : shadow)
    if (m.new_owners[static_cast<std::size_t>(bucket_of(k))] == 3) expected[k] = v;
  CHECK(expected.size() > 500);
  CHECK(rows_on(t.get()) == expected);

  // Rows changed on the target behind the subscription's back are named by key.
  const int64_t gone = expected.begin()->first, changed = std::next(expected.begin())->first;
  int64_t extra = 900000;
  while (m.new_owners[static_cast<std::size_t>(bucket_of(extra))] != 3) ++extra;
  query(t.get(), "delete from rm_orders where id = " + std::to_string(gone));
  query(t.get(), "update rm_orders set v = -1 where id = " + std::to_string(changed));
  query(t.get(), "insert into rm_orders values (" + std::to_string(extra) + ", 1, 'x')");
  out = reshard("verify --to " + m.new_map + " --timeout 20000", &rc);
  INFO(out);
  CHECK(rc == 1);
  CHECK(out.find("missing on the target: " + std::to_string(gone) + "\n") != std::string::npos);
  CHECK(out.find("different on the target: " + std::to_string(changed) + "\n") !=
        std::string::npos);
  CHECK(out.find("extra on the target: " + std::to_string(extra) + "\n") != std::string::npos);
  CHECK(out.find("verify: FAILED, 3 rows differ") != std::string::npos);

  out = reshard("abort --to " + m.new_map, &rc);
  INFO(out);
  CHECK(rc == 0);
  check_undone(m, shadow);
  CHECK(rows_on(c.get()) == shadow);  // through pgshard, on the old map
}

TEST_CASE("reshard abort in the middle of the initial copy leaves no slot and the old placement",
          "[reshard-move]") {
  MoveCase k("reshard-abort");
  auto& [m, proxy, c, shadow] = k;
  // The copy held up: no table synchronization worker until the target's table is locked.
  auto server = connect(Cluster::get().direct(2));
  query(server.get(), "alter system set max_sync_workers_per_subscription = 0");
  query(server.get(), "select pg_reload_conf()");
  int rc = 0;
  auto out = reshard("start --from " + m.old_map + " --to " + m.new_map, &rc);
  INFO(out);
  REQUIRE(rc == 0);
  out = reshard("status --to " + m.new_map, &rc);
  CHECK(out.find("tables 0/1 synchronized") != std::string::npos);
  CHECK(out.find("caught up: no") != std::string::npos);
  auto lock = connect(m.target);
  query(lock.get(), "begin");
  query(lock.get(), "lock table rm_orders in access exclusive mode");
  query(server.get(), "alter system reset max_sync_workers_per_subscription");
  query(server.get(), "select pg_reload_conf()");
  // Copying: the table in state 'd' (data being copied) for each move, its worker waiting
  // for the lock.
  auto t = connect(m.target);
  REQUIRE(wait_until(
      [&] {
        return scalar(t.get(), "select count(*) from pg_subscription_rel where srsubstate = 'd'") ==
               "3";
      },
      std::chrono::seconds(30)));

  std::vector<Conn> sources;
  for (int i = 0; i < 3; ++i) {
    sources.push_back(connect(Cluster::get().direct(i)));
    CHECK(scalar(sources.back().get(),
                 "select count(*) from pg_replication_slots where "
                 "slot_name like 'pgshard\\_rs\\_%'") == "1");
  }
  std::string abort_out;
  int abort_rc = -1;
  std::thread aborting([&] {
    abort_rc = run(pgshard_binary() + " reshard abort --to " + m.new_map + " 2>&1", &abort_out);
  });
  // Every slot is gone while the abort still waits for the lock to delete copied rows.
  const bool slots_gone = wait_until(
      [&] {
        for (auto& d : sources) {
          PGresult* r = PQexec(d.get(), "select count(*) from pg_replication_slots");
          const bool none =
              PQresultStatus(r) == PGRES_TUPLES_OK && PQgetvalue(r, 0, 0) == std::string("0");
          PQclear(r);
          if (!none) return false;
        }
        return true;
      },
      std::chrono::seconds(30));
  query(lock.get(), "rollback");
  aborting.join();
  INFO(abort_out);
  CHECK(slots_gone);
  CHECK(abort_rc == 0);
  check_undone(m, shadow);
}

TEST_CASE(
    "reshard start failing half way drops what it created: no slot, publication or "
    "subscription left",
    "[reshard-move]") {
  MoveCase k("reshard-fail");
  auto& [m, proxy, c, shadow] = k;
  // Shard s1 refuses CREATE PUBLICATION: the move s0 -> s3 is created, s1 -> s3 fails.
  auto s1 = connect(Cluster::get().direct(1));
  query(s1.get(),
        "create or replace function rm_refuse() returns event_trigger language plpgsql as "
        "$$ begin raise exception 'no publications here'; end $$");
  query(s1.get(),
        "create event trigger rm_no_pub on ddl_command_start when tag in "
        "('CREATE PUBLICATION') execute function rm_refuse()");
  int rc = 0;
  const auto out = reshard("start --from " + m.old_map + " --to " + m.new_map, &rc);
  query(s1.get(), "drop event trigger rm_no_pub");
  INFO(out);
  CHECK(rc == 1);
  CHECK(out.find("s0 -> s3: publication, slot and subscription") != std::string::npos);
  CHECK(out.find("no publications here") != std::string::npos);
  CHECK(out.find("start: FAILED at s1 -> s3") != std::string::npos);
  check_undone(m, shadow);
}

TEST_CASE(
    "reshard 3 -> 4 shards with a write stop: start under writes, cleanup, then pgshard on "
    "the new map finds every row",
    "[reshard-move]") {
  MoveCase k("reshard-cleanup", true);
  auto& [m, proxy, c, shadow] = k;
  auto& cluster = Cluster::get();
  // rm_events, a second table of the move: its rows written on their shards directly, each
  // drawing from that shard's own sequence; s1's sequence well ahead.
  for (int i = 0; i < 3; ++i) {
    auto d = connect(cluster.direct(i));
    for (int64_t key = 1; key <= 600; ++key)
      if (m.old_owners[static_cast<std::size_t>(bucket_of(key))] == i)
        query(d.get(), "insert into rm_events (id) values (" + std::to_string(key) + ")");
  }
  {
    auto s1 = connect(cluster.direct(1));
    query(s1.get(), "select setval('rm_events_n_seq', 5000)");
  }
  Writer writer(proxy.conninfo(), shadow);
  writer.start();
  int rc = 0;
  auto out = reshard("start --from " + m.old_map + " --to " + m.new_map, &rc);
  INFO(out);
  REQUIRE(rc == 0);
  {
    // The target's copy of the sequence starts past every source's.
    auto t = connect(m.target);
    CHECK(std::stol(scalar(t.get(), "select last_value from rm_events_n_seq")) >= 5000);
    // And a value drawn after start is carried by cleanup.
    auto s1 = connect(cluster.direct(1));
    query(s1.get(), "select setval('rm_events_n_seq', 7000)");
  }
  REQUIRE(wait_until([&] { return caught_up(m); }, std::chrono::seconds(60)));
  writer.stop();
  CHECK(writer.errors() == 0);
  // Refused unless the operator says the writes stopped (there is no cutover yet).
  out = reshard("cleanup --to " + m.new_map, &rc);
  CHECK(rc == 1);
  CHECK(out.find("--writes-stopped") != std::string::npos);
  out = reshard("cleanup --writes-stopped --to " + m.new_map, &rc);
  INFO(out);
  REQUIRE(rc == 0);
  CHECK(out.find("cleanup: done") != std::string::npos);

  for (int i = 0; i < cluster.size(); ++i) CHECK(leftovers(i) == "");
  CHECK(!std::ifstream(m.new_map + ".reshard-state").good());
  {
    auto t = connect(m.target);
    CHECK(std::stol(scalar(t.get(), "select last_value from rm_events_n_seq")) >= 7000);
    // rm_events moved along: each of its 600 rows once, on its new shard.
    long events = 0, misplaced_events = 0;
    for (int i = 0; i < 4; ++i) {
      auto d = connect(i < 3 ? cluster.direct(i) : m.target);
      for (const auto& r : query(d.get(), "select id from rm_events")) {
        ++events;
        misplaced_events +=
            m.new_owners[static_cast<std::size_t>(bucket_of(std::stoll(r[0])))] != i;
      }
    }
    CHECK(events == 600);
    CHECK(misplaced_events == 0);
  }
  // Every row once, on the shard the new map names, with its value.
  std::map<int64_t, int> all;
  std::size_t rows = 0;
  long misplaced = 0;
  for (int i = 0; i < 4; ++i) {
    auto d = connect(i < 3 ? cluster.direct(i) : m.target);
    for (const auto& [key, v] : rows_on(d.get())) {
      all[key] = v;
      ++rows;
      misplaced += m.new_owners[static_cast<std::size_t>(bucket_of(key))] != i;
    }
  }
  CHECK(misplaced == 0);
  CHECK(rows == shadow.size());
  CHECK(all == shadow);

  // pgshard on the new map: every row through it, a new key of s3's buckets written to s3.
  ProxyOptions o;
  o.sharded_tables = table_yaml(m.new_owners, 4, true);
  for (int i = 0; i < 3; ++i) o.shard_urls.push_back(url(cluster.port(i)));
  o.shard_urls.push_back(url(cluster.port(2), "rm_target"));
  Proxy after(o);
  auto n = connect(after.conninfo());
  CHECK(rows_on(n.get()) == shadow);
  int64_t key = 700000;
  while (m.new_owners[static_cast<std::size_t>(bucket_of(key))] != 3) ++key;
  query(n.get(), "insert into rm_orders values (" + std::to_string(key) + ", 5, 'new')");
  auto t = connect(m.target);
  CHECK(scalar(t.get(), "select v from rm_orders where id = " + std::to_string(key)) == "5");
}

TEST_CASE("reshard cleanup deletes nothing when a source changed after the streams stopped",
          "[reshard-move]") {
  MoveCase k("reshard-cleanup-late");
  auto& [m, proxy, c, shadow] = k;
  int rc = 0;
  REQUIRE(reshard("start --from " + m.old_map + " --to " + m.new_map, &rc).find("start: copying") !=
          std::string::npos);
  REQUIRE(wait_until([&] { return caught_up(m); }, std::chrono::seconds(60)));
  // Past the first comparison (phase cleaning), the subscription from s0 stopped: a write to
  // a moving key of s0 then reaches s0 only, as one that slipped in after the drop would.
  {
    std::string state = read_file(m.new_map + ".reshard-state");
    state.replace(state.find("phase copying"), 13, "phase cleaning");
    std::ofstream(m.new_map + ".reshard-state") << state;
  }
  auto t = connect(m.target);
  const auto sub =
      scalar(t.get(), "select subname from pg_subscription where subname like '%s0_s3'");
  query(t.get(), "alter subscription " + sub + " disable");
  int64_t late = 800000;
  while (m.old_owners[static_cast<std::size_t>(bucket_of(late))] != 0 ||
         m.new_owners[static_cast<std::size_t>(bucket_of(late))] != 3)
    ++late;
  query(c.get(), "insert into rm_orders values (" + std::to_string(late) + ", 9, 'late')");
  shadow[late] = 9;
  auto out = reshard("cleanup --writes-stopped --to " + m.new_map, &rc);
  INFO(out);
  CHECK(rc == 1);
  CHECK(out.find("STOPPED before deleting anything") != std::string::npos);
  CHECK(out.find("missing on the target: " + std::to_string(late)) != std::string::npos);
  // Nothing was deleted from the sources: abort returns to the old map with every row.
  out = reshard("abort --to " + m.new_map, &rc);
  CHECK(rc == 0);
  check_undone(m, shadow);
}
