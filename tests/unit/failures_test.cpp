// The one table of failures (session/failures.hpp): what the client sees, with which
// SQLSTATE, and what becomes of the server connection.
#include "proxy/session/failures.hpp"

#include <catch2/catch.hpp>

using namespace pgshard;

TEST_CASE("each failure has one rule: what the client sees and the server's fate", "[failures]") {
  using pool::ServerFate;
  using session::Failure;
  using session::rule;
  auto server_fate = [](Failure f) {
    const auto server = rule(f).server;
    return server ? pool::fate_of(*server) : ServerFate::kKeep;
  };
  // Connection-level failures end the connection with PostgreSQL's SQLSTATEs.
  CHECK(rule(Failure::kTooManyClients).fatal);
  CHECK(rule(Failure::kTooManyClients).sqlstate == "53300");
  CHECK(rule(Failure::kIdleTimeout).sqlstate == "57P05");
  CHECK(rule(Failure::kAdminShutdown).sqlstate == "57P01");
  CHECK(rule(Failure::kProtocolViolation).sqlstate == "08P01");
  // A COPY broken by the client leaves its server mid-COPY: never reused.
  CHECK(server_fate(Failure::kCopyViolation) == ServerFate::kDiscard);
  CHECK(server_fate(Failure::kServerLost) == ServerFate::kDiscard);
  // A refusal or a failed login leaves the server in step.
  CHECK(server_fate(Failure::kRefused) == ServerFate::kKeep);
  CHECK(server_fate(Failure::kNoServer) == ServerFate::kKeep);
  CHECK(rule(Failure::kServerLost).sqlstate == "08006");
  // Request-level failures end the request only; refusals bring their own SQLSTATE.
  CHECK_FALSE(rule(Failure::kRefused).fatal);
  CHECK(rule(Failure::kRefused).sqlstate.empty());
  CHECK_FALSE(rule(Failure::kBatchTooLarge).fatal);
  CHECK(rule(Failure::kBatchTooLarge).sqlstate == "54000");
  auto e = session::failure_error(Failure::kTooManyStartups, "sorry");
  CHECK(e.severity == "FATAL");
  CHECK(e.code == "53300");
}

TEST_CASE("each kind of server failure has one fate: out of step, discarded", "[failures]") {
  using pool::ServerFailure;
  for (auto f :
       {ServerFailure::kIoError, ServerFailure::kProtocolViolation, ServerFailure::kTimeout,
        ServerFailure::kAbandoned, ServerFailure::kOwesReplies, ServerFailure::kInTransaction,
        ServerFailure::kSessionState, ServerFailure::kClientGone}) {
    INFO(pool::to_string(f));
    CHECK(pool::fate_of(f) == pool::ServerFate::kDiscard);
  }
}
