// Parts of multi-shard execution that fan_out.cpp uses from files of their own: the
// shards' version of an extended batch (shard_batch.cpp), collations (collations.cpp), and
// the catalog generation DDL bumps (ddl.cpp). Internal to proxy/executor/.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/asio.hpp"
#include "proxy/executor/client.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/pool/replies.hpp"

namespace pgshard::merge {
struct MergePlan;
}  // namespace pgshard::merge

namespace pgshard::executor {

// The shards' version of the extended-protocol batch `messages`; false after writing a
// refusal (its ErrorResponse, the caller ends the request) to `out`.
bool build_extended(Client& c, std::string_view messages, const merge::MergePlan* plan,
                    std::string_view override_sql, std::string& request, pool::Replies& expected,
                    std::optional<int64_t>& limit, std::optional<int64_t>& offset,
                    int32_t& max_rows, std::string& out, const std::string& names);
// The shards' text collation, read once per worker.
awaitable<const merge::Collation*> shard_collation(Client& c, pool::ServerConn& conn,
                                                   std::string* error);
// The shard's columns with other collations than the database's (null: unreadable).
awaitable<std::shared_ptr<const merge::ColumnCollations>> column_collations(
    Client& c, int shard, pool::ServerConn& conn, const merge::Collation& database);
// DDL ran (or will, in the client's transaction): runtime::Shared::catalog_generation
// moves on.
void catalog_changed(Client& c);

}  // namespace pgshard::executor
