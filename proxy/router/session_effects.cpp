// What a statement does to the session wherever it runs: the settings it changes (SET,
// RESET, DISCARD ALL, set_config), transaction modes, what pins the client to its server
// (LISTEN, advisory locks, temporary objects, SET ROLE...), the functions outside pg_catalog
// it calls, and pg_terminate_backend / pg_cancel_backend of a client's pid.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <cctype>
#include <iterator>

#include "proxy/router/analysis_internal.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

namespace {

using ast::str_of;

// pg_catalog's functions (PostgreSQL 15), sorted: calls to them change nothing unseen (but
// set_config, which the analysis reads itself).
constexpr std::string_view kBuiltinFunctions[] = {
#include "proxy/router/builtin_functions.inc"
};

bool builtin_function(const PgQuery__FuncCall* f) {
  if (f->n_funcname == 0) return true;
  if (f->n_funcname > 1 && ast::str_of(f->funcname[f->n_funcname - 2]) != "pg_catalog")
    return false;
  const std::string_view name = ast::str_of(f->funcname[f->n_funcname - 1]);
  return std::binary_search(std::begin(kBuiltinFunctions), std::end(kBuiltinFunctions), name);
}

// pg_catalog's functions with a volatile overload (PostgreSQL 15), sorted.
constexpr std::string_view kVolatileFunctions[] = {
#include "proxy/router/volatile_functions.inc"
};

// Stable functions that still need the primary: they assign a transaction id (a replica in
// recovery refuses them).
constexpr std::string_view kAssignsXid[] = {"pg_current_xact_id", "txid_current"};

// pg_catalog's functions with a volatile variant that neither lock, write nor assign a
// transaction id: a hot standby runs them in a READ ONLY transaction as its primary does
// (clocks, random values, sleeps, the server's own recovery state). A call of any other
// volatile one is a side effect (Analysis::side_effects). Sorted.
constexpr std::string_view kQuietVolatile[] = {"clock_timestamp",
                                               "gen_random_uuid",
                                               "pg_is_in_recovery",
                                               "pg_is_wal_replay_paused",
                                               "pg_last_wal_receive_lsn",
                                               "pg_last_wal_replay_lsn",
                                               "pg_last_xact_replay_timestamp",
                                               "pg_sleep",
                                               "pg_sleep_for",
                                               "pg_sleep_until",
                                               "random",
                                               "timeofday"};

bool quiet_volatile(const PgQuery__FuncCall* f) {
  const std::string_view name = ast::str_of(f->funcname[f->n_funcname - 1]);
  return std::binary_search(std::begin(kQuietVolatile), std::end(kQuietVolatile), name);
}

bool volatile_builtin(const PgQuery__FuncCall* f) {
  if (f->n_funcname == 0 || !builtin_function(f)) return false;
  const std::string_view name = ast::str_of(f->funcname[f->n_funcname - 1]);
  return std::binary_search(std::begin(kVolatileFunctions), std::end(kVolatileFunctions), name) ||
         std::find(std::begin(kAssignsXid), std::end(kAssignsXid), name) != std::end(kAssignsXid);
}

// A SELECT that only reads: no INTO (it creates a table), no FOR UPDATE/SHARE, no INSERT,
// UPDATE or DELETE in its WITH (set operations' arms are SELECTs and checked by the walk of
// calls; their locking clauses are refused by PostgreSQL's grammar).
bool plain_read(const Node* st) {
  if (st->node_case != PG_QUERY__NODE__NODE_SELECT_STMT) return false;
  const auto* s = st->select_stmt;
  if (s->into_clause || s->n_locking_clause > 0) return false;
  bool writes = false;
  ast::walk(&st->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__insert_stmt__descriptor ||
        m->descriptor == &pg_query__update_stmt__descriptor ||
        m->descriptor == &pg_query__delete_stmt__descriptor ||
        m->descriptor == &pg_query__merge_stmt__descriptor ||
        m->descriptor == &pg_query__locking_clause__descriptor ||
        m->descriptor == &pg_query__into_clause__descriptor)
      writes = true;
  });
  return !writes;
}

