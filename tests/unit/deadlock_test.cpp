// Victims of distributed deadlocks (txn::find_victims) over hand-built wait-for graphs: a
// cycle crossing shards loses its youngest transaction; one shard's own cycles, chains and
// transactions that are not running are left alone; shards that did not answer leave their
// waits out; a wait for a pooled server is an OR-wait over its holders. No sockets.
#include "proxy/txn/deadlock.hpp"

#include <catch2/catch.hpp>
#include <set>

using namespace pgshard;
using txn::LockWait;
using txn::WaitingTxn;

namespace {

const std::vector<std::string> kShards{"s0", "s1", "s2"};

// A transaction on the given (shard, pid) servers, begun `age` ticks after the epoch.
WaitingTxn txn_on(uint64_t session, int age, std::vector<std::pair<int, int32_t>> servers,
                  bool busy = true) {
  WaitingTxn t;
  t.session = session;
  t.began = std::chrono::steady_clock::time_point(std::chrono::seconds(age));
  t.busy = busy;
  t.servers = std::move(servers);
  return t;
}

}  // namespace

TEST_CASE("two transactions locking on two shards in opposite orders: the younger goes",
          "[deadlock]") {
  // T1 holds a row on s0 and waits on s1; T2 holds one on s1 and waits on s0.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 101}, {1, 201}})};
  std::vector<LockWait> waits{{0, 101, 100}, {1, 200, 201}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);
  CHECK(v[0].detail.find("across shards s0, s1") != std::string::npos);
  CHECK(v[0].detail.find("waited on shard s0") != std::string::npos);
  // The same cycle with T1 the younger: T1 goes.
  txns[0].began = std::chrono::steady_clock::time_point(std::chrono::seconds(30));
  v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 1);
}

TEST_CASE("a cycle on one shard is PostgreSQL's to break; chains are not cycles", "[deadlock]") {
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 101}, {1, 201}})};
  CHECK(txn::find_victims(txns, {{0, 101, 100}, {0, 100, 101}}, kShards).empty());
  CHECK(txn::find_victims(txns, {{0, 101, 100}, {1, 201, 200}}, kShards).empty());
  CHECK(txn::find_victims(txns, {}, kShards).empty());
}

TEST_CASE("a cycle through backends pgshard does not know, over three shards", "[deadlock]") {
  // T1 waits for T2 on s1, T2 for T3 on s2, T3 for an unknown backend on s0 that waits for
  // T1 there (a one-shard transaction of another client, say).
  std::vector<WaitingTxn> txns{txn_on(1, 30, {{0, 100}, {1, 200}}),
                               txn_on(2, 10, {{1, 201}, {2, 300}}),
                               txn_on(3, 20, {{2, 301}, {0, 102}})};
  std::vector<LockWait> waits{{1, 200, 201}, {2, 300, 301}, {0, 102, 999}, {0, 999, 100}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 1);
  CHECK(v[0].detail.find("across shards s0, s1, s2") != std::string::npos);
}

TEST_CASE("only a running transaction on several shards can be the victim", "[deadlock]") {
  // T2, the younger, is not running a request (a stale view): T1 goes instead.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 101}, {1, 201}}, false)};
  std::vector<LockWait> waits{{0, 101, 100}, {1, 200, 201}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 1);
  // Nobody pgshard may cancel: no victim, and no endless search.
  txns[0].busy = false;
  CHECK(txn::find_victims(txns, waits, kShards).empty());
}

TEST_CASE("each of two separate cycles loses one transaction", "[deadlock]") {
  std::vector<WaitingTxn> txns{
      txn_on(1, 10, {{0, 100}, {1, 200}}), txn_on(2, 20, {{0, 101}, {1, 201}}),
      txn_on(3, 30, {{1, 202}, {2, 300}}), txn_on(4, 40, {{1, 203}, {2, 301}})};
  std::vector<LockWait> waits{{0, 101, 100}, {1, 200, 201}, {1, 203, 202}, {2, 300, 301}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 2);
  std::set<uint64_t> sessions{v[0].txn.session, v[1].txn.session};
  CHECK(sessions == std::set<uint64_t>{2, 4});
}

