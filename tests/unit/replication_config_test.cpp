// The shard map's replica settings: defaults that keep every read on the primary, each key
// read, the user > shard > map order of read_from, and file:line errors for bad values.
#include <catch2/catch.hpp>

#include "config/config.hpp"

using namespace pgshard::config;

namespace {

const char* kBase = R"(users:
  - { name: app, password: secret }
  - { name: reporting, password: secret, read_from: replicas }
shards:
  - name: s0
    primary: postgres://app:secret@10.0.0.1/app
    replicas: [postgres://app:secret@10.0.0.2/app, postgres://app:secret@10.0.0.3/app]
    read_from: prefer_replicas
  - { name: s1, primary: postgres://app:secret@10.0.1.1/app }
)";

std::string error_of(const std::string& yaml) {
  try {
    load_string(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("without replica settings every read stays on the primary", "[config][replicas]") {
  auto c = load_string(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0, primary: postgres://h/app, replicas: [postgres://r/app] }]
)",
                       "t.yaml");
  CHECK(c->replication.read_from == ReadFrom::kPrimary);
  CHECK(c->read_from(c->users[0], 0) == ReadFrom::kPrimary);
  CHECK(c->replication.consistency == ReadConsistency::kSession);
  CHECK(c->replication.load_balance == LoadBalance::kRoundRobin);
  CHECK(c->replication.health_interval == Millis{1000});
  CHECK(c->replication.max_lag_bytes == 0);
  CHECK(c->replication.read_your_writes_wait == Millis{20});
}

TEST_CASE("read_from: the user's over the shard's over the map's", "[config][replicas]") {
  auto c = load_string(std::string(kBase) + "read_from: replicas\n", "t.yaml");
  CHECK(c->read_from(c->users[0], 0) == ReadFrom::kPreferReplicas);  // the shard's
  CHECK(c->read_from(c->users[0], 1) == ReadFrom::kReplicas);        // the map's
  CHECK(c->read_from(c->users[1], 0) == ReadFrom::kReplicas);        // the user's
  CHECK(c->shards[0].replicas.size() == 2);
}

TEST_CASE("every replica setting is read", "[config][replicas]") {
  auto c = load_string(std::string(kBase) + R"(load_balance: least_active
read_consistency: eventual
health: { interval: 250ms, timeout: 2s, ban_time: 30s }
max_replica_lag: { bytes: 1048576, time: 5s }
read_your_writes: { wait: 50ms }
)",
                       "t.yaml");
  const auto& r = c->replication;
  CHECK(r.load_balance == LoadBalance::kLeastActive);
  CHECK(r.consistency == ReadConsistency::kEventual);
  CHECK(r.health_interval == Millis{250});
  CHECK(r.health_timeout == Millis{2000});
  CHECK(r.ban_time == Millis{30000});
  CHECK(r.max_lag_bytes == 1048576);
  CHECK(r.max_lag_time == Millis{5000});
  CHECK(r.read_your_writes_wait == Millis{50});
  CHECK(std::string(to_string(r.load_balance)) == "least_active");
  CHECK(std::string(to_string(r.consistency)) == "eventual");
  CHECK(std::string(to_string(ReadFrom::kPreferReplicas)) == "prefer_replicas");
}

TEST_CASE("bad replica settings are refused with their line", "[config][replicas]") {
  CHECK(error_of(std::string(kBase) + "read_from: sometimes\n") ==
        "t.yaml:10: read_from must be one of primary, replicas, prefer_replicas, got 'sometimes'");
  CHECK(error_of(std::string(kBase) + "health: { interval: 1ms }\n")
            .starts_with("t.yaml:10: health.interval must be a duration from 50ms"));
  CHECK(error_of(std::string(kBase) + "health: { every: 1s }\n") ==
        "t.yaml:10: unknown key 'every' in health");
  CHECK(error_of(std::string(kBase) + "max_replica_lag: { bytes: -1 }\n")
            .starts_with("t.yaml:10: max_replica_lag.bytes must be an integer"));
  CHECK(error_of(std::string(kBase) + "read_consistency: linearizable\n")
            .starts_with("t.yaml:10: read_consistency must be one of session, eventual, strong"));
  // A shard that must read from replicas needs some.
  CHECK(error_of(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0, primary: postgres://h/app, read_from: replicas }]
)") == "t.yaml:2: shard s0: read_from replicas needs replicas");
  CHECK(error_of(R"(users: [{ name: app, password: secret, read_from: all }]
shards: [{ name: s0, primary: postgres://h/app }]
)")
            .starts_with("t.yaml:1: user read_from must be one of"));
}

TEST_CASE("hosts: is primary then replicas; mixing both spellings is refused",
          "[config][replicas][failover]") {
  auto c = load_string(R"(users: [{ name: app, password: secret }]
shards:
  - { name: s0, hosts: [postgres://a/app, "postgres://b:5433/app", postgres://c/app],
      read_from: replicas }
  - { name: s1, hosts: [postgres://d/app] }
)",
                       "t.yaml");
  const auto& s0 = c->shards[0];
  CHECK(s0.primary.host == "a");
  REQUIRE(s0.replicas.size() == 2);
  CHECK((s0.replicas[0].host == "b" && s0.replicas[0].port == 5433));
  CHECK(s0.host_count() == 3);
  CHECK(s0.host(0).host == "a");
  CHECK(s0.host(2).host == "c");
  CHECK((c->shards[1].primary.host == "d" && c->shards[1].replicas.empty()));
  CHECK(error_of(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0, primary: postgres://a/app, hosts: [postgres://b/app] }]
)") == "t.yaml:2: shard s0: give either hosts or primary/replicas, not both");
  CHECK(error_of(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0, replicas: [postgres://a/app], hosts: [postgres://b/app] }]
)") == "t.yaml:2: shard s0: give either hosts or primary/replicas, not both");
  CHECK(error_of(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0, hosts: [] }]
)") == "t.yaml:2: shard s0: hosts must be a non-empty list of URLs");
  CHECK(error_of(R"(users: [{ name: app, password: secret }]
shards: [{ name: s0 }]
)") == "t.yaml:2: shard s0 needs a primary URL (or hosts)");
}
