// The analyser of one parsed statement: the sharded tables it names, how they are joined,
// the shard-key values that pin its rows, and what stops several shards' rows from being
// concatenated. Its steps live in analysis_statement.cpp (statement kinds), analysis_keys.cpp
// (keys and joins), analysis_dml.cpp (INSERT, UPDATE, COPY) and analysis_select.cpp
// (SELECT). Internal to proxy/router.
#pragma once

#include <functional>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "proxy/router/analysis_internal.hpp"

namespace pgshard::router::detail {

// A sharded table as the statement names it.
struct Use {
  int table;         // index into sharded_tables
  std::string name;  // alias, or the table name
  int group;         // co-location group (union-find root)
};

// Key values restricting uses: (use, the values one of them must equal).
using UseKeys = std::vector<std::pair<int, std::vector<KeyValue>>>;

class Analyzer {
 public:
  explicit Analyzer(const config::Config& cfg) : cfg_(cfg) {}

  Analysis run(const PgQuery__ParseResult* tree);

 private:
  // Every relation a statement names anywhere, minus CTE names, and the CTE names.
  struct Relations {
    std::set<std::string> ctes;
    std::vector<const PgQuery__RangeVar*> rels;
  };
  // The relations that are not sharded tables (those become uses_).
  struct Others {
    bool unsharded = false;  // outside the map
    bool reference = false;
  };

  // analysis_statement.cpp
  Analysis several(const PgQuery__ParseResult* tree);
  Analysis several_body(const PgQuery__ParseResult* tree);
  Analysis one(const Node* stmt);
  Analysis body(const Node* stmt);
  Analysis explained(const PgQuery__ExplainStmt* e);
  Analysis copied_query(const PgQuery__CopyStmt* c);
  Analysis declared_cursor(const PgQuery__DeclareCursorStmt* d);
  Analysis tables(const Node* stmt);
  Others sort_relations(const Relations& r);
  Analysis& without_sharded_tables(const Node* stmt, Others others, Analysis& a);
  Analysis& by_kind(const Node* stmt, Analysis& a);

  // analysis_routines.cpp
  Analysis prepared(const Node* stmt);
  Analysis prepared_use(const Node* stmt);
  bool unplaced_routine(const Node* stmt, Analysis& a) const;
  std::string routine_problem(const Node* stmt) const;

  // analysis_select.cpp
  void note_merge_blockers(const Node* stmt, const std::set<std::string>& ctes, Analysis& a) const;
  Analysis& select(const Node* stmt, Analysis& a);
  Analysis& decomposes(const PgQuery__SelectStmt* s, Analysis& a) const;
  std::optional<std::string> renamed_key(const Node* stmt) const;
  std::optional<std::reference_wrapper<Analysis>> cte_write(const Node* query, Analysis& a);

  // analysis_keys.cpp
  int key_use(const Node* n) const;
  void joins(const Node* n);
  std::string use_names() const;
  int find(int u);
  void collect(const Node* e, UseKeys* keys);
  void key_conjuncts(const Node* e, UseKeys& keys);
  std::optional<std::vector<KeyValue>> key_values(const Node* e, int* use);
  Analysis& keyed(const Node* where, Analysis& a);

  // analysis_dml.cpp
  bool inserts_select(const PgQuery__InsertStmt* ins) const;
  Analysis& insert_select(const PgQuery__InsertStmt* ins, Analysis& a) const;
  Analysis& insert(const PgQuery__InsertStmt* ins, Analysis& a) const;
  Analysis& update(const PgQuery__UpdateStmt* u, Analysis& a);
  Analysis& copy(const PgQuery__CopyStmt* c, Analysis& a) const;

  const config::Config& cfg_;
  std::vector<Use> uses_;
  // The sharded tables of every statement analysed by run() (Analysis::sharded_tables).
  std::vector<int> named_tables_;
  // Two tables' keys compared that place keys differently (buckets, function...): named
  // in the refusal, which would otherwise say they were not joined on their keys.
  std::string unlike_placement_;
  std::vector<const Node*> cte_wheres_;
  std::vector<const Node*> sublink_wheres_;
};

// Key values written in the statement (analysis_keys.cpp).
//
// The node under its casts that keep keys apart (integer types, numeric, text, varchar,
// uuid without a length); a cast that may make two keys equal is left on.
const Node* strip_casts(const Node* n);
// A constant, a parameter ($n) or DEFAULT as a key value; nullopt for anything else.
std::optional<KeyValue> value_of(const Node* n);

// COPY (analysis_dml.cpp).
//
// The table and the format options of a COPY (PostgreSQL's defaults, as copy.c sets them).
CopySplit copy_options(const PgQuery__CopyStmt* c);
// COPY of tables outside sharded_tables (reference tables, unsharded ones). COPY FROM
// writes (every shard of a reference table); FROM STDIN is copied to every shard as the
// client streams it (`replicate`), when the table is on several.
void copy_unmapped(const PgQuery__CopyStmt* c, Analysis& a);
// The table an INSERT, UPDATE or DELETE writes.
const PgQuery__RangeVar* write_target(const Node* stmt);

}  // namespace pgshard::router::detail
