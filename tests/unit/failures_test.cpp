// The one table of failures (session/failures.hpp): what the client sees, with which
// SQLSTATE, and what becomes of the server connection.
#include "proxy/session/failures.hpp"

#include <catch2/catch.hpp>

using namespace pgshard;

TEST_CASE("each failure has one rule: what the client sees and the server's fate", "[failures]") {
  using session::Failure;
  using session::rule;
  using session::ServerFate;
  // Connection-level failures end the connection with PostgreSQL's SQLSTATEs.
  CHECK(rule(Failure::kTooManyClients).fatal);
  CHECK(rule(Failure::kTooManyClients).sqlstate == "53300");
  CHECK(rule(Failure::kIdleTimeout).sqlstate == "57P05");
  CHECK(rule(Failure::kAdminShutdown).sqlstate == "57P01");
  CHECK(rule(Failure::kProtocolViolation).sqlstate == "08P01");
  // A COPY broken by the client leaves its server mid-COPY: never reused.
  CHECK(rule(Failure::kCopyViolation).server == ServerFate::kDiscard);
  CHECK(rule(Failure::kServerLost).server == ServerFate::kDiscard);
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
