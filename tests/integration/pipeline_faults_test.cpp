// Pipelines over several shards (one Sync-segment, statements for different shards) when a
// shard is unreachable before the batch or lost in the middle of it. PostgreSQL's rule
// (protocol docs, "Pipelining", "Extended Query"): after an error every message up to the
// Sync is discarded, the segment's implicit transaction rolls back (an explicit one fails),
// one ReadyForQuery per Sync. Found from outside: pgshard answered the failed statement's
// error, then ran and committed the later statements of the segment.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"

using namespace harness;
using namespace std::chrono_literals;
namespace p = pgshard::protocol;

namespace {

constexpr int kShards = 3;

int shard_of(long long k) {
  return pgshard::router::hash_to_index(
      *pgshard::router::partition_hash(pgshard::config::KeyType::kInt8, std::to_string(k)),
      kShards);
}

// The first key at or after `from` that lives on `shard`.
long long key_on(int shard, long long from) {
  while (shard_of(from) != shard) ++from;
  return from;
}

ProxyOptions items_map() {
  ProxyOptions o;
  o.sharded_tables = "  - { table: pf_items, column: k, type: bigint }\n";
  return o;
}

void make_items() {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists pf_items");
    query(d.get(), "create table pf_items (k bigint primary key, v text)");
  }
}

// Rows of pf_items with `k` in `keys`, counted directly on the shards the keys live on.
long long rows_of(const std::vector<long long>& keys) {
  long long n = 0;
  for (int i = 0; i < Cluster::get().size(); ++i) {
    std::string in;
    for (auto k : keys)
      if (shard_of(k) == i) in += (in.empty() ? "" : ", ") + std::to_string(k);
    if (in.empty()) continue;
    auto d = connect(Cluster::get().direct(i));
    n += std::stoll(scalar(d.get(), "select count(*) from pf_items where k in (" + in + ")"));
  }
  return n;
}

bool shard_up(int shard) {
  PGconn* c = PQconnectdb(Cluster::get().direct(shard).c_str());
  const bool ok = PQstatus(c) == CONNECTION_OK;
  PQfinish(c);
  return ok;
}

// A statement of the pipeline: Bind of a prepared statement with its key, then Execute.
struct Step {
  std::string statement;
  long long key;
};

// Parse of "ins" and "slow" (slow: the shard sleeps `sleep_s` seconds in it), the steps, a
// Sync. Optionally a BEGIN of its own first (a Sync-segment of its own, as psycopg 3 sends
// it) or inside the segment.
enum class Begin { kNone, kOwnSegment, kInSegment };
std::string pipeline(const std::vector<Step>& steps, Begin begin = Begin::kNone, int sleep_s = 2) {
  std::string out;
  auto run = [&](const std::string& sql) {
    p::Parse{"", sql, {}}.write(out);
    p::Bind{"", "", {}, {}, {}}.write(out);
    p::Execute{"", 0}.write(out);
  };
  if (begin != Begin::kNone) run("begin");
  if (begin == Begin::kOwnSegment) p::write_empty(out, p::msg::kSync);
  p::Parse{"ins", "insert into pf_items (k, v) values ($1, 'p')", {}}.write(out);
  p::Parse{"slow",
           "insert into pf_items (k, v) values ($1, (select pg_sleep(" + std::to_string(sleep_s) +
               "))::text || 'slow')",
           {}}
      .write(out);
  for (const auto& s : steps) {
    p::Bind{"", s.statement, {}, {std::to_string(s.key)}, {}}.write(out);
    p::Execute{"", 0}.write(out);
  }
  p::write_empty(out, p::msg::kSync);
  return out;
}

std::string simple(const std::string& sql) {
  std::string out;
  p::Query{sql}.write(out);
  return out;
}