TEST_CASE("a shard that did not answer leaves its waits out: cycles among the others stand",
          "[deadlock]") {
  // T3 spans s0 and s2 and waits on s2, which did not answer (no waits of s2 at all). The
  // cycle of T1 and T2 on s0 and s1 is broken as if s2 were not there.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 101}, {1, 201}}),
                               txn_on(3, 30, {{0, 102}, {2, 300}})};
  std::vector<LockWait> waits{{0, 101, 100}, {1, 200, 201}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);
  // A cycle that needs a wait of the silent shard is not guessed at.
  CHECK(txn::find_victims(txns, {{0, 101, 100}}, kShards).empty());
}

namespace {

txn::PoolWait pool_wait(int shard, std::vector<int32_t> holders, bool spare = false) {
  return txn::PoolWait{shard, std::move(holders), spare};
}

}  // namespace

TEST_CASE("a lock on one shard and the only server of another form a cycle", "[deadlock]") {
  // A holds s0's only server (pid 100) and waits for B's row on s1; B holds that row and
  // waits for a server of s0.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}), txn_on(2, 20, {{1, 201}})};
  txns[1].pool_wait = pool_wait(0, {100});
  std::vector<LockWait> waits{{1, 200, 201}};
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);
  CHECK(v[0].detail.find("Lock and pool waits of 2 transactions") != std::string::npos);
  CHECK(v[0].detail.find("across shards s0, s1") != std::string::npos);
  CHECK(v[0].detail.find("waited on shard s0 for a pooled server") != std::string::npos);
  // A the younger: A goes (B then gets its server).
  txns[0].began = std::chrono::steady_clock::time_point(std::chrono::seconds(30));
  v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 1);
  // A server may come free without A (idle, room to open one, PAUSE): no deadlock.
  txns[1].pool_wait->spare = true;
  CHECK(txn::find_victims(txns, waits, kShards).empty());
}

TEST_CASE("a pool wait is an OR-wait: stuck only when every holder of the pool is", "[deadlock]") {
  // s0's pool has two servers: A's (100) and C's (101). B holds a row on s1 and waits for
  // either server. A waits for B's row.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}), txn_on(2, 20, {{1, 201}}),
                               txn_on(3, 15, {{0, 101}, {1, 202}}, false)};
  txns[1].pool_wait = pool_wait(0, {100, 101});
  std::vector<LockWait> waits{{1, 200, 201}};
  // C waits for nothing: it will finish and free its server, so nobody is cancelled.
  CHECK(txn::find_victims(txns, waits, kShards).empty());
  // A holder pgshard does not know (a one-shard transaction) that waits for nothing: same.
  txns.pop_back();
  CHECK(txn::find_victims(txns, waits, kShards).empty());
  // C, on s0 and s1, waits for B's row too (from its backend 203 on s1): every holder of
  // the pool is stuck, and so is B.
  waits.push_back({1, 203, 201});
  txns.push_back(txn_on(3, 15, {{0, 101}, {1, 203}}));
  auto v = txn::find_victims(txns, waits, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);  // the youngest; its going frees A and C both
  // C's wait is on a shard that did not answer: C may proceed, and so may B.
  waits.pop_back();
  CHECK(txn::find_victims(txns, waits, kShards).empty());
}

TEST_CASE("two pool waits on two shards form a cycle PostgreSQL never sees", "[deadlock]") {
  // A holds s0's only server and waits for s1's; B holds s1's and waits for s0's.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}}), txn_on(2, 20, {{1, 200}})};
  txns[0].pool_wait = pool_wait(1, {200});
  txns[1].pool_wait = pool_wait(0, {100});
  auto v = txn::find_victims(txns, {}, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);
  // A chain of pool waits is not a cycle.
  txns[0].pool_wait.reset();
  CHECK(txn::find_victims(txns, {}, kShards).empty());
}

