// `pgshard reshard plan`: what a change of shard map moves, table by table (pure: no I/O).
#pragma once

#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pgshard::admin {

// Rows of one sharded table that change shard between two maps, from one shard to another
// (shards named as in the maps: a shard keeps its name across them).
struct Move {
  std::string from, to;
  // hash (and directory's fallback): remainders of the partition hash modulo
  // TablePlan::modulus; PostgreSQL's satisfies_hash_partition(…, modulus, r, key) is true for
  // exactly these rows.
  std::vector<int> remainders;
  // ring: arcs (lo, hi] of the 64-bit hash space (a wrapping arc has lo > hi).
  std::vector<std::pair<uint64_t, uint64_t>> arcs;
  double share = 0;  // hash, ring: the part of the hash space moving
  // range: [lo, hi) of keys; nullopt is unbounded on that side.
  std::vector<std::pair<std::optional<int64_t>, std::optional<int64_t>>> ranges;
  std::vector<std::string> keys;    // list: keys (canonical text)
  bool unlisted = false;            // list: every key neither map lists (a default changed)
  std::vector<std::string> listed;  // with `unlisted`: the keys either map lists
};

struct TablePlan {
  std::string name;  // qualified
  const config::ShardedTable* from = nullptr;
  const config::ShardedTable* to = nullptr;
  std::string refusal;               // why this change cannot be planned (moves is then empty)
  int modulus = 0;                   // hash: the remainders of Move are modulo this
  int old_units = 0, new_units = 0;  // hash: buckets (or shards) of each map
  std::vector<Move> moves;
  std::string note;  // what the plan does not cover (directory entries)
};

// Every sharded table of either map, with what moves (tables neither changed nor moved have
// no moves).
std::vector<TablePlan> plan_reshard(const config::Config& from, const config::Config& to);

// The plan as text for people: one block per table, one line per (from, to).
void print_plan(const std::vector<TablePlan>& plan, std::ostream& out, bool verbose);

// `--live`: connects to the old map's shards that give rows and the new map's shards that
// take them, prints the rows and bytes each move carries (counted, or estimated from
// pg_class for large tables and ring tables: each line says which) and every reason the
// move cannot be done, with its fix (a moving table without a primary key or replica
// identity, a target without the table, a source without wal_level logical or without a
// free replication slot and WAL sender). Returns the number of refusals.
int plan_live(const std::vector<TablePlan>& plan, const config::Config& from,
              const config::Config& to, std::ostream& out);

// "0-255,300": sorted numbers as ranges.
std::string number_ranges(const std::vector<int>& sorted);

}  // namespace pgshard::admin
