// The process-wide accounting of a pool (pool::SharedPool) with no worker attached: the
// limit over every worker, the waiters' queue in the order they came, and reloads.
#include "proxy/pool/shared_pool.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "proxy/pool/pool.hpp"

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

// ---- a worker's Pool waiting for a server (no slot: every acquire queues) ----

namespace {
using pgshard::Clock;
using pgshard::pool::Pool;
using pgshard::pool::WaitPatience;
namespace asio = boost::asio;

struct Waited {
  std::string answer;  // the error acquire gave
  int patience_calls = 0;
  Clock::duration took{};
};

// A pool of shard s0 on one worker that never lends (limit 0), waits of 60 ms.
pgshard::pool::BackendTarget s0_target() {
  pgshard::pool::BackendTarget target;
  target.shard_name = "s0";
  return target;
}
struct NeverLending {
  asio::io_context io;
  SharedPool shared{0, 1};
  Pool pool{io.get_executor(),          0, shared, s0_target(), pgshard::config::Millis(60),
            pgshard::config::Millis(60)};
};

// One acquire on a pool that never lends (limit 0), its wait stopped after `stop_after`
// (0: never) and PAUSEd for `paused_for` first (0: not paused).
Waited wait_once(std::chrono::milliseconds stop_after, std::chrono::milliseconds paused_for = {}) {
  NeverLending never;
  auto& io = never.io;
  auto& pool = never.pool;
  pool.pause(paused_for.count() > 0);
  Waited out;
  asio::cancellation_signal stop;
  const auto began = Clock::now();
  asio::co_spawn(
      io,
      [&]() -> pgshard::awaitable<void> {
        auto got = co_await pool.acquire(
            stop.slot(), false,
            WaitPatience{pgshard::config::Millis(10), [&out] { ++out.patience_calls; }});
        if (auto* e = std::get_if<std::string>(&got)) out.answer = *e;
        out.took = Clock::now() - began;
      },
      asio::detached);
  asio::steady_timer resume(io, paused_for), stopper(io, stop_after);
  if (paused_for.count() > 0) resume.async_wait([&](auto) { pool.pause(false); });
  if (stop_after.count() > 0)
    stopper.async_wait([&](auto) { stop.emit(asio::cancellation_type::terminal); });
  io.run();
  return out;
}
}  // namespace

TEST_CASE("a wait for a server calls its patience once, past `after`, and keeps its deadline") {
  // Before: the client watch started with every wait, costing more than most waits.
  const auto long_wait = wait_once({});
  CHECK(long_wait.patience_calls == 1);
  CHECK(long_wait.answer.find("timed out after 60 ms") != std::string::npos);
  CHECK(long_wait.took >= std::chrono::milliseconds(60));
  CHECK(long_wait.took < std::chrono::milliseconds(60 + 10 + 40));  // not re-armed in full

  const auto short_wait = wait_once(std::chrono::milliseconds(3));
  CHECK(short_wait.patience_calls == 0);
  CHECK(short_wait.answer.find("the client left") != std::string::npos);

  const auto stopped_later = wait_once(std::chrono::milliseconds(30));
  CHECK(stopped_later.patience_calls == 1);
  CHECK(stopped_later.answer.find("the client left") != std::string::npos);

  // PAUSEd for 25 ms, then queued: one call over both waits.
  const auto paused = wait_once({}, std::chrono::milliseconds(25));
  CHECK(paused.patience_calls == 1);
  CHECK(paused.answer.find("timed out after 60 ms waiting") != std::string::npos);
}

TEST_CASE("a server given back serves its own worker's waiter unless one elsewhere waited long") {
  SharedPool p(1, 2);
  REQUIRE(reserve(p, 0));
  CHECK_FALSE(reserve(p, 1));  // the longest waiter, on the other worker
  CHECK_FALSE(reserve(p, 0));
  // Worker 0 gives a server back while the waiter on worker 1 has waited a moment only:
  // worker 0's own waiter gets it, with no hand-over between threads.
  CHECK(p.next_waiter(0) == 0);
  CHECK(p.waiting() == 1);
  CHECK_FALSE(reserve(p, 0));
  // Once the waiter elsewhere has waited kFairAfter, it comes first again.
  std::this_thread::sleep_for(SharedPool::kFairAfter + std::chrono::milliseconds(1));
  CHECK(p.next_waiter(0) == 1);
  CHECK(p.next_waiter(0) == 0);
  // A giver with no waiter of its own serves the longest one.
  CHECK_FALSE(reserve(p, 1));
  CHECK(p.next_waiter(0) == 1);
  CHECK(p.next_waiter(0) == -1);
}

TEST_CASE("waiters queued at different times each time out at their own deadline") {
  // The pool's one timer watches every waiter's deadline (no timer per wait): a later
  // waiter's deadline is re-armed once the earlier ones pass, a stopped one leaves at once.
  NeverLending never;
  auto& io = never.io;
  auto& pool = never.pool;
  const auto began = Clock::now();
  std::vector<Waited> out(4);
  std::vector<std::unique_ptr<asio::steady_timer>> starts;
  asio::cancellation_signal stop;
  for (std::size_t i = 0; i < out.size(); ++i) {
    starts.push_back(std::make_unique<asio::steady_timer>(io, std::chrono::milliseconds(20 * i)));
    starts.back()->async_wait([&, i](auto) {
      asio::co_spawn(
          io,
          [&, i]() -> pgshard::awaitable<void> {
            auto got = co_await pool.acquire(
                i == 3 ? stop.slot() : asio::cancellation_slot{}, false,
                WaitPatience{pgshard::config::Millis(10), [&out, i] { ++out[i].patience_calls; }});
            if (auto* e = std::get_if<std::string>(&got)) out[i].answer = *e;
            out[i].took = Clock::now() - began;
          },
          asio::detached);
    });
  }
  asio::steady_timer stopper(io, std::chrono::milliseconds(65));  // waiter 3 began at 60
  stopper.async_wait([&](auto) { stop.emit(asio::cancellation_type::terminal); });
  io.run();
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("waiter " << i);
    CHECK(out[i].answer.find("timed out after 60 ms") != std::string::npos);
    CHECK(out[i].patience_calls == 1);
    CHECK(out[i].took >= std::chrono::milliseconds(20 * i + 60));
    CHECK(out[i].took < std::chrono::milliseconds(20 * i + 60 + 40));
  }
  CHECK(out[3].answer.find("the client left") != std::string::npos);
  CHECK(out[3].patience_calls == 0);
  CHECK(out[3].took < std::chrono::milliseconds(60 + 40));
}
