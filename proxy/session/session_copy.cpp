// COPY FROM STDIN relayed to one server: its data streamed through, and what breaks it.
#include <spdlog/spdlog.h>

#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;

awaitable<void> Session::copy_violation(char type) {
  // Only COPY messages (and Sync/Flush, ignored) may come during COPY FROM STDIN.
  // PostgreSQL answers an ERROR for the message, then FATAL: the protocol is out of step.
  // A relayed COPY's server, still in its COPY, is discarded (its transaction rolls back);
  // the split COPY (copy_in_split) has already failed its shards.
  spdlog::info("{}: protocol violation: message type {} during COPY from stdin", prefix(),
               int(static_cast<unsigned char>(type)));
  const bool relayed = phase_.copy_in() && backends_.active && backends_.active->lease;
  if (const auto server = rule(Failure::kCopyViolation).server; relayed && server)
    pool::report(*backends_.active->lease, *server);
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", static_cast<unsigned char>(type));
  auto error = failure_error(Failure::kCopyViolation, std::string("unexpected message type ") +
                                                          hex + " during COPY from stdin");
  error.severity = "ERROR";
  std::string out;
  proto::write_error(out, error);
  proto::write_error(out, failure_error(Failure::kCopyViolation,
                                        "terminating connection because protocol "
                                        "synchronization was lost"));
  co_await write_client(out);
  client_gone_ = true;
  stream_.close();
  if (relayed) backends_.wake(*backends_.active);
}

awaitable<void> Session::flush_copy() {
  if (backends_.active) {
    auto link = backends_.active;
    co_await write_server(link, pending_);
  }
  pending_.clear();
}

}  // namespace pgshard::session
