// Every host of every shard (primary and replicas), checked on a connection of its own every
// health.interval: reachable, in recovery or not, its WAL position and timeline, and for
// replicas how far behind their primary they replay (bytes and time). What routing asks of
// replicas — which may serve a read now — and where each shard's writes go (the one host out
// of recovery: failover) are answered from the last checks (HostHealth); check_hosts runs them.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "proxy/asio.hpp"

namespace pgshard::runtime {

struct Shared;

enum class HostRole : uint8_t { kUnknown, kPrimary, kReplica };
const char* to_string(HostRole r);

// Where a read that could have gone to a replica went (HostHealth::count_read).
enum class ReadCount : uint8_t {
  kReplica,           // to a replica
  kPrimary,           // to the primary, as read_from / read_consistency ask
  kFallback,          // to the primary: read_from replicas, but no replica was up (degraded)
  kWaitedForReplica,  // to the primary after read_your_writes.wait for a replica to catch up
};

// What one check of a host found (parsed from its answer to kHealthCheckSql).
struct CheckResult {
  bool in_recovery = false;
  uint64_t lsn = 0;       // primary: WAL insert position; replica: replay position
  int64_t lag_ms = 0;     // replica: how long ago it replayed the newest commit it has received
  uint64_t system = 0;    // pg_control_system().system_identifier
  uint32_t timeline = 0;  // the timeline it writes (primary) or replays (replica); 0: unknown
  Clock::time_point started{};  // when the check was sent (set by the checker)
};
// The check's statement and reading its one row (nullopt: not the row it asks for).
extern const char* const kHealthCheckSql;
std::optional<CheckResult> parse_check_row(std::string_view data_row_body);

// Which host of a shard takes its writes, from what the last checks saw of each (in the
// shard's host order: 0 the map's primary, then its replicas). The host out of recovery;
// when none is, the current one stays (a primary that died and nothing promoted yet). Two or
// more out of recovery are two primaries: the one on the highest timeline wins (a promoted
// replica over its old primary back from the dead); when the highest is shared or a
// timeline is unknown, `rivals` names them and the shard's writes are refused.
struct WriterCandidate {
  bool up = false;
  HostRole role = HostRole::kUnknown;
  uint32_t timeline = 0;
};
struct WriterChoice {
  int host = 0;
  std::vector<int> rivals;  // two or more: no writer (split brain)
  bool operator==(const WriterChoice&) const = default;
};
WriterChoice choose_writer(const std::vector<WriterCandidate>& hosts, int current);

// Where a shard's writes go now: its host `host` (Shard::host), or nowhere when `refusal`
// says why (two primaries).
struct Writer {
  int host = 0;
  std::string refusal;
};

// One host of a shard as its last check saw it.
struct HostState {
  int shard = 0;
  std::string shard_name;
  std::string host;
  uint16_t port = 0;
  bool listed_primary = false;  // the map's primary (else one of its replicas)
  bool up = false;              // its last check answered
  HostRole role = HostRole::kUnknown;
  uint64_t lsn = 0;
  int64_t lag_bytes = -1;  // replica: its primary's position minus its own (-1: unknown)
  int64_t lag_ms = -1;     // replica (-1: unknown)
  bool lagging = false;    // past max_replica_lag: no reads until back under it
  // Replica: since when its replay position has stood still while its primary's was ahead
  // (a replica streaming from nothing reports no time behind: it has nothing to replay).
  Clock::time_point stuck_since{};
  uint64_t stuck_lsn = 0;
  uint64_t system = 0;               // system identifier (a replica of its primary has the same)
  uint32_t timeline = 0;             // 0: unknown
  bool writes = false;               // the shard's writes go here (failover follows the checks)
  bool refused = false;              // the shard's writes are refused (two primaries)
  uint64_t failovers = 0;            // the shard's: times its writes moved to another host
  Clock::time_point banned_until{};  // failed a check: no reads until then
  Clock::time_point checked_at{};
  // When the last answered check was sent: a primary's `lsn` covers every commit that
  // finished before it (read-your-writes).
  Clock::time_point check_started{};
  // Reads routed here (replicas; on a primary's row: reads that could have gone to a
  // replica but stayed on the primary, and of those the fallbacks and read-your-writes waits).
  uint64_t reads = 0, fallbacks = 0, waited = 0;
  bool wanted = false;  // a read waits on this shard: check again now, not after the interval
  uint64_t checks = 0, failures = 0;
  uint64_t bans = 0;  // times it was banned (a failed check) or turned lagging
  std::string error;  // why the last check failed ("" when it answered)
};

// What a host's last check makes of it at `now`, as SHOW HOSTS, /metrics and the dashboard
// show it: unchecked, down, banned, lagging or up.
const char* state_of(const HostState& h, Clock::time_point now);

class HostHealth {
 public:
  // The hosts of `cfg`'s shards: each shard's primary first, then its replicas. Hosts that
  // stay (same shard, host and port) keep what was seen of them.
  void configure(const config::Config& cfg);
  std::vector<HostState> snapshot() const;
  std::size_t size() const;
  // Host `index` of the snapshot's order answered `r` at `now`, or failed with `error`.
  void record(std::size_t index, const CheckResult& r, Clock::time_point now,
              const config::Replication& limits);
  void record_failure(std::size_t index, std::string error, Clock::time_point now,
                      const config::Replication& limits);
  // Whether host `index` (a replica) may serve reads at `now`: up, in recovery, within the
  // lag limits, not banned.
  bool readable(std::size_t index, Clock::time_point now) const;

