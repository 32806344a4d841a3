// Host health without a network: reading the check's row, replicas' lag from their
// primary's position, the lag limits, bans after a failed check, and what a reload keeps.
#include "proxy/runtime/health.hpp"

#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "protocol/messages.hpp"

using namespace pgshard;
using runtime::CheckResult;
using runtime::HostHealth;
using runtime::HostRole;

namespace {

std::shared_ptr<const config::Config> two_replicas(const std::string& extra = "") {
  return config::load_string(R"(users: [{ name: app, password: secret }]
shards:
  - { name: s0, primary: postgres://p0/app, replicas: [postgres://r1/app, postgres://r2:5433/app] }
  - { name: s1, primary: postgres://p1/app }
)" + extra,
                             "t.yaml");
}

std::string row(std::vector<protocol::Value> values) {
  protocol::DataRow r;
  r.values.assign(values.begin(), values.end());
  std::string out;
  r.write(out);
  return out.substr(5);  // the body
}

CheckResult primary_at(uint64_t lsn) {
  return {false, lsn, 0, 7};
}
CheckResult replica_at(uint64_t lsn, int64_t lag_ms = 0) {
  return {true, lsn, lag_ms, 7};
}

}  // namespace

TEST_CASE("health: the check's row is read, anything else is not", "[health]") {
  auto r = runtime::parse_check_row(row({"t", "50331648", "120", "7301234567890123456", "3"}));
  REQUIRE(r);
  CHECK(r->in_recovery);
  CHECK(r->lsn == 50331648);
  CHECK(r->lag_ms == 120);
  CHECK(r->system == 7301234567890123456ull);
  CHECK(r->timeline == 3);
  CHECK(runtime::parse_check_row(row({"f", "1", "-5", "1", "1"}))->lag_ms == 0);  // clock skew
  CHECK(runtime::parse_check_row(row({"f", "1", "0", "1", std::nullopt}))->timeline == 0);
  CHECK_FALSE(runtime::parse_check_row(row({"t", "x", "0", "1", "1"})));
  CHECK_FALSE(runtime::parse_check_row(row({"t", std::nullopt, "0", "1", "1"})));
  CHECK_FALSE(runtime::parse_check_row(row({"t", "1", "0", "1"})));
  CHECK_FALSE(runtime::parse_check_row("garbage"));
}

TEST_CASE("health: hosts in map order, replicas' lag from their primary", "[health]") {
  auto cfg = two_replicas();
  HostHealth h;
  h.configure(*cfg);
  auto hosts = h.snapshot();
  REQUIRE(hosts.size() == 4);
  CHECK((hosts[0].host == "p0" && hosts[0].listed_primary));
  CHECK((hosts[1].host == "r1" && !hosts[1].listed_primary && hosts[1].shard == 0));
  CHECK((hosts[2].host == "r2" && hosts[2].port == 5433));
  CHECK((hosts[3].host == "p1" && hosts[3].shard == 1));
  const auto now = Clock::now();
  // Unchecked hosts serve nothing.
  CHECK_FALSE(h.readable(1, now));
  h.record(1, replica_at(900), now, cfg->replication);
  CHECK(h.snapshot()[1].lag_bytes == -1);  // the primary's position is not known yet
  h.record(0, primary_at(1000), now, cfg->replication);
  hosts = h.snapshot();
  CHECK(hosts[0].role == HostRole::kPrimary);
  CHECK(hosts[1].role == HostRole::kReplica);
  CHECK(hosts[1].lag_bytes == 100);
  CHECK(h.readable(1, now));                             // no limits: any lag serves
  CHECK_FALSE(h.readable(0, now));                       // the primary is not a replica
  h.record(2, replica_at(1200), now, cfg->replication);  // ahead of the last primary check
  CHECK(h.snapshot()[2].lag_bytes == 0);
}

TEST_CASE("health: past either lag limit a replica serves no reads until back under", "[health]") {
  auto cfg = two_replicas("max_replica_lag: { bytes: 100, time: 2s }\n");
  HostHealth h;
  h.configure(*cfg);
  const auto now = Clock::now();
  h.record(0, primary_at(1000), now, cfg->replication);
  h.record(1, replica_at(899), now, cfg->replication);
  CHECK(h.snapshot()[1].lagging);
  CHECK_FALSE(h.readable(1, now));
  h.record(1, replica_at(900), now, cfg->replication);
  CHECK(h.readable(1, now));
  h.record(1, replica_at(1000, 2001), now, cfg->replication);  // time behind
  CHECK_FALSE(h.readable(1, now));
  h.record(1, replica_at(1000, 0), now, cfg->replication);
  CHECK(h.readable(1, now));
  // The primary moving on makes the replica lag without a check of its own.
  h.record(0, primary_at(5000), now, cfg->replication);
  CHECK_FALSE(h.readable(1, now));
}

TEST_CASE(
    "health: a failed check bans the host for ban_time; a promoted replica is no "
    "replica",
    "[health]") {
  auto cfg = two_replicas("health: { ban_time: 5s }\n");
  HostHealth h;
  h.configure(*cfg);
  const auto now = Clock::now();
  h.record(0, primary_at(10), now, cfg->replication);
  h.record(1, replica_at(10), now, cfg->replication);
  h.record_failure(1, "connection refused", now, cfg->replication);
  auto r1 = h.snapshot()[1];
  CHECK_FALSE(r1.up);
  CHECK(r1.failures == 1);
  CHECK(r1.error == "connection refused");
  CHECK_FALSE(h.readable(1, now + std::chrono::seconds(1)));
  // Answering again does not lift the ban before its time.
  h.record(1, replica_at(10), now + std::chrono::seconds(1), cfg->replication);
  CHECK_FALSE(h.readable(1, now + std::chrono::seconds(1)));
  CHECK(h.readable(1, now + std::chrono::seconds(6)));
  CHECK(h.snapshot()[1].error.empty());
  h.record(1, primary_at(10), now + std::chrono::seconds(6), cfg->replication);
  CHECK_FALSE(h.readable(1, now + std::chrono::seconds(6)));
}

TEST_CASE("health: configuring again keeps what was seen of hosts that stay", "[health]") {
  auto cfg = two_replicas();
  HostHealth h;
  h.configure(*cfg);
  h.record(2, replica_at(10), Clock::now(), cfg->replication);
  h.configure(*cfg);
  CHECK(h.snapshot()[2].checks == 1);
  CHECK(h.size() == 4);
}

namespace {

using runtime::WriterCandidate;
using runtime::WriterChoice;

WriterCandidate primary_on(uint32_t timeline) {
  return {true, HostRole::kPrimary, timeline};
}
WriterCandidate standby() {
  return {true, HostRole::kReplica, 1};
}
WriterCandidate down() {
  return {false, HostRole::kPrimary, 1};  // (what its last answer said, before it died)
}

}  // namespace

TEST_CASE("failover: the writer is the one host out of recovery", "[health][failover]") {
  using runtime::choose_writer;
  // One primary: it, wherever it is listed.
  CHECK(choose_writer({primary_on(1), standby(), standby()}, 0) == WriterChoice{0, {}});
  CHECK(choose_writer({down(), primary_on(2), standby()}, 0) == WriterChoice{1, {}});
  CHECK(choose_writer({standby(), standby(), primary_on(2)}, 1) == WriterChoice{2, {}});
  // None (the primary died, nothing promoted yet; nothing checked yet): the current stays.
  CHECK(choose_writer({down(), standby()}, 0) == WriterChoice{0, {}});
  CHECK(choose_writer({WriterCandidate{}, WriterCandidate{}}, 1) == WriterChoice{1, {}});
  // Two on the same timeline (a copy started without standby.signal): refused, both named.
  CHECK(choose_writer({primary_on(1), primary_on(1), standby()}, 0) == WriterChoice{0, {0, 1}});
  // ... or with a timeline unknown: nothing says which is newer.
  CHECK(choose_writer({primary_on(3), primary_on(0)}, 1) == WriterChoice{1, {0, 1}});
  // Different timelines: the promoted replica (higher) wins over its old primary back as a
  // primary, whichever was current.
  CHECK(choose_writer({primary_on(1), primary_on(2)}, 0) == WriterChoice{1, {}});
  CHECK(choose_writer({primary_on(1), primary_on(2)}, 1) == WriterChoice{1, {}});
  CHECK(choose_writer({primary_on(4), standby(), primary_on(3)}, 2) == WriterChoice{0, {}});
  // Three out of recovery, two sharing the highest timeline: those two are the rivals.
  CHECK(choose_writer({primary_on(2), primary_on(1), primary_on(2)}, 0) == WriterChoice{0, {0, 2}});
}

TEST_CASE("failover: checks move a shard's writes, count it, and refuse two primaries",
          "[health][failover]") {
  auto cfg = two_replicas();
  HostHealth h;
  // Before any configuration or check: the map's primary, never refused.
  CHECK(h.writer(0).host == 0);
  h.configure(*cfg);
  const auto now = Clock::now();
  auto primary_tl = [](uint64_t lsn, uint32_t tl) { return CheckResult{false, lsn, 0, 7, tl}; };
  auto replica_tl = [](uint64_t lsn, uint32_t tl) { return CheckResult{true, lsn, 0, 7, tl}; };
  // Nothing moves before every host of the shard has been checked once (at start, the first
  // host to answer out of recovery may not be the only one).
  h.record(2, primary_tl(100, 1), now, cfg->replication);
  CHECK(h.writer(0).host == 0);
  h.record(0, primary_tl(100, 1), now, cfg->replication);
  h.record(1, replica_tl(100, 1), now, cfg->replication);
  CHECK_FALSE(h.writer(0).refusal.empty());  // (p0 and r2 both primaries on timeline 1)
  h.record(2, replica_tl(100, 1), now, cfg->replication);
  CHECK(h.writer(0).refusal.empty());
  CHECK(h.snapshot()[0].failovers == 0);
  const auto moves = h.moves().load();
  CHECK(h.writer(0).host == 0);
  CHECK(h.snapshot()[0].writes);
  // The primary dies: writes stay with it until a replica is promoted.
  h.record_failure(0, "connection refused", now, cfg->replication);
  CHECK(h.writer(0).host == 0);
  CHECK(h.moves().load() == moves);
  auto promoted = primary_tl(200, 2);
  promoted.started = now;
  h.record(2, promoted, now, cfg->replication);
  CHECK(h.writer(0).host == 2);
  CHECK(h.writer(0).refusal.empty());
  CHECK(h.moves().load() != moves);
  auto hosts = h.snapshot();
  CHECK((!hosts[0].writes && hosts[2].writes && hosts[2].failovers == 1));
  CHECK(hosts[3].failovers == 0);  // (shard s1's)
  // Replicas' lag and read-your-writes positions follow the new primary.
  h.record(1, replica_tl(150, 2), now, cfg->replication);
  CHECK(h.snapshot()[1].lag_bytes == 50);
  CHECK(h.primary_position_since(0, now - std::chrono::seconds(1)) == 200u);
  // The old primary comes back as a primary on its old timeline: the promoted one stays.
  h.record(0, primary_tl(120, 1), now, cfg->replication);
  CHECK(h.writer(0).host == 2);
  CHECK(h.writer(0).refusal.empty());
  // Replica r1 promoted on the same timeline as r2: two primaries, writes refused.
  h.record(1, primary_tl(160, 2), now, cfg->replication);
  auto w = h.writer(0);
  CHECK(w.refusal.find("r1:5432") != std::string::npos);
  CHECK(w.refusal.find("r2:5433") != std::string::npos);
  CHECK(w.refusal.find("p0") == std::string::npos);
  CHECK_FALSE(h.snapshot()[2].writes);
  CHECK(h.snapshot()[2].refused);
  // One of them back in recovery: writes resume on the other, no failover counted.
  h.record(1, replica_tl(160, 2), now, cfg->replication);
  CHECK(h.writer(0).host == 2);
  CHECK(h.writer(0).refusal.empty());
  CHECK(h.snapshot()[2].failovers == 1);
}

TEST_CASE(
    "failover: a primary found on another host than the map's first at start is no failover; "
    "a move after it is one",
    "[health][failover]") {
  // A Patroni cluster: the map lists its servers in some order, the leader is wherever it is.
  auto cfg = two_replicas();
  HostHealth h;
  h.configure(*cfg);
  const auto now = Clock::now();
  auto primary_tl = [](uint64_t lsn, uint32_t tl) { return CheckResult{false, lsn, 0, 7, tl}; };
  auto replica_tl = [](uint64_t lsn, uint32_t tl) { return CheckResult{true, lsn, 0, 7, tl}; };
  // Still electing when pgshard starts: every host in recovery, nothing found.
  h.record(0, replica_tl(100, 1), now, cfg->replication);
  h.record(1, replica_tl(100, 1), now, cfg->replication);
  h.record(2, replica_tl(100, 1), now, cfg->replication);
  CHECK(h.writer(0).host == 0);
  const auto moves = h.moves().load();
  // r1 leads: the writes go there (the pools follow), and nothing failed over. (Before: a
  // failover counted, and "primary moved" logged, for every start whose map does not list
  // the leader first.)
  h.record(1, primary_tl(120, 1), now, cfg->replication);
  CHECK(h.writer(0).host == 1);
  CHECK(h.moves().load() != moves);
  CHECK(h.snapshot()[1].writes);
  CHECK(h.snapshot()[1].failovers == 0);
  // The leader dies and r2 is promoted: that is a failover.
  h.record_failure(1, "connection refused", now, cfg->replication);
  h.record(2, primary_tl(200, 2), now, cfg->replication);
  CHECK(h.writer(0).host == 2);
  CHECK(h.snapshot()[2].failovers == 1);
  // Found at once where the map says: no failover either, and none when nothing moves.
  HostHealth fresh;
  fresh.configure(*cfg);
  fresh.record(0, primary_tl(100, 1), now, cfg->replication);
  fresh.record(1, replica_tl(100, 1), now, cfg->replication);
  fresh.record(2, replica_tl(100, 1), now, cfg->replication);
  CHECK(fresh.writer(0).host == 0);
  CHECK(fresh.snapshot()[0].failovers == 0);
}

TEST_CASE("health: bans are counted when they begin, lagging when it begins", "[health]") {
  // /metrics' pgshard_host_bans_total: a ban extended by more failures, or a replica that
  // stays lagging over several checks, is one ban.
  auto cfg = two_replicas("health: { ban_time: 5s }\nmax_replica_lag: { bytes: 100 }\n");
  HostHealth h;
  h.configure(*cfg);
  const auto now = Clock::now();
  const auto later = [&](int s) { return now + std::chrono::seconds(s); };
  CHECK(runtime::state_of(h.snapshot()[1], now) == std::string("unchecked"));
  h.record(0, primary_at(1000), now, cfg->replication);
  h.record(1, replica_at(1000), now, cfg->replication);
  CHECK(runtime::state_of(h.snapshot()[1], now) == std::string("up"));
  CHECK(h.snapshot()[1].bans == 0);
  h.record_failure(1, "refused", later(1), cfg->replication);
  h.record_failure(1, "refused", later(2), cfg->replication);  // still banned: the same ban
  CHECK(h.snapshot()[1].bans == 1);
  CHECK(runtime::state_of(h.snapshot()[1], later(2)) == std::string("down"));
  h.record(1, replica_at(1000), later(3), cfg->replication);
  CHECK(runtime::state_of(h.snapshot()[1], later(3)) == std::string("banned"));
  h.record_failure(1, "refused", later(8), cfg->replication);  // the ban had ended: a new one
  CHECK(h.snapshot()[1].bans == 2);
  h.record(1, replica_at(1000), later(14), cfg->replication);
  h.record(0, primary_at(5000), later(14), cfg->replication);  // now 4000 bytes behind
  h.record(1, replica_at(1000), later(15), cfg->replication);
  CHECK(runtime::state_of(h.snapshot()[1], later(15)) == std::string("lagging"));
  CHECK(h.snapshot()[1].bans == 3);
  h.record(1, replica_at(5000), later(16), cfg->replication);
  CHECK(runtime::state_of(h.snapshot()[1], later(16)) == std::string("up"));
  h.record(0, primary_at(9000), later(17), cfg->replication);
  CHECK(h.snapshot()[1].bans == 4);
  CHECK(h.snapshot()[2].bans == 0);  // never checked
}

TEST_CASE("health: a replica on an older timeline than its primary serves no reads", "[health]") {
  // After a failover a replica still following the old primary (its timeline) shows data the
  // new primary may never have, with no lag in time and little in bytes.
  auto cfg = two_replicas();
  HostHealth h;
  h.configure(*cfg);
  const auto now = Clock::now();
  CheckResult primary{false, 1000, 0, 7, 4};
  h.record(0, primary, now, cfg->replication);
  h.record(1, CheckResult{true, 1000, 0, 7, 3}, now, cfg->replication);
  h.record(2, CheckResult{true, 1000, 0, 7, 4}, now, cfg->replication);
  CHECK_FALSE(h.readable(1, now));
  CHECK(h.snapshot()[1].lagging);
  CHECK(h.readable(2, now));
  // Once it replays the primary's timeline it serves again; an unknown timeline is no proof.
  h.record(1, CheckResult{true, 1000, 0, 7, 4}, now, cfg->replication);
  CHECK(h.readable(1, now));
  h.record(1, CheckResult{true, 1000, 0, 7, 0}, now, cfg->replication);
  CHECK(h.readable(1, now));
}

TEST_CASE("health: a replica whose replay stands still behind its primary is behind in time",
          "[health]") {
  // Before: a replica streaming from nothing (its primary's WAL never reaches it) reported
  // 0 ms behind, however old its data (attacker F5: stale reads for good).
  auto cfg = two_replicas("max_replica_lag: { time: 2s }\n");
  HostHealth h;
  h.configure(*cfg);
  const auto t0 = Clock::now();
  auto at = [&](int s) { return t0 + std::chrono::seconds(s); };
  h.record(0, primary_at(1000), at(0), cfg->replication);
  h.record(1, replica_at(1000), at(0), cfg->replication);  // caught up
  h.record(2, replica_at(1000), at(0), cfg->replication);
  h.record(0, primary_at(5000), at(1), cfg->replication);  // the primary moves on
  h.record(1, replica_at(1000), at(1), cfg->replication);  // replica 1 does not follow
  h.record(2, replica_at(3000), at(1), cfg->replication);  // replica 2 replays
  CHECK(h.readable(1, at(1)));                             // not yet 2 s
  h.record(1, replica_at(1000), at(4), cfg->replication);
  h.record(2, replica_at(4000), at(4), cfg->replication);
  CHECK(h.snapshot()[1].lag_ms >= 3000);
  CHECK_FALSE(h.readable(1, at(4)));
  CHECK(h.readable(2, at(4)));  // it replays: not stuck, whatever its lag in bytes
  CHECK(h.snapshot()[2].lag_ms == 0);
  // Back in step: no time behind again.
  h.record(1, replica_at(5000), at(5), cfg->replication);
  CHECK(h.snapshot()[1].lag_ms == 0);
  CHECK(h.readable(1, at(5)));
  // A caught-up replica of an idle primary a page header behind is not stuck.
  h.record(0, primary_at(5024), at(6), cfg->replication);
  h.record(2, replica_at(5000), at(6), cfg->replication);
  h.record(2, replica_at(5000), at(60), cfg->replication);
  CHECK(h.readable(2, at(60)));
}
