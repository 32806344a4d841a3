// COMMIT or ROLLBACK of a transaction pgshard coordinates: one open on several shards
// (two-phase commit), or one pgshard failed.
#pragma once

#include <optional>
#include <string>

#include "protocol/errors.hpp"
#include "proxy/asio.hpp"
#include "proxy/executor/client.hpp"
#include "proxy/executor/reply_sink.hpp"

namespace pgshard::executor {

// How a coordinated transaction ended.
struct Ended {
  std::string tag;                           // COMMIT, or ROLLBACK (also for a failed one)
  std::optional<protocol::ErrorInfo> error;  // it did not commit (or not everywhere)
  std::optional<protocol::ErrorInfo> warning;
  bool committed() const { return tag == "COMMIT" && !error; }
};

// Ends the client's coordinated transaction without answering anyone; nullopt when the
// client left before it could end.
awaitable<std::optional<Ended>> end_distributed(executor::Client& c, bool commit);
// Ends it and answers `out` (simple: CommandComplete and ReadyForQuery; extended: the
// batch's replies); true when it committed.
awaitable<bool> finish_distributed(executor::Client& c, ReplySink& out, bool commit, bool simple);

}  // namespace pgshard::executor
