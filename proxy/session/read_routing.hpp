// Where a session's reads go when shards have replicas (read_from, load_balance,
// read_consistency), and what it has written where, so that its reads never go back in time
// (read-your-writes). Sans-IO: the session asks, and waits when told to.
//
// Read-your-writes without a round trip of its own: after the session wrote on shard s and
// saw the request finish (no reply owed), any check of s's primary *sent later* reports a WAL
// position at or past that commit; that position becomes the session's token for s, and a
// replica may serve s's reads once it has replayed to the token. Until a check has reported
// it (one is asked for at once) s's reads go to the primary; once the token is known and no
// replica has caught up, a read waits for one (the checks run at once while anyone waits) at
// most read_your_writes.wait, then goes to the primary.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "proxy/asio.hpp"
#include "proxy/router/router.hpp"
#include "proxy/runtime/health.hpp"

namespace pgshard::session {

class ReadRouting {
 public:
  explicit ReadRouting(uint64_t seed) : turn_(seed) {}

  // Whether any shard of `cfg` has replicas (else nothing here is asked).
  static bool any_replicas(const config::Config& cfg) {
    return cfg.targets() > static_cast<int>(cfg.shards.size());
  }

  // Request number `request` of the session may write on `shards`' primaries (it runs, or
  // will run, there).
  void wrote(std::span<const int> shards, std::size_t shard_count, uint64_t request);
  // ... but `shard`'s pool refused it a server (two primaries): it wrote nothing there, and
  // its write gives no token (before: the token showed the position of one of the two).
  void refused(int shard, uint64_t request);

  struct Ask {
    int shard = 0;
    bool in_flight = false;  // a request of the client still owes replies
    Clock::time_point now{};
    // Servers lent out of a target's pool (least_active).
    std::function<int(int target)> busy;
  };
  // The target a read for `ask.shard` goes to (the shard itself: its primary; else one of
  // its replicas, config::Config::replica_target); nullopt: wait a little and ask again
  // (read-your-writes: no check has reported the session's last write yet, or no replica has
  // replayed it).
  std::optional<int> target(const config::Config& cfg, const config::User& user,
                            runtime::HostHealth& hosts, const Ask& ask);
  // Waited read_your_writes.wait in vain: the read goes to the primary (counted).
  int give_up(runtime::HostHealth& hosts, int shard);

  // The session's tokens as text (SHOW pgshard.read_token): "shard:lsn,..." (hex LSNs as
  // PostgreSQL writes them), only shards with a token.
  std::string token_text(const config::Config& cfg) const;
  // SET pgshard.read_token: honour another session's token (kept: the larger of both).
  // False when the text does not read as one.
  bool take_token(const config::Config& cfg, std::string_view text);
  // Whether a write of this session on some shard has no token yet (SHOW must wait).
  bool tokens_pending() const;
  // Resolves pending writes' tokens from the checks seen so far (none: false).
  bool resolve(runtime::HostHealth& hosts, bool in_flight, Clock::time_point now);

 private:
  struct Written {
    bool in_flight = false;   // wrote; the request's end not seen yet
    bool unresolved = false;  // finished by `done_by`; no primary check since
    Clock::time_point done_by{};
    uint64_t token = 0;             // the WAL position a replica must have replayed
    uint64_t request = 0;           // the request that set in_flight last
    bool in_flight_before = false;  // in_flight before that request (refused puts it back)
  };
  // Whether shard `shard`'s pending write is settled into its token (false: wait).
  bool settle(runtime::HostHealth& hosts, int shard, bool in_flight, Clock::time_point now);
  int choose(const config::Config& cfg, int shard, const std::vector<int>& replicas,
             const Ask& ask);
  std::vector<Written> written_;
  std::vector<int> candidates_;  // (reused)
  uint64_t turn_;
};

}  // namespace pgshard::session
