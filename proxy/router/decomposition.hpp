// Whether a SELECT run on every shard, its rows then combined, gives PostgreSQL's answer as
// far as where its rows come from: rows every shard holds whole (reference tables,
// set-returning functions, VALUES) must not reach the result once per shard.
#pragma once

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <functional>
#include <optional>
#include <string>

namespace pgshard::router {

// What stops `select` from running per shard, as a noun phrase for "... across shards is
// not supported"; nullopt when nothing here does. `sharded` says whether a relation is a
// sharded table; every other relation (reference tables, catalogs) is the same on every
// shard. Rules, applied to every query level (subqueries, CTEs, derived tables):
//   - a FROM item is partitioned (each row on one shard) when it holds a sharded table in
//     an inner join, replicated otherwise (reference tables, functions in FROM, VALUES);
//   - an outer join may keep unmatched rows only of a partitioned side: a replicated
//     preserved side against a partitioned one repeats its unmatched rows on every shard
//     (unless a strict condition of the level's WHERE on a column of the partitioned side,
//     `i.qty > 1`, `i.id IS NOT NULL`, drops those rows: the join is an inner one then);
//   - a subquery over sharded tables (EXISTS, IN, NOT IN, ANY, scalar) in a query level
//     whose own rows are replicated is a semi/anti join each shard answers alone;
//   - the statement's own rows must be partitioned when it reads sharded tables at all.
// Co-location of sharded tables with each other is checked elsewhere (Analyzer::keyed).
std::optional<std::string> decomposition_problem(
    const PgQuery__SelectStmt* select,
    const std::function<bool(const PgQuery__RangeVar*)>& sharded);

}  // namespace pgshard::router