bool plain_identifier(std::string_view s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9')) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

std::optional<std::string> const_text(const Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST || n->a_const->isnull) return std::nullopt;
  const auto* c = n->a_const;
  switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_SVAL:
      return std::string(c->sval->sval);
    case PG_QUERY__A__CONST__VAL_IVAL:
      return std::to_string(c->ival->ival);
    case PG_QUERY__A__CONST__VAL_FVAL:
      return std::string(c->fval->fval);
    default:
      return std::nullopt;
  }
}

// SET TRANSACTION modes (`this_transaction`) become BEGIN's words for shards that join the
// transaction later; SET SESSION CHARACTERISTICS AS TRANSACTION becomes the session
// settings it is (default_transaction_isolation, _read_only, _deferrable).
void transaction_modes(const PgQuery__VariableSetStmt* v, bool this_transaction, Analysis& a) {
  std::string* words = this_transaction ? &a.transaction_modes : nullptr;
  transaction_mode_words(v->args, v->n_args, words, &a.settings);
}

}  // namespace

namespace {

// One transaction mode (`option` as SET TRANSACTION's DefElem or the setting names it:
// transaction_isolation, transaction_read_only, transaction_deferrable): BEGIN's words, and
// the default_transaction_* setting with its value. False for another option.
bool mode_words(const std::string& option, const std::string& value, std::string& words,
                std::string& setting, std::string& setting_value) {
  const bool on = value == "1" || value == "true" || value == "on" || value == "yes";
  if (option == "transaction_isolation") {
    std::string level = value;
    for (auto& ch : level) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    words = "ISOLATION LEVEL " + level;
    setting = "default_transaction_isolation";
    setting_value = value;
  } else if (option == "transaction_read_only") {
    words = on ? "READ ONLY" : "READ WRITE";
    setting = "default_transaction_read_only";
    setting_value = on ? "on" : "off";
  } else if (option == "transaction_deferrable") {
    words = on ? "DEFERRABLE" : "NOT DEFERRABLE";
    setting = "default_transaction_deferrable";
    setting_value = on ? "on" : "off";
  } else {
    return false;
  }
  return true;
}

}  // namespace

void transaction_mode_words(Node* const* args, size_t n_args, std::string* words_out,
                            std::vector<SettingChange>* settings_out) {
  for (size_t i = 0; i < n_args; ++i) {
    const Node* n = args[i];
    if (!n || n->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !n->def_elem->defname) continue;
    const auto value = const_text(n->def_elem->arg);
    std::string words, setting, setting_value;
    if (!value || !mode_words(n->def_elem->defname, *value, words, setting, setting_value))
      continue;
    if (words_out)
      *words_out += (words_out->empty() ? "" : " ") + words;
    else if (settings_out)
      settings_out->push_back({setting, setting_value, false});
  }
}

bool transaction_setting_words(const PgQuery__VariableSetStmt* v, std::string& words) {
  if (v->kind != PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE || !v->name || v->n_args != 1)
    return false;
  const auto value = const_text(v->args[0]);
  std::string setting, setting_value;
  return value && mode_words(v->name, *value, words, setting, setting_value);
}

