// Routing one request of a client — a simple Query, or an extended batch up to its Sync or
// Flush — to one destination: every Bind of a batch must agree on it, a BEGIN pipelined ahead
// of the first statement goes where that goes, a Query pipelined after extended messages must
// join them on their shard. Records the batch's Parse and Close in the client's statements.
// Synchronous, no I/O.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/router.hpp"
#include "proxy/session/statements.hpp"

namespace pgshard::session {

// Where the client's transaction stands, as routing a request needs it.
enum class TxnAt : uint8_t {
  kNone,     // no transaction (a server the session holds is idle)
  kServer,   // open on the server the session holds, the client's BEGIN sent on to it
  kManaged,  // pgshard's to run: BEGIN deferred, or open on several shards
};

// `txn`: where the client's transaction stands. A Query pipelined after extended messages
// may not start or end one pgshard manages; a COMMIT or ROLLBACK after a BEGIN of the
// batch goes with its statements only when there is none. `simple` is set when the request
// is a simple Query.
router::Route route_batch(std::string_view batch, Statements& statements,
                          const router::SessionHints& hints, const config::Config& cfg,
                          router::Context ctx, TxnAt txn, bool* simple);

// Rewrites the statement a request runs (generated keys or pgshard.unique_id() values put
// in). A simple Query is rewritten in place. For the statement of the batch's last Bind
// (named or unnamed, parsed in the batch or before), pgshard's own unnamed Parse of the
// rewritten text goes just ahead of the Bind, which then binds it: the client's statement
// stays as it was, and `statements` notes the Parse (its ParseComplete is hidden). False
// when `rewrite` gives nullopt. `rewrite` gets the statement's text and its Bind (null for a
// Query).
using Rewrite =
    std::function<std::optional<std::string>(std::string_view sql, const protocol::Bind* bind)>;
bool rewrite_statement(std::string& batch, Statements& statements, const Rewrite& rewrite);

}  // namespace pgshard::session
