// What the files of the statement analysis (analysis*.cpp, session_effects.cpp,
// rewrite.cpp) share: the parse tree, and how the shard map names a relation. Internal to
// proxy/router.
#pragma once

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "proxy/router/analysis.hpp"

namespace pgshard::router::detail {

using Node = PgQuery__Node;

// CURSOR_OPT_HOLD (parsenodes.h): DECLARE ... WITH HOLD.
inline constexpr int32_t kCursorOptHold = 0x0020;

struct FreeTree {
  void operator()(PgQuery__ParseResult* t) const {
    pg_query__parse_result__free_unpacked(t, nullptr);
  }
};
using ParseTree = std::unique_ptr<PgQuery__ParseResult, FreeTree>;
// The protobuf parse tree of a statement text (null when it does not parse).
ParseTree parse_tree(const std::string& text);

// The analysis of a parsed statement's tables and keys (analysis_statement.cpp).
Analysis analyze_tree(const PgQuery__ParseResult* tree, const config::Config& cfg);

// The sharded table `r` names (its index in cfg.sharded_tables), or -1.
int sharded_index(const config::Config& cfg, const PgQuery__RangeVar* r);
// Whether `r` names one of cfg.reference_tables.
bool is_reference(const config::Config& cfg, const PgQuery__RangeVar* r);

// pg_temp, or one session's pg_temp_N.
bool is_temp_schema(std::string_view name);

// analysis_ddl.cpp: schema changes.
//
// Statements that change the schema, which is the same on every shard: they run on every
// shard whatever `unsharded` says (it governs data statements). CREATE TABLE AS and
// SELECT INTO carry data and are not among them.
bool schema_change(PgQuery__Node__NodeCase kind);
// Whether a statement names a temporary object (TEMP tables, pg_temp.anything): it lives
// in one server session, not in the schema.
bool names_temp_object(const Node* stmt);
// DROP of a sharded or reference table (it names its objects as lists of strings).
bool drops_placed_table(const config::Config& cfg, const PgQuery__DropStmt* d);
// A schema change of objects outside the map: every shard, with the objects it names.
Analysis& schema_change_everywhere(const Node* stmt,
                                   const std::vector<const PgQuery__RangeVar*>& rels, Analysis& a);
// A schema change of a sharded table: every shard, unless a foreign key it declares cannot
// hold across shards.
Analysis& sharded_schema_change(const config::Config& cfg, const Node* stmt, Analysis& a);
// A DO block made only of schema changes (migration tools wrap a foreign key or an enum in
// DO $$ BEGIN ... EXCEPTION WHEN duplicate_object THEN null; END $$): a schema change
// itself, for every shard. Its statements are read with libpg_query's PL/pgSQL parser;
// anything but plain SQL statements in blocks (IF, loops, EXECUTE, assignments) makes it
// an ordinary DO block. `problem`: a foreign key that cannot hold across shards.
bool do_block_changes_schema_only(const config::Config& cfg, const PgQuery__DoStmt* d,
                                  std::string& problem);
// A DO block's body, read with libpg_query's PL/pgSQL parser (`read`: plpgsql that parsed).
struct DoBlock {
  std::string_view language;
  bool read = false;
  bool plain = true;                 // only blocks, SQL statements and RETURN
  bool dynamic = false;              // EXECUTE of a string, FOR ... EXECUTE, OPEN ... FOR EXECUTE
  std::vector<std::string> queries;  // its SQL statements' and expressions' texts
};
DoBlock read_do_block(const PgQuery__DoStmt* d);

// analysis.cpp: pgshard.unique_id().
//
// pgshard.unique_id() (0) or pgshard.unique_id_53() (1); -1 for any other function.
int unique_id_function(const PgQuery__FuncCall* f);
// The nodes of `tree` that call pgshard.unique_id() or unique_id_53().
std::vector<Node*> unique_id_calls(const PgQuery__ParseResult* tree);

// session_effects.cpp: what a statement does to the session wherever it runs.
//
// Session-level SET / RESET / DISCARD ALL / set_config(..., false), pinning, functions
// called outside pg_catalog, pg_prepared_statements reads.
void extract_settings(const PgQuery__ParseResult* tree, Analysis& a);
// Transaction modes (the DefElems of BEGIN, START TRANSACTION, SET TRANSACTION) as BEGIN's
// words ("ISOLATION LEVEL SERIALIZABLE READ ONLY") appended to `words_out`; without it, as
// the default_transaction_* settings they set (SET SESSION CHARACTERISTICS).
void transaction_mode_words(Node* const* args, size_t n_args, std::string* words_out,
                            std::vector<SettingChange>* settings_out);
// SET [LOCAL] transaction_isolation / transaction_read_only / transaction_deferrable = v:
// true with SET TRANSACTION's words for it in `words`.
bool transaction_setting_words(const PgQuery__VariableSetStmt* v, std::string& words);
// SELECT pg_terminate_backend(pid) or pg_cancel_backend(pid) as a whole statement, with the
// pid a literal or a parameter (maybe cast).
std::optional<Analysis::SignalCall> signal_call(const PgQuery__ParseResult* tree);

}  // namespace pgshard::router::detail