TEST_CASE("pool waits on two workers: the holders of every worker are merged", "[deadlock]") {
  // A (worker 0) holds s0's only server and waits for s1's; B (worker 1) holds s1's and
  // waits for s0's. Each worker's pool lends nothing of the shard its client waits for:
  // alone, each wait has no holder and looks as if a server may come.
  int s0 = 0, s1 = 0;  // (the pools' identities)
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}}), txn_on(2, 20, {{1, 200}})};
  txns[0].worker = 0;
  txns[1].worker = 1;
  txns[0].pool_wait = txn::PoolWait{1, {}, false, &s1, 1};
  txns[1].pool_wait = txn::PoolWait{0, {}, false, &s0, 1};
  // What each worker reports of the pools waited for: its own holders.
  const std::vector<txn::PoolWait> seen{{0, {100}, false, &s0, 1},
                                        {1, {}, false, &s1, 1},
                                        {0, {}, false, &s0, 1},
                                        {1, {200}, false, &s1, 1}};
  auto unmerged = txns;
  txn::merge_pool_waits(unmerged, {});
  CHECK(unmerged[0].pool_wait->spare);  // (a server nobody holds: it may come)
  CHECK(txn::find_victims(unmerged, {}, kShards).empty());
  auto merged = txns;
  txn::merge_pool_waits(merged, seen);
  CHECK(merged[0].pool_wait->holders == std::vector<int32_t>{200});
  CHECK(merged[1].pool_wait->holders == std::vector<int32_t>{100});
  CHECK_FALSE(merged[0].pool_wait->spare);
  auto v = txn::find_victims(merged, {}, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);  // the younger
  // A server of s1 that no worker lists as lent (idle, opening, on its way to a worker) may
  // end A's wait: no deadlock.
  auto spare = seen;
  spare[3].servers = 2;
  merged = txns;
  txn::merge_pool_waits(merged, spare);
  CHECK(merged[0].pool_wait->spare);
  CHECK(txn::find_victims(merged, {}, kShards).empty());
  // Nor when a worker says one may come there (an idle server, PAUSE, room to open one).
  spare = seen;
  spare[1].spare = true;
  merged = txns;
  txn::merge_pool_waits(merged, spare);
  CHECK(txn::find_victims(merged, {}, kShards).empty());
}

TEST_CASE("a transaction that moved on while the waits were read is left out of the graph",
          "[deadlock]") {
  // Listed first: W on (s0 100, s1 200), X on (s0 300, s1 400). Then W commits and its s1
  // server (200) goes to V, which waits there for X; X waits on s0 for W's old row (100,
  // now in another transaction). Read together, W and X seem to form a cycle; W is no
  // longer the transaction listed (a later request): its servers are unknown backends.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 300}, {1, 400}})};
  const std::vector<LockWait> waits{{0, 300, 100}, {1, 200, 400}};
  REQUIRE(txn::find_victims(txns, waits, kShards).size() == 1);  // the false cycle
  auto later = txns;
  later[0].request += 1;
  txn::keep_unchanged(txns, later);
  REQUIRE(txns.size() == 1);
  CHECK(txns[0].session == 2);
  CHECK(txn::find_victims(txns, waits, kShards).empty());
  // Unchanged transactions stay, also when the second list orders them differently.
  std::vector<WaitingTxn> both{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 300}, {1, 400}})};
  const std::vector<WaitingTxn> reversed{both[1], both[0]};
  txn::keep_unchanged(both, reversed);
  CHECK(both.size() == 2);
  // A transaction on other servers now (one handed back, another taken) is left out too.
  auto moved = reversed;
  moved[0].servers = {{0, 300}, {1, 401}};
  txn::keep_unchanged(both, moved);
  REQUIRE(both.size() == 1);
  CHECK(both[0].session == 1);
}

TEST_CASE("an autocommit statement on several shards is a victim like a transaction",
          "[deadlock]") {
  // S (a statement outside a transaction block, the younger) holds rows on s0 and s1 and
  // waits on s0 for T; T waits on s1 for S. S goes, and its DETAIL names a statement.
  std::vector<WaitingTxn> txns{txn_on(1, 10, {{0, 100}, {1, 200}}),
                               txn_on(2, 20, {{0, 101}, {1, 201}})};
  txns[1].statement = true;
  auto v = txn::find_victims(txns, {{0, 101, 100}, {1, 200, 201}}, kShards);
  REQUIRE(v.size() == 1);
  CHECK(v[0].txn.session == 2);
  CHECK(v[0].txn.statement);
  CHECK(v[0].detail.find("this statement waited on shard s0") != std::string::npos);
}
