// The process-wide accounting of a pool (pool::SharedPool) with no worker attached: the
// limit over every worker, the waiters' queue in the order they came, and reloads.
#include "proxy/pool/shared_pool.hpp"

#include <catch2/catch.hpp>

using pgshard::pool::SharedPool;

namespace {
// A slot for `worker` (true), else it queues.
bool reserve(SharedPool& p, int worker) {
  int donor = -1;
  return p.reserve_or_queue(worker, &donor);
}
}  // namespace

TEST_CASE(
    "slots up to the limit, then waiters; a closed server's slot goes to the longest waiter") {
  SharedPool p(2, 4);
  CHECK(reserve(p, 0));
  CHECK(reserve(p, 1));
  CHECK(p.total() == 2);
  CHECK_FALSE(p.has_room());
  // Workers 3, 1 and 3 again wait, in that order, whichever worker frees a slot.
  CHECK_FALSE(reserve(p, 3));
  CHECK_FALSE(reserve(p, 1));
  CHECK_FALSE(reserve(p, 3));
  CHECK(p.waiting() == 3);
  CHECK(p.release() == 3);
  CHECK(p.release() == 1);
  CHECK(p.total() == 2);  // (the slots changed hands, the count did not)
  CHECK(p.next_waiter() == 3);
  CHECK(p.waiting() == 0);
  // Nobody waits: a slot is freed.
  CHECK(p.release() == -1);
  CHECK(p.total() == 1);
  CHECK(reserve(p, 2));
  CHECK_FALSE(p.has_room());
}

TEST_CASE(
    "a waiter served on its own worker leaves the queue; a worker's others keep their place") {
  SharedPool p(1, 3);
  REQUIRE(reserve(p, 0));
  CHECK_FALSE(reserve(p, 1));
  CHECK_FALSE(reserve(p, 2));
  CHECK_FALSE(reserve(p, 1));
  p.unqueue(1);  // its newest place goes
  CHECK(p.waiting() == 2);
  CHECK(p.next_waiter() == 1);
  p.unqueue(1);  // (taken already: a hand-over is on its way, which finds no waiter)
  CHECK(p.next_waiter() == 2);
  CHECK(p.next_waiter() == -1);
}

TEST_CASE("a waiter is pointed at a worker holding idle servers") {
  SharedPool p(2, 4);
  int donor = -1;
  REQUIRE(p.reserve_or_queue(2, &donor));
  REQUIRE(p.reserve_or_queue(2, &donor));
  p.set_idle(2, 2, true);
  CHECK_FALSE(p.reserve_or_queue(0, &donor));
  CHECK(donor == 2);
  // Its own idle servers do not count (it would have lent one).
  p.set_idle(2, 0, false);
  p.set_idle(0, 1, false);
  CHECK_FALSE(p.reserve_or_queue(0, &donor));
  CHECK(donor == -1);
}

TEST_CASE("a reload's larger limit serves waiters; a smaller one frees slots until it fits") {
  SharedPool p(2, 2);
  REQUIRE(reserve(p, 0));
  REQUIRE(reserve(p, 1));
  CHECK_FALSE(reserve(p, 1));
  CHECK_FALSE(reserve(p, 0));
  CHECK_FALSE(reserve(p, 1));
  CHECK(p.set_limit(4) == std::vector<int>{1, 0});
  CHECK(p.total() == 4);
  CHECK(p.waiting() == 1);
  CHECK(p.set_limit(2).empty());
  CHECK(p.over_limit());
  // Over the limit, closed servers free their slots even though someone waits.
  CHECK(p.release() == -1);
  CHECK(p.release() == -1);
  CHECK_FALSE(p.over_limit());
  CHECK(p.release() == 1);
  CHECK(p.total() == 2);
}

TEST_CASE("RECONNECT starts a new generation for every worker") {
  SharedPool p(1, 2);
  const auto g = p.generation();
  p.new_generation();
  CHECK(p.generation() != g);
}