  // ---- what reads ask (any worker's thread) ----
  // The replicas of `shard` a read may go to at `now` (readable) that have replayed at
  // least `min_lsn` (0: any), as indexes among the shard's replicas in map order, into `out`.
  // Returns whether any replica of the shard is up at all (else reads fall back to the
  // primary as a degraded shard's, counted).
  bool readable_replicas(int shard, uint64_t min_lsn, Clock::time_point now,
                         std::vector<int>& out) const;
  // The WAL position of `shard`'s primary as a check sent after `since` saw it: it covers
  // every commit finished by `since`. nullopt when no such check has answered yet; then the
  // shard's hosts are checked at once (want_checks).
  std::optional<uint64_t> primary_position_since(int shard, Clock::time_point since);
  // A read waits on `shard`: its hosts are checked again now rather than after the interval.
  void want_checks(int shard);
  // A read that could have gone to a replica of `shard` went to replica `replica` (its index
  // among the shard's replicas) or to the primary (-1), as `how` says.
  void count_read(int shard, int replica, ReadCount how);
  // Whether host `index` should be checked now (and the wish is taken).
  bool take_wanted(std::size_t index);
  // Replica `replica` of `shard` (its index among the shard's replicas) could not give a
  // server to a read: it is kept from reads for ban_time, as a failed check keeps it.
  void ban_replica(int shard, int replica, std::string error, Clock::time_point now,
                   const config::Replication& limits);

  // ---- where writes go (failover) ----
  // The host of `shard` that takes its writes now (the map's primary until checks say
  // otherwise, and when nothing is checked).
  Writer writer(int shard) const;
  // Changes whenever some shard's writer changes (or its writes become refused or allowed):
  // pools compare it on each checkout and ask writer() again when it moved.
  const std::atomic<uint64_t>& moves() const { return moves_; }

 private:
  // `shard`'s writer from its hosts' last checks (under mu_); logs and counts a change.
  void decide_writer(int shard);
  // A replica behind its primary whose replay position stands still: its time behind is at
  // least how long it has stood (under mu_).
  static void note_stuck(HostState& h);
  // The host that takes `shard`'s writes (under mu_; null for a shard not configured).
  HostState* writer_host(int shard);
  struct ShardWriter {
    std::string name;
    int host = 0;
    std::string refusal;
    uint64_t failovers = 0;
    // A check has seen the writer out of recovery. Until then `host` is the map's primary by
    // assumption, and finding the primary elsewhere (a Patroni leader that is not the host the
    // map lists first) is no failover.
    bool found = false;
  };
  std::vector<ShardWriter> writers_;
  std::atomic<uint64_t> moves_{0};
  // Replicas' lag from their shard's primary's last position (under mu_).
  void update_lag(int shard, const config::Replication& limits);
  mutable std::mutex mu_;
  std::vector<HostState> hosts_;
};

// Checks every host of the map in force every health.interval, on `ex`
// (one coroutine per host), for as long as `ex` runs. Only when some shard lists replicas.
void start_health_checks(Shared& shared, asio::any_io_executor ex);

}  // namespace pgshard::runtime
