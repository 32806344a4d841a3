#include "proxy/session/failures.hpp"

namespace pgshard::session {

namespace sqlstate = protocol::sqlstate;

FailureRule rule(Failure f) {
  switch (f) {
    case Failure::kTooManyStartups:
    case Failure::kTooManyClients:
      return {true, sqlstate::kTooManyConnections, std::nullopt};
    case Failure::kShuttingDown:
      return {true, sqlstate::kCannotConnectNow, std::nullopt};
    case Failure::kAdminShutdown:
      return {true, sqlstate::kAdminShutdown, std::nullopt};
    case Failure::kIdleTimeout:
      return {true, sqlstate::kIdleSessionTimeout, std::nullopt};
    case Failure::kProtocolViolation:
      return {true, sqlstate::kProtocolViolation, std::nullopt};
    case Failure::kCopyViolation:
      // The relayed server is still in the COPY: its transaction must roll back.
      return {true, sqlstate::kProtocolViolation, pool::ServerFailure::kAbandoned};
    case Failure::kBatchTooLarge:
      return {false, sqlstate::kProgramLimitExceeded, std::nullopt};
    case Failure::kRefused:
      return {false, "", std::nullopt};
    case Failure::kInFailedTransaction:
      return {false, "", std::nullopt, false};  // already failed
    case Failure::kNoServer:
      return {false, sqlstate::kSqlclientUnableToEstablish, std::nullopt};
    case Failure::kServerLost:
      return {false, sqlstate::kConnectionFailure, pool::ServerFailure::kIoError};
    case Failure::kTwoPrimaries:
      return {false, sqlstate::kConnectionFailure, std::nullopt};
    case Failure::kLoginRefused:
      return {true, "", std::nullopt};
  }
  return {true, sqlstate::kInternalError, pool::ServerFailure::kAbandoned};
}

const char* to_string(Failure f) {
  switch (f) {
    case Failure::kTooManyStartups:
      return "too many startups";
    case Failure::kTooManyClients:
      return "too many clients";
    case Failure::kShuttingDown:
      return "shutting down";
    case Failure::kAdminShutdown:
      return "admin shutdown";
    case Failure::kIdleTimeout:
      return "idle timeout";
    case Failure::kProtocolViolation:
      return "protocol violation";
    case Failure::kCopyViolation:
      return "COPY protocol violation";
    case Failure::kBatchTooLarge:
      return "batch too large";
    case Failure::kRefused:
      return "refused";
    case Failure::kInFailedTransaction:
      return "in failed transaction";
    case Failure::kNoServer:
      return "no server";
    case Failure::kServerLost:
      return "server lost";
    case Failure::kTwoPrimaries:
      return "two primaries";
    case Failure::kLoginRefused:
      return "login refused";
  }
  return "?";
}

protocol::ErrorInfo failure_error(Failure f, std::string message, std::string hint) {
  const auto r = rule(f);
  auto e = protocol::error(r.sqlstate.empty() ? sqlstate::kInternalError : r.sqlstate,
                           std::move(message), {}, std::move(hint));
  if (r.fatal) e.severity = "FATAL";
  return e;
}

}  // namespace pgshard::session
