// The visibility gate (runtime::VisibilityGate): readers and commit phases on overlapping shards
// exclude each other, disjoint ones do not, waiters are served in arrival order, and a wait
// is bounded.
#include "proxy/runtime/visibility_gate.hpp"

#include <catch2/catch.hpp>
#include <optional>

#include "proxy/runtime/cluster_gate.hpp"
#include "proxy/txn/snapshots.hpp"

using namespace pgshard;
using Gate = runtime::VisibilityGate;
using Mode = Gate::Mode;

namespace {

// Starts enter() as a coroutine on `ctx`; the result lands in `out` when it is granted.
void start(asio::io_context& ctx, Gate& gate, Mode mode, std::vector<int> shards,
           std::optional<Gate::Entered>& out,
           std::chrono::milliseconds limit = std::chrono::milliseconds(60000)) {
  asio::co_spawn(
      ctx,
      [&gate, mode, shards, &out, limit]() -> awaitable<void> {
        out = co_await gate.enter(mode, shards, limit);
      },
      asio::detached);
}

// Runs what is ready (an io_context that ran out of work stops until restarted).
void pump(asio::io_context& ctx) {
  ctx.restart();
  ctx.poll();
}

}  // namespace

TEST_CASE("visibility gate: a commit phase waits for reads on its shards, not on others",
          "[gate]") {
  asio::io_context ctx;
  Gate gate;
  std::optional<Gate::Entered> read, commit, other_commit, second_read;
  start(ctx, gate, Mode::kRead, {0, 1}, read);
  pump(ctx);
  REQUIRE(read);
  CHECK_FALSE(read->waited);
  start(ctx, gate, Mode::kCommit, {1, 2}, commit);
  start(ctx, gate, Mode::kCommit, {2}, other_commit);  // disjoint from the read
  pump(ctx);
  CHECK_FALSE(commit);
  REQUIRE(other_commit);
  CHECK_FALSE(other_commit->waited);
  // A read arriving after the waiting commit, on its shard, waits behind it (no starvation).
  start(ctx, gate, Mode::kRead, {1}, second_read);
  pump(ctx);
  CHECK_FALSE(second_read);
  read->hold.release();
  pump(ctx);
  REQUIRE(commit);
  CHECK(commit->waited);
  CHECK_FALSE(commit->forced);
  CHECK_FALSE(second_read);
  commit->hold.release();
  pump(ctx);
  REQUIRE(second_read);  // shard 2's other commit does not concern it
  CHECK(second_read->waited);
  CHECK(gate.commits_waited == 1);
  CHECK(gate.reads_waited == 1);
  CHECK(gate.forced == 0);
}

TEST_CASE("visibility gate: reads share, commit phases share", "[gate]") {
  asio::io_context ctx;
  Gate gate;
  std::optional<Gate::Entered> r1, r2, c1, c2;
  start(ctx, gate, Mode::kRead, {0, 1, 2}, r1);
  start(ctx, gate, Mode::kRead, {0, 1, 2}, r2);
  pump(ctx);
  CHECK((r1 && r2));
  r1->hold.release();
  r2->hold.release();
  start(ctx, gate, Mode::kCommit, {0, 1}, c1);
  start(ctx, gate, Mode::kCommit, {1, 2}, c2);
  pump(ctx);
  CHECK((c1 && c2));
  CHECK_FALSE(c1->waited);
}

TEST_CASE("visibility gate: a wait past its limit goes ahead and is counted", "[gate]") {
  asio::io_context ctx;
  Gate gate;
  std::optional<Gate::Entered> read, commit, late_read;
  start(ctx, gate, Mode::kRead, {0}, read);
  pump(ctx);
  start(ctx, gate, Mode::kCommit, {0}, commit, std::chrono::milliseconds(20));
  pump(ctx);
  CHECK_FALSE(commit);
  ctx.restart();
  ctx.run_for(std::chrono::milliseconds(200));
  REQUIRE(commit);
  CHECK(commit->forced);
  CHECK(gate.forced == 1);
  // The forced commit holds the shard: a new read waits for it.
  start(ctx, gate, Mode::kRead, {0}, late_read);
  pump(ctx);
  CHECK_FALSE(late_read);
  commit->hold.release();
  pump(ctx);
  CHECK(late_read);
}

TEST_CASE("visibility gate: a hold moved or destroyed releases once", "[gate]") {
  asio::io_context ctx;
  Gate gate;
  std::optional<Gate::Entered> read, commit;
  start(ctx, gate, Mode::kRead, {3}, read);
  pump(ctx);
  REQUIRE(read);
  {
    Gate::Hold moved = std::move(read->hold);
    CHECK_FALSE(read->hold.held());
    start(ctx, gate, Mode::kCommit, {3}, commit);
    pump(ctx);
    CHECK_FALSE(commit);
  }
  pump(ctx);
  REQUIRE(commit);
  commit->hold.release();
  commit->hold.release();  // a second release does nothing
}

