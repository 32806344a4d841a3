// Reads on replicas and read-your-writes: see read_routing.hpp.
#include "proxy/session/read_routing.hpp"

#include <algorithm>
#include <limits>

namespace pgshard::session {

void ReadRouting::wrote(std::span<const int> shards, std::size_t shard_count, uint64_t request) {
  if (written_.size() < shard_count) written_.resize(shard_count);
  for (const int s : shards)
    if (s >= 0 && static_cast<std::size_t>(s) < written_.size()) {
      auto& w = written_[static_cast<std::size_t>(s)];
      if (w.request != request || !w.in_flight) w.in_flight_before = w.in_flight;
      w.request = request;
      // (An earlier write still unresolved stays so: this one's end, later, settles both.)
      w.in_flight = true;
    }
}

void ReadRouting::refused(int shard, uint64_t request) {
  if (shard < 0 || static_cast<std::size_t>(shard) >= written_.size()) return;
  auto& w = written_[static_cast<std::size_t>(shard)];
  if (w.in_flight && w.request == request) w.in_flight = w.in_flight_before;
}

bool ReadRouting::settle(runtime::HostHealth& hosts, int shard, bool in_flight,
                         Clock::time_point now) {
  if (static_cast<std::size_t>(shard) >= written_.size()) return true;
  auto& w = written_[static_cast<std::size_t>(shard)];
  if (w.in_flight) {
    // Its end is not seen while the client's request still owes replies: a pipelined read
    // may not overtake the write it follows.
    if (in_flight) return false;
    w.in_flight = false;
    w.unresolved = true;
    w.done_by = now;
  }
  if (w.unresolved) {
    const auto position = hosts.primary_position_since(shard, w.done_by);
    if (!position) return false;
    w.token = std::max(w.token, *position);
    w.unresolved = false;
  }
  return true;
}

std::optional<int> ReadRouting::target(const config::Config& cfg, const config::User& user,
                                       runtime::HostHealth& hosts, const Ask& ask) {
  const int shard = ask.shard;
  const auto& replicas = cfg.shards[static_cast<std::size_t>(shard)].replicas;
  const auto from = cfg.read_from(user, shard);
  const auto consistency = cfg.replication.consistency;
  if (replicas.empty() || from == config::ReadFrom::kPrimary ||
      consistency == config::ReadConsistency::kStrong)
    return shard;
  const bool session = consistency == config::ReadConsistency::kSession;
  if (session && ask.in_flight && static_cast<std::size_t>(shard) < written_.size() &&
      written_[static_cast<std::size_t>(shard)].in_flight) {
    // The write's replies are still coming: the primary answers in order.
    hosts.count_read(shard, -1, runtime::ReadCount::kPrimary);
    return shard;
  }
  if (session && !settle(hosts, shard, ask.in_flight, ask.now)) {
    // The write's position is not known yet (no check of the primary since it finished;
    // one runs now): no replica can be shown to have it, and waiting for a check and then
    // for a replica costs more than the primary's answer. The primary answers.
    hosts.count_read(shard, -1, runtime::ReadCount::kPrimary);
    return shard;
  }
  const uint64_t min_lsn = session && static_cast<std::size_t>(shard) < written_.size()
                               ? written_[static_cast<std::size_t>(shard)].token
                               : 0;
  candidates_.clear();
  const bool any_up = hosts.readable_replicas(shard, min_lsn, ask.now, candidates_);
  if (!candidates_.empty()) {
    const int replica = choose(cfg, shard, candidates_, ask);
    hosts.count_read(shard, replica, runtime::ReadCount::kReplica);
    return cfg.replica_target(shard, replica);
  }
  if (any_up && min_lsn > 0) {
    // A replica is up but has not replayed the session's write yet: wait for it a little.
    hosts.want_checks(shard);
    return std::nullopt;
  }
  // No replica may serve the read: the primary does. Under `replicas` that is a degraded
  // shard (counted as a fallback); under prefer_replicas it is what was asked for.
  hosts.count_read(shard, -1,
                   from == config::ReadFrom::kReplicas ? runtime::ReadCount::kFallback
                                                       : runtime::ReadCount::kPrimary);
  return shard;
}

int ReadRouting::give_up(runtime::HostHealth& hosts, int shard) {
  hosts.count_read(shard, -1, runtime::ReadCount::kWaitedForReplica);
  return shard;
}

int ReadRouting::choose(const config::Config& cfg, int shard, const std::vector<int>& replicas,
                        const Ask& ask) {
  const uint64_t turn = turn_++;
  switch (cfg.replication.load_balance) {
    case config::LoadBalance::kRoundRobin:
      return replicas[turn % replicas.size()];
    case config::LoadBalance::kRandom: {
      // (splitmix64 of the turn: no shared generator between threads)
      uint64_t z = turn * 0x9E3779B97F4A7C15ull;
      z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
      z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
      return replicas[(z ^ (z >> 31)) % replicas.size()];
    }
    case config::LoadBalance::kLeastActive: {
      // Fewest servers lent out; ties go round robin.
      int best = -1, best_busy = std::numeric_limits<int>::max();
      for (std::size_t i = 0; i < replicas.size(); ++i) {
        const int r = replicas[(turn + i) % replicas.size()];
        const int busy = ask.busy ? ask.busy(cfg.replica_target(shard, r)) : 0;
        if (busy < best_busy) best = r, best_busy = busy;
      }
      return best;
    }
  }
  return replicas.front();
}

bool ReadRouting::tokens_pending() const {
  return std::any_of(written_.begin(), written_.end(),
                     [](const Written& w) { return w.in_flight || w.unresolved; });
}

bool ReadRouting::resolve(runtime::HostHealth& hosts, bool in_flight, Clock::time_point now) {
  bool all = true;
  for (std::size_t s = 0; s < written_.size(); ++s)
    all = settle(hosts, static_cast<int>(s), in_flight, now) && all;
  return all;
}

std::string ReadRouting::token_text(const config::Config& cfg) const {
  std::string out;
  for (std::size_t s = 0; s < written_.size() && s < cfg.shards.size(); ++s) {
    if (written_[s].token == 0) continue;
    if (!out.empty()) out += ',';
    out += cfg.shards[s].name + ':' + router::lsn_text(written_[s].token);
  }
  return out;
}

bool ReadRouting::take_token(const config::Config& cfg, std::string_view text) {
  const auto parts = router::parse_read_token(text, cfg);
  if (!parts) return false;
  if (written_.size() < cfg.shards.size()) written_.resize(cfg.shards.size());
  for (const auto& [s, lsn] : *parts)
    written_[static_cast<std::size_t>(s)].token =
        std::max(written_[static_cast<std::size_t>(s)].token, lsn);
  return true;
}

}  // namespace pgshard::session
