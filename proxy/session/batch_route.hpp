// Routing one request of a client — a simple Query, or an extended batch up to its Sync or
// Flush — to one destination: every Bind of a batch must agree on it, a BEGIN pipelined ahead
// of the first statement goes where that goes, a Query pipelined after extended messages must
// join them on their shard. Records the batch's Parse and Close in the client's statements.
// Synchronous, no I/O.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "proxy/router/router.hpp"
#include "proxy/session/statements.hpp"

namespace pgshard::session {

// `txn_managed`: the client's transaction is pgshard's to run (BEGIN deferred, or open on
// several shards), so a Query pipelined after extended messages may not start or end one.
// `simple` is set when the request is a simple Query.
router::Route route_batch(std::string_view batch, Statements& statements,
                          const router::SessionHints& hints, const config::Config& cfg,
                          router::Context ctx, bool txn_managed, bool* simple);

// Puts generated shard-key values into the INSERT of `batch` that leaves its key to the
// column's default. A simple Query is rewritten in place. For the statement of the batch's
// last Bind (named or unnamed, parsed in the batch or before), pgshard's own unnamed Parse of
// the text with the keys in goes just ahead of the Bind, which then binds it: the client's
// statement stays as it was, and `statements` notes the Parse (its ParseComplete is hidden).
// `position`: the key's place for an INSERT without a column list, else -1. False when the
// statement cannot be rewritten.
bool put_generated_keys(std::string& batch, Statements& statements, const std::string& column,
                        int position, const std::vector<std::string>& keys);

}  // namespace pgshard::session