// The replies up to `readies` ReadyForQuery as "type[:tag|:sqlstate|:status]" words (notices
// and parameter reports left out); "<timeout>" where nothing came for `timeout_ms`.
std::string answer(RawClient& c, int readies, int timeout_ms = 15000) {
  std::string shape;
  while (readies > 0) {
    auto m = c.next(timeout_ms);
    if (!m) return shape + " <timeout>";
    if (m->first == 'N' || m->first == 'S') continue;
    if (!shape.empty()) shape += ' ';
    shape += m->first;
    if (m->first == 'C') shape += ":" + std::string(m->second.c_str());
    if (m->first == 'E')
      if (auto e = p::ErrorFields::parse(m->second)) shape += ":" + std::string(e->code());
    if (m->first == 'Z') {
      shape += ":" + m->second.substr(0, 1);
      --readies;
    }
  }
  return shape;
}

// What one PostgreSQL answers a segment whose statement `failed` (0-based) fails: the
// replies of the statements before it, then the error and ReadyForQuery `status`; nothing
// of the statements after it. The error is the shard's loss: 08xxx, or the shard's own
// 57P0x.
void check_failed_segment(const std::string& shape, int failed, char status) {
  INFO(shape);
  // The two Parses are answered first.
  std::string want = "1 1";
  for (int i = 0; i < failed; ++i) want += " 2 C:INSERT 0 1";
  REQUIRE(shape.starts_with(want));
  std::string rest = shape.substr(want.size());
  if (rest.starts_with(" 2")) rest = rest.substr(2);  // the failed statement's BindComplete
  REQUIRE(rest.starts_with(" E:"));
  const std::string code = rest.substr(3, 5);
  CHECK((code.starts_with("08") || code.starts_with("57P0")));
  CHECK(rest.substr(8) == std::string(" Z:") + status);
}

// Backends of user app on `shard` whose pg_stat_activity row matches `where`.
std::vector<int> backends(int shard, const std::string& where) {
  auto d = connect(Cluster::get().direct(shard));
  std::vector<int> pids;
  for (const auto& row : query(d.get(),
                               "select pid from pg_stat_activity where usename = 'app' and pid "
                               "<> pg_backend_pid() and " +
                                   where))
    pids.push_back(std::stoi(row[0]));
  return pids;
}

const std::string kSlowRunning = "query like '%pg_sleep%' and state = 'active'";
const std::string kInTransaction = "state = 'idle in transaction'";

// Waits until a backend of `shard` matches `where`, then loses it: `how` "terminate"
// (pg_terminate_backend), "kill" (SIGKILL: the shard restarts every backend), "stop" (the
// shard stopped at once).
void lose_server(int shard, const std::string& where, const std::string& how) {
  std::vector<int> pids;
  REQUIRE(wait_until([&] { return !(pids = backends(shard, where)).empty(); }, 5s));
  if (how == "stop") {
    Cluster::get().kill(shard);
    return;
  }
  for (int pid : pids) {
    if (how == "kill") {
      CHECK(::kill(pid, SIGKILL) == 0);
      continue;
    }
    auto d = connect(Cluster::get().direct(shard));
    CHECK(scalar(d.get(), "select pg_terminate_backend(" + std::to_string(pid) + ")") == "t");
  }
}

// The session still works after the failed pipeline, and a pipeline over every shard
// commits on all of them.
void session_usable(RawClient& c, long long base) {
  c.send(simple("select 1"));
  CHECK(answer(c, 1) == "T D C:SELECT 1 Z:I");
  const std::vector<long long> keys{key_on(0, base), key_on(1, base), key_on(2, base)};
  c.send(pipeline({{"ins", keys[0]}, {"ins", keys[1]}, {"ins", keys[2]}}));
  CHECK(answer(c, 1) == "1 1 2 C:INSERT 0 1 2 C:INSERT 0 1 2 C:INSERT 0 1 Z:I");
  CHECK(rows_of(keys) == 3);
}

