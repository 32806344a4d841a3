// Routing: a pure function of (statement text, session hints, config) -> Route. No I/O.
//
// Precedence, highest first (documented in README):
//   1. a comment hint in the statement: /* pgshard: shard=s1 */ or /* pgshard: sharding_key=42 */
//   2. SET LOCAL pgshard.shard / pgshard.sharding_key (until the transaction ends)
//   3. SET pgshard.shard / pgshard.sharding_key (session)
//   4. the first shard of the map
// At each level an explicit shard beats a sharding key.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "protocol/errors.hpp"

namespace pgshard::router {

// pgshard.* settings a client made with SET / SET LOCAL.
struct Hints {
  std::optional<std::string> shard;
  std::optional<std::string> sharding_key;
  bool empty() const { return !shard && !sharding_key; }
  bool operator==(const Hints&) const = default;
};

struct SessionHints {
  Hints session;
  Hints local;  // cleared when the client's transaction ends
  bool operator==(const SessionHints&) const = default;
  bool empty() const { return session.empty() && local.empty(); }
};

enum class RouteKind {
  kShard,   // forward to `shard`
  kAnswer,  // pgshard answers itself with `answer` (no ReadyForQuery included)
  kError,   // pgshard answers with `error`
};

struct Route {
  RouteKind kind = RouteKind::kShard;
  int shard = 0;
  std::string reason;  // why this shard, for logs and EXPLAIN
  protocol::ErrorInfo error;
  std::string answer;
  // The hints in force after this statement (SET/RESET pgshard.* applied).
  SessionHints hints;
};

// Routes a simple-protocol Query. A string made only of pgshard SET/RESET/SHOW statements
// is answered by pgshard; anything else goes to a shard (pgshard.* settings inside a longer
// string are applied and also reach the server, which accepts them as placeholder GUCs).
Route route_query(std::string_view sql, const SessionHints& hints, const config::Config& cfg);

// Routes an extended-protocol request by the text of its Parse (empty when the batch binds
// an existing statement). pgshard.* settings are applied and always forwarded.
Route route_extended(std::string_view sql, const SessionHints& hints, const config::Config& cfg);

// The shard a sharding key maps to with the map's default key type and function.
std::optional<int> shard_for_key(std::string_view key, const config::Config& cfg);

}  // namespace pgshard::router