namespace {

// What a statement alone keeps in the server session: LISTEN, SQL PREPARE, a DO block (it
// may change anything, set_config or SET ROLE, where pgshard cannot see), a WITH HOLD
// cursor (it outlives its transaction).
void note_session_statement(const Node* st, Analysis& a) {
  switch (st->node_case) {
    case PG_QUERY__NODE__NODE_LISTEN_STMT:
    case PG_QUERY__NODE__NODE_DO_STMT:
      a.pins = true;
      a.side_effects = true;
      break;
    case PG_QUERY__NODE__NODE_CALL_STMT:
    case PG_QUERY__NODE__NODE_NOTIFY_STMT:
    case PG_QUERY__NODE__NODE_UNLISTEN_STMT:
      // (A hot standby refuses NOTIFY, LISTEN and UNLISTEN; a READ ONLY primary runs them.)
      a.side_effects = true;
      break;
    case PG_QUERY__NODE__NODE_PREPARE_STMT:
      // (One the session keeps, Analysis::sql_prepare_held, is in no server.)
      if (!a.sql_prepare_held) a.pins = true;
      break;
    case PG_QUERY__NODE__NODE_DECLARE_CURSOR_STMT:
      if (st->declare_cursor_stmt->options & kCursorOptHold) a.pins = true;
      break;
    case PG_QUERY__NODE__NODE_LOCK_STMT:
      a.locks = true;  // LOCK TABLE: on a replica it would exclude nobody on the primary
      a.side_effects = true;
      break;
    default:
      break;
  }
}

// What the relations and function calls anywhere in a statement do to the session:
// temporary objects and session advisory locks pin it, pg_prepared_statements is read,
// functions outside pg_catalog are called, volatile ones are noted (`acting_calls`: those
// that may lock or write). Returns the number of set_config calls.
int note_objects_and_calls(const Node* st, Analysis& a, bool& volatile_calls, bool& acting_calls) {
  int set_configs = 0;
  ast::walk(&st->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__range_var__descriptor) {
      // CREATE TEMP TABLE, SELECT ... INTO TEMP: relpersistence 't'.
      const auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
      if (rv->relpersistence && rv->relpersistence[0] == 't') a.pins = true;
      if (std::string_view(rv->relname) == "pg_prepared_statements" &&
          (!rv->schemaname[0] || std::string_view(rv->schemaname) == "pg_catalog"))
        a.prepared_statements_view = true;
      if (rv->schemaname && is_temp_schema(rv->schemaname)) a.pins = true;
    } else if (m->descriptor == &pg_query__string__descriptor) {
      // pg_temp.name anywhere (functions, types, sequences, views in the session's
      // temporary schema): the object lives in this server session.
      const auto* str = reinterpret_cast<const PgQuery__String*>(m);
      if (str->sval && is_temp_schema(str->sval)) a.pins = true;
    } else if (m->descriptor == &pg_query__func_call__descriptor) {
      const auto* f = reinterpret_cast<const PgQuery__FuncCall*>(m);
      auto name = f->n_funcname ? str_of(f->funcname[f->n_funcname - 1]) : std::string_view();
      if (name == "pg_advisory_lock" || name == "pg_advisory_lock_shared" ||
          name == "pg_try_advisory_lock" || name == "pg_try_advisory_lock_shared")
        a.pins = true;
      // Any advisory lock function (a replica's locks exclude nobody on the primary).
      if (name.starts_with("pg_advisory_") || name.starts_with("pg_try_advisory_")) a.locks = true;
      if (name == "set_config") ++set_configs;
      if (f->n_funcname == 1) a.unqualified_calls = true;
      if (volatile_builtin(f)) {
        volatile_calls = true;
        acting_calls = acting_calls || !quiet_volatile(f);
      }
      if (!builtin_function(f)) {
        std::string called;
        for (size_t i = 0; i < f->n_funcname; ++i)
          called += (i ? "." : "") + std::string(ast::str_of(f->funcname[i]));
        a.user_functions.push_back(std::move(called));
      }
    }
  });
  return set_configs;
}

// The value of SET name = v1, v2... as PostgreSQL flattens it: list settings such as
// search_path quote each element that needs it. nullopt for forms not tracked (SET TIME
// ZONE INTERVAL ... and friends).
std::optional<std::string> set_value(const PgQuery__VariableSetStmt* v, std::string_view name) {
  static constexpr std::string_view kListQuote[] = {
      "search_path", "temp_tablespaces", "local_preload_libraries", "session_preload_libraries"};
  const bool list_quote =
      std::find(std::begin(kListQuote), std::end(kListQuote), name) != std::end(kListQuote);
  if (v->n_args == 0) return std::nullopt;
  std::string value;
  for (size_t k = 0; k < v->n_args; ++k) {
    auto t = const_text(v->args[k]);
    if (!t) return std::nullopt;
    const bool is_string = v->args[k]->a_const->val_case == PG_QUERY__A__CONST__VAL_SVAL;
    if (k) value += ", ";
    if (list_quote && is_string && !plain_identifier(*t)) {
      value += '"';
      for (char ch : *t) value += ch == '"' ? std::string("\"\"") : std::string(1, ch);
      value += '"';
    } else {
      value += *t;
    }
  }
  return value;
}

// SET LOCAL (not of pgshard.*, which the router keeps): shards that join the transaction
// later must run it too.
void note_local_set(const PgQuery__VariableSetStmt* v, Analysis& a) {
  using Kind = SettingChange::Kind;
  const std::string name = v->name ? v->name : "";
  if (name.starts_with("pgshard.")) return;
  if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT ||
      v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_RESET) {
    a.settings.push_back({name, std::nullopt, false, Kind::kLocal});
  } else if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE) {
    if (auto value = set_value(v, name)) a.settings.push_back({name, *value, false, Kind::kLocal});
  }
}

