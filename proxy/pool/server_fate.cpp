#include "proxy/pool/server_fate.hpp"

#include "proxy/pool/server_conn.hpp"

namespace pgshard::pool {

ServerFate fate_of(ServerFailure f) {
  switch (f) {
    case ServerFailure::kIoError:
    case ServerFailure::kProtocolViolation:
    case ServerFailure::kTimeout:
    case ServerFailure::kAbandoned:
    case ServerFailure::kOwesReplies:
    case ServerFailure::kInTransaction:
    case ServerFailure::kSessionState:
    case ServerFailure::kClientGone:
      return ServerFate::kDiscard;
  }
  return ServerFate::kDiscard;
}

const char* to_string(ServerFailure f) {
  switch (f) {
    case ServerFailure::kIoError:
      return "i/o error";
    case ServerFailure::kProtocolViolation:
      return "protocol violation";
    case ServerFailure::kTimeout:
      return "timeout";
    case ServerFailure::kAbandoned:
      return "abandoned mid-reply";
    case ServerFailure::kOwesReplies:
      return "owes replies";
    case ServerFailure::kInTransaction:
      return "in a transaction";
    case ServerFailure::kSessionState:
      return "session state";
    case ServerFailure::kClientGone:
      return "client gone";
  }
  return "?";
}

void report(ServerConn& conn, ServerFailure f) {
  if (fate_of(f) == ServerFate::kDiscard) conn.broken = true;
}

}  // namespace pgshard::pool
