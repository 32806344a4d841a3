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
  auto r = runtime::parse_check_row(row({"t", "50331648", "120", "7301234567890123456"}));
  REQUIRE(r);
  CHECK(r->in_recovery);
  CHECK(r->lsn == 50331648);
  CHECK(r->lag_ms == 120);
  CHECK(r->system == 7301234567890123456ull);
  CHECK(runtime::parse_check_row(row({"f", "1", "-5", "1"}))->lag_ms == 0);  // clock skew
  CHECK_FALSE(runtime::parse_check_row(row({"t", "x", "0", "1"})));
  CHECK_FALSE(runtime::parse_check_row(row({"t", std::nullopt, "0", "1"})));
  CHECK_FALSE(runtime::parse_check_row(row({"t", "1", "0"})));
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