// SAVEPOINT, RELEASE and ROLLBACK TO: a SET after a savepoint is undone by ROLLBACK TO it.
void note_savepoint(const PgQuery__TransactionStmt* t, Analysis& a) {
  using Kind = SettingChange::Kind;
  const std::string name = t->savepoint_name ? t->savepoint_name : "";
  switch (t->kind) {
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_SAVEPOINT:
      a.settings.push_back({name, std::nullopt, false, Kind::kSavepoint});
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_RELEASE:
      a.settings.push_back({name, std::nullopt, false, Kind::kRelease});
      break;
    case PG_QUERY__TRANSACTION_STMT_KIND__TRANS_STMT_ROLLBACK_TO:
      a.settings.push_back({name, std::nullopt, false, Kind::kRollbackTo});
      break;
    default:
      break;
  }
}

// SET / RESET of a session setting (not SET LOCAL, not pgshard.*, which the router keeps).
void note_variable_set(const PgQuery__VariableSetStmt* v, Analysis& a) {
  std::string name = v->name ? v->name : "";
  if (v->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_MULTI &&
      (name == "TRANSACTION" || name == "SESSION CHARACTERISTICS")) {
    transaction_modes(v, name == "TRANSACTION", a);
    return;
  }
  // SET [LOCAL] transaction_read_only / transaction_isolation / transaction_deferrable:
  // SET TRANSACTION in a setting's words (they last for the transaction either way).
  if (std::string words; transaction_setting_words(v, words)) {
    a.transaction_modes = words;
    return;
  }
  if (v->is_local) {
    note_local_set(v, a);
    return;
  }
  // The role and the session authorization decide what the server lets the session do:
  // a client that changes them keeps its servers, which are reset before anyone else
  // gets them (DISCARD ALL resets both).
  if (name == "role" || name == "session_authorization") a.pins = true;
  if (name.starts_with("pgshard.")) return;
  switch (v->kind) {
    case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL:
      a.settings.push_back({"", std::nullopt, true});
      break;
    case PG_QUERY__VARIABLE_SET_KIND__VAR_RESET:
    case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT:
      a.settings.push_back({name, std::nullopt, false});
      break;
    case PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE:
      if (auto value = set_value(v, name)) a.settings.push_back({name, *value, false});
      break;
    default:
      break;
  }
}

// SELECT set_config('name', 'value', false) in a select list: the settings it changes for the
// session. Returns the number of set_config calls tracked so.
int note_set_config_calls(const PgQuery__SelectStmt* s, Analysis& a) {
  int tracked = 0;
  for (size_t k = 0; k < s->n_target_list; ++k) {
    const Node* t = s->target_list[k];
    const Node* e = t->node_case == PG_QUERY__NODE__NODE_RES_TARGET ? t->res_target->val : nullptr;
    if (!e || e->node_case != PG_QUERY__NODE__NODE_FUNC_CALL) continue;
    const auto* f = e->func_call;
    if (f->n_funcname == 0 || str_of(f->funcname[f->n_funcname - 1]) != "set_config" ||
        f->n_args != 3)
      continue;
    auto name = const_text(f->args[0]);
    auto value = const_text(f->args[1]);
    const Node* local = f->args[2];
    const bool is_false = local && local->node_case == PG_QUERY__NODE__NODE_A_CONST &&
                          local->a_const->val_case == PG_QUERY__A__CONST__VAL_BOOLVAL &&
                          !local->a_const->boolval->boolval;
    if (name && value && is_false && !name->starts_with("pgshard.")) {
      a.settings.push_back({*name, *value, false});
      if (*name == "role" || *name == "session_authorization") a.pins = true;
      ++tracked;
    }
  }
  return tracked;
}

}  // namespace

