// What a server connection's user saw go wrong with it, and the one table that decides what
// becomes of the server. The relay, the executors and the coordinators report a failure kind
// (report()); none of them decides on its own that a server is discarded. It lives in pool/
// because every layer that uses a server (runtime, executor, session) may report.
#pragma once

#include <cstdint>

namespace pgshard::pool {

class ServerConn;

enum class ServerFailure : uint8_t {
  kIoError,            // a read or write on its socket failed, or pgshard's own statement
                       // got no complete answer: the connection is gone or out of step
  kProtocolViolation,  // the server sent a malformed message
  kTimeout,            // it did not answer in time, and may still be working
  kAbandoned,          // left mid-reply, mid-COPY or mid-batch: the rest of its answer would
                       // reach whoever used it next
  kOwesReplies,        // handed back while it still owes replies
  kInTransaction,      // left inside a transaction block, or its end was not confirmed
  kSessionState,       // it holds session state the next client must not inherit (settings
                       // pgshard cannot restore, a temporary schema)
  kClientGone,         // its client's reply could not be written: the client left mid-reply
};

enum class ServerFate : uint8_t {
  kKeep,     // back to the pool (or its client) as it is
  kDiscard,  // closed when given back
};

ServerFate fate_of(ServerFailure f);
const char* to_string(ServerFailure f);

// Applies fate_of(f) to `conn`. The one place, besides ServerConn::close(), that marks a
// server connection broken.
void report(ServerConn& conn, ServerFailure f);

}  // namespace pgshard::pool
