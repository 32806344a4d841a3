// Every way a client's session or request fails, mapped in one place to what the client sees
// (an ERROR that ends the request — ReadyForQuery, or skipping to Sync in an extended batch —
// or a FATAL that ends the connection), its SQLSTATE, and what it leaves the server
// connection the client was using with (pool::ServerFailure: pool/server_fate.hpp decides
// whether it is kept or discarded). The Odyssey model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/errors.hpp"
#include "proxy/pool/server_fate.hpp"

namespace pgshard::session {

enum class Failure : uint8_t {
  kTooManyStartups,      // listen.max_startups connections are logging in
  kTooManyClients,       // listen.max_client_conn clients are logged in
  kShuttingDown,         // a new connection while pgshard stops
  kAdminShutdown,        // an idle client while pgshard stops
  kIdleTimeout,          // timeouts.client_idle
  kProtocolViolation,    // a malformed or unknown client message
  kCopyViolation,        // a non-COPY message during COPY FROM STDIN (an ERROR, then FATAL)
  kBatchTooLarge,        // an extended batch past max_message_size before its Sync
  kRefused,              // pgshard will not run the request (its own SQLSTATE: 0A000...)
  kInFailedTransaction,  // a statement in a transaction pgshard failed (25P02, or the loss)
  kNoServer,             // no server connection for the shard (pool timeout, shard down)
  kTwoPrimaries,         // the shard has two primaries: its writes are refused (failover)
  kServerLost,           // the server connection ended mid-request
  kLoginRefused,         // after authentication (unknown database, bad options...)
};

struct FailureRule {
  bool fatal;                 // the connection ends
  std::string_view sqlstate;  // "" : the error brings its own
  // What the failure leaves the active server connection with, reported to pool::report
  // (whose table decides its fate); none: it is kept.
  std::optional<pool::ServerFailure> server;
  // Inside a transaction block the error fails the transaction, as an ERROR from PostgreSQL
  // does: later statements get 25P02 and COMMIT answers ROLLBACK.
  bool fails_transaction = true;
};

FailureRule rule(Failure f);
const char* to_string(Failure f);

// The client's error for `f`: the rule's SQLSTATE (unless it brings its own) and severity.
protocol::ErrorInfo failure_error(Failure f, std::string message, std::string hint = {});

}  // namespace pgshard::session