// Session-level SET / RESET / DISCARD ALL / set_config(..., false): the settings a client
// changes for the rest of its session, with values flattened as PostgreSQL flattens them.
void extract_settings(const PgQuery__ParseResult* tree, Analysis& a) {
  a.reads_only = tree->n_stmts > 0;
  for (size_t i = 0; i < tree->n_stmts; ++i) {
    const Node* st = tree->stmts[i]->stmt;
    if (!st) continue;
    note_session_statement(st, a);
    bool volatile_calls = false, acting_calls = false;
    // (set_config anywhere)
    int set_configs = note_objects_and_calls(st, a, volatile_calls, acting_calls);
    a.reads_only = a.reads_only && plain_read(st) && !volatile_calls;
    a.side_effects = a.side_effects || acting_calls;
    // COPY FROM STDIN: no statement may follow it in the request (the server waits for
    // CopyData); a function in its WHERE clause is left unchecked.
    if (st->node_case == PG_QUERY__NODE__NODE_COPY_STMT && st->copy_stmt->is_from)
      a.user_functions.clear();
    if (st->node_case == PG_QUERY__NODE__NODE_DISCARD_STMT &&
        st->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
      a.settings.push_back({"", std::nullopt, true});
      if (a.sql_prepare == Analysis::SqlPrepareOp::kNone) {
        a.sql_prepare = Analysis::SqlPrepareOp::kDeallocate;  // every prepared statement
        a.sql_prepared.clear();
      }
    } else if (st->node_case == PG_QUERY__NODE__NODE_VARIABLE_SET_STMT) {
      note_variable_set(st->variable_set_stmt, a);
    } else if (st->node_case == PG_QUERY__NODE__NODE_SELECT_STMT) {
      set_configs -= note_set_config_calls(st->select_stmt, a);
    } else if (st->node_case == PG_QUERY__NODE__NODE_TRANSACTION_STMT) {
      note_savepoint(st->transaction_stmt, a);
    }
    // set_config where pgshard cannot follow it (a subselect, a computed name or value, an
    // expression): the client keeps its servers rather than leak the setting.
    if (set_configs > 0) a.pins = true;
  }
}

std::optional<Analysis::SignalCall> signal_call(const PgQuery__ParseResult* tree) {
  if (tree->n_stmts != 1 || !tree->stmts[0]->stmt ||
      tree->stmts[0]->stmt->node_case != PG_QUERY__NODE__NODE_SELECT_STMT)
    return std::nullopt;
  const auto* sel = tree->stmts[0]->stmt->select_stmt;
  if (sel->n_target_list != 1 || sel->n_from_clause || sel->where_clause || sel->n_group_clause ||
      sel->having_clause || sel->n_sort_clause || sel->limit_count || sel->n_values_lists ||
      sel->with_clause || sel->op != PG_QUERY__SET_OPERATION__SETOP_NONE)
    return std::nullopt;
  const Node* t = sel->target_list[0];
  if (t->node_case != PG_QUERY__NODE__NODE_RES_TARGET || !t->res_target->val ||
      t->res_target->val->node_case != PG_QUERY__NODE__NODE_FUNC_CALL)
    return std::nullopt;
  const auto* f = t->res_target->val->func_call;
  if (f->n_funcname == 0 || f->n_funcname > 2 || f->n_args < 1 || f->n_args > 2)
    return std::nullopt;
  if (f->n_funcname == 2 && ast::str_of(f->funcname[0]) != "pg_catalog") return std::nullopt;
  const auto name = ast::str_of(f->funcname[f->n_funcname - 1]);
  if (name != "pg_terminate_backend" && name != "pg_cancel_backend") return std::nullopt;
  if (name == "pg_cancel_backend" && f->n_args != 1) return std::nullopt;
  const Node* arg = f->args[0];
  while (arg && arg->node_case == PG_QUERY__NODE__NODE_TYPE_CAST) arg = arg->type_cast->arg;
  if (!arg) return std::nullopt;
  Analysis::SignalCall call;
  call.terminate = name == "pg_terminate_backend";
  if (arg->node_case == PG_QUERY__NODE__NODE_PARAM_REF) {
    call.param = arg->param_ref->number;
  } else if (arg->node_case == PG_QUERY__NODE__NODE_A_CONST && !arg->a_const->isnull &&
             arg->a_const->val_case == PG_QUERY__A__CONST__VAL_IVAL) {
    call.pid = arg->a_const->ival->ival;
  } else {
    return std::nullopt;
  }
  return call;
}

}  // namespace pgshard::router::detail
