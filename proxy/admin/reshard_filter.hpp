// The moving rows of a reshard as SQL: row-filter expressions of a table's key column built
// only from immutable built-in functions, so a publication's WHERE clause (PostgreSQL 15) can
// select exactly the rows a move carries (pure: no I/O).
#pragma once

#include <string>
#include <string_view>

#include "config/config.hpp"
#include "proxy/admin/reshard_plan.hpp"

namespace pgshard::admin {

// 'text' with quotes doubled (standard_conforming_strings, PostgreSQL's default since 9.1).
std::string sql_literal(std::string_view text);
// "name" with quotes doubled.
std::string sql_ident(std::string_view name);
// schema.table of a sharded table, each part quoted (the table alone when any schema).
std::string table_sql(const config::ShardedTable& t);

// The row hash compute_partition_hash_value() computes for a one-column key (the column's
// extended hash seeded with HASH_PARTITION_SEED, then hash_combine64(0, h), which adds
// 0x49a0f4dd15e5a8e3) as a numeric in [0, 2^64): the unsigned value PostgreSQL takes
// modulo a partition modulus, and ring tables place on their ring.
std::string row_hash_sql(config::KeyType type, const std::string& column);
// That hash modulo `modulus`, as an integer: the remainder satisfies_hash_partition()
// checks, and a bucket of a `buckets: modulus` table.
std::string hash_remainder_sql(config::KeyType type, const std::string& column, int modulus);

// The rows of `m`, one move of table plan `p`, as a boolean expression of the key column
// (true for exactly the rows the old map places on m.from and the new one on m.to).
std::string move_filter_sql(const TablePlan& p, const Move& m);

// What `reshard verify` groups a table's moving rows by: the hash remainder (bucket) of the
// plan's modulus for hash tables, else the row hash modulo 1024.
std::string verify_group_sql(const TablePlan& p);

}  // namespace pgshard::admin