TEST_CASE("visibility gate: commit phases are numbered, and asked for by shards and numbers",
          "[gate]") {
  asio::io_context ctx;
  Gate gate;
  CHECK(gate.first_unfinished() == 1);
  CHECK(gate.last_begun() == 0);
  std::optional<Gate::Entered> ab, bc;
  start(ctx, gate, Mode::kCommit, {0, 1}, ab);
  pump(ctx);
  REQUIRE(ab);
  start(ctx, gate, Mode::kCommit, {1, 2}, bc);
  pump(ctx);
  REQUIRE(bc);
  CHECK(gate.first_unfinished() == 1);  // commit 1 is still in progress
  CHECK(gate.last_begun() == 2);
  ab->hold.release();
  CHECK(gate.first_unfinished() == 2);
  bc->hold.release();
  CHECK(gate.first_unfinished() == 3);
  CHECK(gate.commits_between(1, 2, 0, 1));
  CHECK(gate.commits_between(1, 2, 2, 1));
  CHECK_FALSE(gate.commits_between(1, 2, 0, 2));  // no commit touched both
  CHECK_FALSE(gate.commits_between(2, 2, 0, 1));  // commit 1 is outside [2, 2]
  CHECK_FALSE(gate.commits_between(3, 9, 0, 1));  // none since
  CHECK_FALSE(gate.commits_between(2, 1, 1, 2));  // an empty range
}

TEST_CASE("snapshots: a commit on two shards between their snapshots is found", "[gate]") {
  // Commits (number: shards): 5: {0, 1}. The transaction read shard 0 with snapshot window
  // [from 5, to 5], then shard 1 later ([9, 9]): commit 5 may be invisible on 0 (it had not
  // finished when 0's statement went out) and is visible on 1.
  auto between = [](uint64_t from, uint64_t to, int a, int b) {
    const bool both = (a == 0 && b == 1) || (a == 1 && b == 0);
    return both && from <= 5 && 5 <= to;
  };
  txn::Snapshots s;
  s.sending(0, 5, true);
  CHECK(s.has(0));
  CHECK_FALSE(s.has(1));
  s.replied(5);
  CHECK_FALSE(s.fractured(between));  // one shard: nothing to compare
  s.sending(1, 9, true);
  CHECK_FALSE(s.fractured(between));  // its replies are not in yet
  s.replied(9);
  auto pair = s.fractured(between);
  REQUIRE(pair);
  CHECK(pair->first == 0);
  CHECK(pair->second == 1);

  // Commit 5 had finished before shard 0's statement went out (from 6): visible on both.
  txn::Snapshots later;
  later.sending(0, 6, true);
  later.replied(6);
  later.sending(1, 9, true);
  later.replied(9);
  CHECK_FALSE(later.fractured(between));

  // The first statement on shard 1 took no snapshot (SHOW, SET TRANSACTION): shard 1's
  // window stays open until one that does, read after commit 5 on shard 0 was skipped.
  txn::Snapshots show_first;
  show_first.sending(1, 2, false);  // SHOW on shard 1
  show_first.replied(2);
  show_first.sending(0, 3, true);  // SELECT on shard 0: [3, 4], before commit 5
  show_first.replied(4);
  CHECK_FALSE(show_first.fractured(between));
  show_first.sending(1, 6, true);  // SELECT on shard 1: its snapshot, after commit 5
  show_first.replied(6);
  CHECK(show_first.fractured(between));
  show_first.sending(1, 7, true);  // later statements change nothing
  show_first.replied(7);
  CHECK(show_first.fractured(between));

  // No commit had begun when the first shard's replies came (last_begun 0): still a
  // window, [1, 0] (before: 0 read as "no replies yet", the shard never compared).
  auto first_commit = [](uint64_t from, uint64_t to, int, int) { return from <= 1 && 1 <= to; };
  txn::Snapshots at_start;
  at_start.sending(0, 1, true);
  at_start.replied(0);
  at_start.sending(1, 1, true);
  at_start.replied(1);
  CHECK(at_start.fractured(first_commit));

  // Both shards read by one multi-shard statement under the gate: taken together.
  txn::Snapshots together;
  together.sending(0, 5, true, 42);
  together.sending(1, 5, true, 42);
  together.replied(9);
  CHECK_FALSE(together.fractured(between));
  together.clear();
  CHECK(together.empty());
}

TEST_CASE("the cluster gate's coordinator statement: one lock, in name order, with its bound",
          "[visibility]") {
  // Every instance locks the same tables in the same order whatever its map's order, so two
  // instances never wait on each other; a repeated shard is locked once; names are quoted.
  CHECK(runtime::coordinator_lock_sql(Mode::kRead, {"s2", "s0", "s2", "we\"ird"},
                                      std::chrono::milliseconds(2000)) ==
        "BEGIN; SET LOCAL lock_timeout = 2000; LOCK TABLE ONLY pgshard_gate.\"s0\", "
        "pgshard_gate.\"s2\", pgshard_gate.\"we\"\"ird\" IN SHARE MODE");
  // Commit phases share ROW EXCLUSIVE with each other; it conflicts with readers' SHARE.
  CHECK(runtime::coordinator_lock_sql(Mode::kCommit, {"b", "a"}, std::chrono::milliseconds(5)) ==
        "BEGIN; SET LOCAL lock_timeout = 5; LOCK TABLE ONLY pgshard_gate.\"a\", "
        "pgshard_gate.\"b\" IN ROW EXCLUSIVE MODE");
  CHECK(runtime::coordinator_setup_sql({"s0", "x\"y"}) ==
        "CREATE SCHEMA IF NOT EXISTS pgshard_gate; CREATE TABLE IF NOT EXISTS "
        "pgshard_gate.\"s0\" (); CREATE TABLE IF NOT EXISTS pgshard_gate.\"x\"\"y\" ()");
}
