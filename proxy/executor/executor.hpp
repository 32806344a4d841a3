// The executor module: statements pgshard runs on several shards itself, through the
// client's session seen as an executor::Client, answering to the ReplySink they are given.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/executor/client.hpp"
#include "proxy/executor/reply_sink.hpp"
#include "proxy/router/router.hpp"

namespace pgshard::executor {

// The messages a multi-shard statement runs: the client's request, or pgshard's own Query
// (the SELECT of an INSERT ... SELECT); `boundary` is their last (Query, Sync or Flush).
struct Request {
  std::string_view messages;
  bool simple = true;  // a simple Query (else extended-protocol messages)
  char boundary = 'Q';
};

// One statement sent to several shards at once, their replies combined (Combiner) into the
// one reply `out` gets. Writes commit on every shard or on none; inside a transaction the
// shards join it (two-phase commit at COMMIT). Runs a route's FanOut; its Ddl too (run_ddl
// outside a transaction); refuses its CopyIn (only a simple Query splits).
awaitable<void> fan_out(Client& c, ReplySink& out, const router::Route& route,
                        const Request& request);
// DDL (`messages`) on every shard of `shards` in order, stopping at the first failure.
awaitable<void> run_ddl(Client& c, ReplySink& out, const std::vector<int>& shards,
                        std::string_view messages);
// COPY FROM STDIN into a sharded table: rows go to the shard their key names; all shards
// commit only if every one accepted its rows.
awaitable<void> copy_in_split(Client& c, ReplySink& out, const router::CopyIn& copy);
// Fills the worker's directory cache for `lookups` (table, key); returns an error or "".
awaitable<std::string> resolve_directory(Client& c,
                                         const std::vector<std::pair<int, std::string>>& lookups);
// Fills the worker's column cache with the key position and the generated columns of each
// sharded table in `tables` (indexes), read from the first shard's catalog; returns an
// error or "".
awaitable<std::string> resolve_columns(Client& c, const std::vector<int>& tables);
// `count` new keys for sharded table `table` from its key column's sequence (serial,
// identity) on the first shard, the sequence's home, so keys are unique across shards and
// pgshard instances. Returns an error or "" with the keys in `keys`.
// Runs pgshard's own query on `shard`: inside the client's transaction when it has a server
// there (what the transaction wrote is visible only there), else on a pooled server; the
// query's RowDescription and DataRows go to the callbacks. Returns an error (its SQLSTATE
// in `code`) or "".
awaitable<std::string> run_on_shard(Client& c, int shard, const std::string& sql,
                                    const std::function<void(std::string_view)>& row,
                                    const std::function<void(std::string_view)>& description,
                                    std::string& code);
// The node for pgshard.unique_id() (see unique_id.hpp), waiting up to 3 s for a lease being
// taken; nullopt (with the reason in `why`) when there is none.
awaitable<std::optional<int>> node_for_ids(Client& c, std::string& why);
// A default of pgshard.unique_id() / unique_id_53() gets pgshard's own ids instead.
// `column`: another generated column of the table (serial, identity, nextval default)
// whose values come from its sequence on the first shard alike; empty: the shard key.
awaitable<std::string> generate_keys(Client& c, int table, int count,
                                     std::vector<std::string>& keys,
                                     const std::string& column = {});
// Declares pgshard.unique_id() and unique_id_53() on every shard (once per process; they
// raise an error when a shard runs them itself), so statements naming them prepare and
// describe there and CREATE TABLE can take them as a column default.
awaitable<void> declare_unique_id(Client& c);

}  // namespace pgshard::executor
