// When the periodic two-phase commit recovery pass has work (and logs in to the shards):
// DecisionLog::needs_recovery and txn::RecoveryRounds, with no shard to connect to.
#include "proxy/txn/recovery.hpp"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <string>

#include "proxy/runtime/decision_log.hpp"

using pgshard::runtime::DecisionLog;
using pgshard::txn::RecoveryResult;
using pgshard::txn::RecoveryRounds;

namespace {

struct TempLog {
  std::string dir;
  DecisionLog log;
  TempLog() {
    char path[] = "/tmp/pgshard-recovery-test-XXXXXX";
    REQUIRE(mkdtemp(path));
    dir = path;
    std::string err;
    REQUIRE(log.open(dir, &err));
  }
  ~TempLog() { std::filesystem::remove_all(dir); }
};

const auto kLater = std::chrono::steady_clock::now() + std::chrono::hours(1);

}  // namespace

TEST_CASE("an idle decision log needs no recovery pass; commits in flight neither", "[recovery]") {
  TempLog t;
  CHECK_FALSE(t.log.needs_recovery());
  // A session committing: decided and live, then finished everywhere.
  t.log.begin("g1");
  CHECK(t.log.commit("g1"));
  t.log.done("g1");
  t.log.end("g1");
  CHECK_FALSE(t.log.needs_recovery());
}

TEST_CASE("a decided commit not finished everywhere needs passes until it is", "[recovery]") {
  TempLog t;
  t.log.begin("g1");
  CHECK(t.log.commit("g1"));
  t.log.end("g1");  // a COMMIT PREPARED failed: no done()
  CHECK(t.log.needs_recovery());
  t.log.settle(kLater);  // settling is for undecided ones only
  CHECK(t.log.needs_recovery());
  t.log.done("g1");
  CHECK_FALSE(t.log.needs_recovery());
}

TEST_CASE("a transaction that ended undecided needs passes until settled", "[recovery]") {
  // Rolled back, or the session gave up: a participant may still be prepared.
  TempLog t;
  t.log.begin("g1");
  CHECK_FALSE(t.log.needs_recovery());  // live: its session finishes it
  t.log.end("g1");
  CHECK(t.log.needs_recovery());
  t.log.settle(std::chrono::steady_clock::now() - std::chrono::hours(1));  // ended later
  CHECK(t.log.needs_recovery());
  t.log.settle(kLater);
  CHECK_FALSE(t.log.needs_recovery());
}

TEST_CASE("recovery rounds run a pass only when it may have work", "[recovery]") {
  TempLog t;
  pgshard::config::Config cfg;  // no shard: a pass connects nowhere and finds nothing
  SECTION("idle after a complete start-up pass: only the sweep") {
    RecoveryRounds rounds{RecoveryResult{}};
    for (int i = 1; i < RecoveryRounds::kSweepEvery; ++i) CHECK_FALSE(rounds.round(cfg, t.log));
    CHECK(rounds.round(cfg, t.log));
    CHECK_FALSE(rounds.round(cfg, t.log));
  }
  SECTION("a start-up pass that missed a shard: the next round runs") {
    RecoveryRounds rounds{RecoveryResult{.errors = 1}};
    CHECK(rounds.round(cfg, t.log));
    CHECK_FALSE(rounds.round(cfg, t.log));  // that one was complete
  }
  SECTION("a decided commit left unfinished: rounds run until it is done") {
    RecoveryRounds rounds{RecoveryResult{}};
    t.log.begin("g1");
    CHECK(t.log.commit("g1"));
    t.log.end("g1");
    CHECK(rounds.round(cfg, t.log));  // (no shard holds it prepared: done)
    CHECK_FALSE(t.log.needs_recovery());
    CHECK_FALSE(rounds.round(cfg, t.log));
  }
  SECTION("an undecided end: rounds run for the settling time") {
    RecoveryRounds rounds{RecoveryResult{}};
    t.log.begin("g1");
    t.log.end("g1");
    CHECK(rounds.round(cfg, t.log));
    CHECK(rounds.round(cfg, t.log));  // a PREPARE may still land
    t.log.settle(kLater);
    CHECK_FALSE(rounds.round(cfg, t.log));
  }
}
