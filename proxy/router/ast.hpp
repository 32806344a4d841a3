// Helpers over libpg_query's protobuf parse tree (PostgreSQL 15 grammar).
#pragma once

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace pgshard::router::ast {

// Calls `visit` on every message of the tree, generically over protobuf-c reflection.
void walk(const ProtobufCMessage* m, const std::function<void(const ProtobufCMessage*)>& visit);
// Structural equality of two trees, ignoring source locations: `a + 1` written twice.
bool equal(const ProtobufCMessage* a, const ProtobufCMessage* b);
// The value of a String node, or "".
std::string_view str_of(const PgQuery__Node* n);
// SQL text of the tree (libpg_query's deparser), or nullopt when it cannot deparse it.
std::optional<std::string> deparse(const PgQuery__ParseResult* tree);
// A built-in aggregate function name (pg_aggregate in PostgreSQL 15).
bool is_aggregate(std::string_view name);

}  // namespace pgshard::router::ast