// After a shard was stopped or restarted: its table (a restart after an immediate stop may
// come back without it: the shards run with fsync off).
void shard_ready(int shard) {
  auto& cluster = Cluster::get();
  const std::string data = cluster.dir() + "/" + std::to_string(cluster.port(shard));
  // (A killed backend's shard restarts by itself: its postmaster still runs.)
  if (run("runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D " + data + " status") != 0)
    cluster.restart(shard);
  CHECK(wait_until([&] { return shard_up(shard); }, 20s));
  auto d = connect(Cluster::get().direct(shard));
  query(d.get(), "create table if not exists pf_items (k bigint primary key, v text)");
}

// A pipeline [s0, slow s1, s2] (after a BEGIN of its own when `in_block`) during which
// `lose` loses a server; the client must get an error, nothing after it, no row of the
// segment may stay, and the session must go on.
void lose_mid_batch(const Proxy& proxy, long long& base, bool in_block,
                    const std::function<void()>& lose, int failed_at) {
  const long long a = key_on(0, base), b = key_on(1, base), c = key_on(2, base);
  base += 1000;
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  raw.send(pipeline({{"ins", a}, {"slow", b}, {"ins", c}},
                    in_block ? Begin::kOwnSegment : Begin::kNone));
  if (in_block) CHECK(answer(raw, 1) == "1 2 C:BEGIN Z:T");
  lose();
  const auto t0 = std::chrono::steady_clock::now();
  check_failed_segment(answer(raw, 1), failed_at, in_block ? 'E' : 'I');
  CHECK(std::chrono::steady_clock::now() - t0 < 10s);
  if (in_block) {
    // PostgreSQL answers ROLLBACK; pgshard may name the loss again. Never COMMIT.
    raw.send(simple("commit"));
    const std::string end = answer(raw, 1);
    INFO(end);
    CHECK((end == "C:ROLLBACK Z:I" || (end.starts_with("E:") && end.ends_with(" Z:I"))));
  }
  for (int s = 0; s < kShards; ++s) shard_ready(s);
  CHECK(rows_of({a, b, c}) == 0);
  session_usable(raw, base);
  base += 1000;
}

}  // namespace

TEST_CASE("a pipeline over several shards that loses a server mid-batch commits nothing",
          "[faults][pipeline]") {
  shard_ready(1);
  make_items();
  Proxy proxy(items_map());
  long long base = 1000;
  for (const std::string how : {"terminate", "stop", "kill"}) {
    for (const bool in_block : {false, true}) {
      // The server of the statement running.
      INFO(how << (in_block ? " in a transaction" : ""));
      lose_mid_batch(
          proxy, base, in_block, [&] { lose_server(1, kSlowRunning, how); }, 1);
    }
  }
  for (const std::string how : {"terminate", "kill"}) {
    for (const bool in_block : {false, true}) {
      // The server of an earlier statement, holding its row until the Sync (found from
      // outside with psycopg 3: the client was never told and waited forever).
      INFO("earlier statement's server: " << how << (in_block ? " in a transaction" : ""));
      lose_mid_batch(
          proxy, base, in_block,
          [&] {
            REQUIRE(wait_until([] { return !backends(1, kSlowRunning).empty(); }, 5s));
            lose_server(0, kInTransaction, how);
          },
          2);
    }
  }
}

TEST_CASE("a pipeline over several shards on servers that died in the pool is all or nothing",
          "[faults][pipeline]") {
  shard_ready(1);
  make_items();
  Proxy proxy(items_map());
  long long base = 50000;
  for (const std::string how : {"terminate", "kill"}) {
    for (const int first : {0, 1}) {
      INFO(how << ", shard 1's statement " << (first ? "first" : "second"));
      {
        // Servers of every shard in the pool, then those of shard 1 lost while idle.
        auto c = connect(proxy.conninfo());
        for (int s = 0; s < kShards; ++s)
          scalar(c.get(),
                 "select count(*) from pf_items where k = " + std::to_string(key_on(s, 1)));
      }
      lose_server(1, "state = 'idle'", how);
      if (how == "kill") shard_ready(1);
      std::vector<long long> keys{key_on(0, base), key_on(1, base), key_on(2, base)};
      base += 1000;
      if (first) std::swap(keys[0], keys[1]);
      RawClient raw(proxy.port());
      REQUIRE(raw.login());
      raw.send(pipeline({{"ins", keys[0]}, {"ins", keys[1]}, {"ins", keys[2]}}));
      const std::string shape = answer(raw, 1);
      INFO(shape);
      if (shape.find("E:") == std::string::npos) {
        // pgshard may take another server when nothing ran on the dead one.
        CHECK(shape == "1 1 2 C:INSERT 0 1 2 C:INSERT 0 1 2 C:INSERT 0 1 Z:I");
        CHECK(rows_of(keys) == 3);
      } else {
        check_failed_segment(shape, first ? 0 : 1, 'I');
        CHECK(rows_of(keys) == 0);
      }
      session_usable(raw, base);
      base += 1000;
    }
  }
}

