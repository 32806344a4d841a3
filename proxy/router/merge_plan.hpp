// The merge plan of a SELECT whose rows come from several shards, read from PostgreSQL's
// parse tree: ORDER BY keys, LIMIT/OFFSET, DISTINCT, and aggregates rewritten into the
// partial results every shard computes (avg → sum and count), deparsed by libpg_query.
#pragma once

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <memory>
#include <string>
#include <vector>

#include "proxy/merge/plan.hpp"

namespace pgshard::router {

// `select` is the top-level SELECT of `tree`; it is modified while the shard statement is
// deparsed and restored before returning. `key_columns` are the shard-key column names of
// the sharded tables the statement reads (count(DISTINCT key) is computable per shard).
// A plan whose `unsupported` is set names what cannot be merged.
std::shared_ptr<const merge::MergePlan> plan_merge(PgQuery__ParseResult* tree,
                                                   PgQuery__SelectStmt* select,
                                                   const std::vector<std::string>& key_columns);

}  // namespace pgshard::router