TEST_CASE("a pipeline over several shards with a shard down commits nothing of its segment",
          "[faults][pipeline]") {
  auto& cluster = Cluster::get();
  shard_ready(1);  // (left down by a failed case)
  make_items();
  Proxy proxy(items_map());
  const long long a = key_on(0, 100), b = key_on(1, 100), c = key_on(2, 100);
  const long long a2 = key_on(0, 150), b2 = key_on(1, 150), c2 = key_on(2, 150);
  cluster.kill(1);
  {
    // Without a transaction: the error, then ReadyForQuery 'I'; the statement on s0 before
    // it rolled back, the one on s2 after it never ran.
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    raw.send(pipeline({{"ins", a}, {"ins", b}, {"ins", c}}));
    check_failed_segment(answer(raw, 1), 1, 'I');
    // The next segment runs (on the shards that are up) and commits.
    const long long d = key_on(0, 200), e = key_on(2, 200);
    raw.send(pipeline({{"ins", d}, {"ins", e}}));
    CHECK(answer(raw, 1) == "1 1 2 C:INSERT 0 1 2 C:INSERT 0 1 Z:I");
    CHECK(rows_of({d, e}) == 2);
  }
  {
    // The failed statement first: nothing after it runs. (Its Parses went with it to the
    // shard that is down: the error is theirs. Before, the later statements ran and failed
    // with 26000, their statement not prepared where they ran.)
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    raw.send(pipeline({{"ins", b2}, {"ins", a2}, {"ins", c2}}));
    const std::string shape = answer(raw, 1);
    INFO(shape);
    CHECK((shape == "E:08001 Z:I" || shape == "1 1 E:08001 Z:I" || shape == "1 1 2 E:08001 Z:I"));
  }
  {
    // In the client's transaction (BEGIN a segment of its own, as psycopg 3 sends it): the
    // transaction fails ('E'), its COMMIT answers ROLLBACK.
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    const long long x = key_on(0, 300), y = key_on(1, 300), z = key_on(2, 300);
    const long long x2 = key_on(0, 350), y2 = key_on(1, 350), z2 = key_on(2, 350);
    raw.send(pipeline({{"ins", x}, {"ins", y}, {"ins", z}}, Begin::kOwnSegment));
    CHECK(answer(raw, 1) == "1 2 C:BEGIN Z:T");
    check_failed_segment(answer(raw, 1), 1, 'E');
    raw.send(simple("commit"));
    CHECK(answer(raw, 1) == "C:ROLLBACK Z:I");
    // BEGIN inside the segment: whatever pgshard answers, nothing of it commits.
    raw.send(pipeline({{"ins", x2}, {"ins", y2}, {"ins", z2}}, Begin::kInSegment));
    const std::string shape = answer(raw, 1);
    INFO(shape);
    CHECK(shape.find("E:") != std::string::npos);
    raw.send(simple("commit"));
    CHECK(answer(raw, 1).ends_with("Z:I"));
    shard_ready(1);
    CHECK(rows_of({x, y, z, x2, y2, z2}) == 0);
    session_usable(raw, 400);
  }
  CHECK(rows_of({a, b, c, a2, b2, c2}) == 0);
}
