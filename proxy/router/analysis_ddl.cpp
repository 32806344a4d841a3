// Schema changes in the analysis: which statements change the schema (the same on every
// shard), DROP of placed tables, DO blocks made of schema changes, and the foreign keys
// that cannot hold across shards.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <charconv>

#include "proxy/router/analysis_internal.hpp"
#include "proxy/router/ast.hpp"

namespace pgshard::router::detail {

using ast::str_of;
using ast::walk;

namespace {

// Whether two sharded tables put equal keys on the same shard.
bool placed_alike(const config::ShardedTable& a, const config::ShardedTable& b) {
  if (a.type != b.type || a.function != b.function || a.default_shard != b.default_shard)
    return false;
  switch (a.function) {
    case config::ShardFunction::kHash:
      return true;
    case config::ShardFunction::kRing:
      return a.ring == b.ring;
    case config::ShardFunction::kRange:
      return std::equal(a.ranges.begin(), a.ranges.end(), b.ranges.begin(), b.ranges.end(),
                        [](const auto& x, const auto& y) {
                          return x.from == y.from && x.to == y.to && x.shard == y.shard;
                        });
    case config::ShardFunction::kList:
      return a.lists == b.lists;
    case config::ShardFunction::kDirectory:
      return false;  // each table's directory may place a key anywhere
  }
  return false;
}

// A foreign key holds only between rows on one shard: from a sharded table's key to the
// key of a table sharded alike, or to a reference table (on every shard). The reason
// for any other foreign key a CREATE TABLE or ALTER TABLE declares.
std::optional<std::string> foreign_key_problem(const config::Config& cfg, const Node* stmt) {
  const PgQuery__RangeVar* owner = nullptr;
  std::vector<std::pair<const PgQuery__Constraint*, std::string>> fks;  // (fk, column)
  auto column_def = [&](const PgQuery__ColumnDef* d) {
    for (size_t i = 0; i < d->n_constraints; ++i) {
      const Node* c = d->constraints[i];
      if (c && c->node_case == PG_QUERY__NODE__NODE_CONSTRAINT &&
          c->constraint->contype == PG_QUERY__CONSTR_TYPE__CONSTR_FOREIGN)
        fks.emplace_back(c->constraint, d->colname ? d->colname : "");
    }
  };
  auto element = [&](const Node* e) {
    if (!e) return;
    if (e->node_case == PG_QUERY__NODE__NODE_COLUMN_DEF) column_def(e->column_def);
    if (e->node_case == PG_QUERY__NODE__NODE_CONSTRAINT &&
        e->constraint->contype == PG_QUERY__CONSTR_TYPE__CONSTR_FOREIGN)
      fks.emplace_back(e->constraint, "");
  };
  if (stmt->node_case == PG_QUERY__NODE__NODE_CREATE_STMT) {
    owner = stmt->create_stmt->relation;
    for (size_t i = 0; i < stmt->create_stmt->n_table_elts; ++i)
      element(stmt->create_stmt->table_elts[i]);
  } else if (stmt->node_case == PG_QUERY__NODE__NODE_ALTER_TABLE_STMT) {
    owner = stmt->alter_table_stmt->relation;
    for (size_t i = 0; i < stmt->alter_table_stmt->n_cmds; ++i) {
      const Node* cmd = stmt->alter_table_stmt->cmds[i];
      if (cmd && cmd->node_case == PG_QUERY__NODE__NODE_ALTER_TABLE_CMD)
        element(cmd->alter_table_cmd->def);
    }
  }
  if (!owner) return std::nullopt;
  auto names = [](PgQuery__Node** items, size_t n) {
    std::vector<std::string> out;
    for (size_t i = 0; i < n; ++i) out.emplace_back(str_of(items[i]));
    return out;
  };
  const int from = sharded_index(cfg, owner);
  for (const auto& [fk, column] : fks) {
    if (!fk->pktable || is_reference(cfg, fk->pktable)) continue;
    const int to = sharded_index(cfg, fk->pktable);
    if (from < 0 && to < 0) continue;  // neither is sharded
    const std::string what = "foreign key from " + std::string(owner->relname) + " to " +
                             std::string(fk->pktable->relname);
    if (from < 0 || to < 0)
      return what + " cannot hold across shards: " +
             std::string(from < 0 ? owner->relname : fk->pktable->relname) +
             " is not sharded like the other";
    const auto& a = cfg.sharded_tables[static_cast<std::size_t>(from)];
    const auto& b = cfg.sharded_tables[static_cast<std::size_t>(to)];
    auto fk_cols =
        column.empty() ? names(fk->fk_attrs, fk->n_fk_attrs) : std::vector<std::string>{column};
    auto pk_cols = names(fk->pk_attrs, fk->n_pk_attrs);
    if (pk_cols.empty() && fk_cols.size() == 1) pk_cols = {b.column};  // its primary key
    bool key_to_key = false;
    for (std::size_t i = 0; i < fk_cols.size() && i < pk_cols.size(); ++i)
      if (fk_cols[i] == a.column && pk_cols[i] == b.column) key_to_key = true;
    if (!key_to_key)
      return what + " cannot hold across shards: it must map " + a.table + "." + a.column +
             " (its shard key) to " + b.table + "." + b.column;
    if (!placed_alike(a, b))
      return what +
             " cannot hold across shards: the tables are not sharded alike (type, "
             "function and shards must match)";
  }
  return std::nullopt;
}

}  // namespace

bool is_temp_schema(std::string_view name) {
  return name == "pg_temp" || name.starts_with("pg_temp_");
}

bool schema_change(PgQuery__Node__NodeCase kind) {
  switch (kind) {
    case PG_QUERY__NODE__NODE_CREATE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TABLE_STMT:
    case PG_QUERY__NODE__NODE_INDEX_STMT:
    case PG_QUERY__NODE__NODE_DROP_STMT:
    case PG_QUERY__NODE__NODE_RENAME_STMT:
    case PG_QUERY__NODE__NODE_COMMENT_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SEQ_STMT:
    case PG_QUERY__NODE__NODE_ALTER_SEQ_STMT:
    case PG_QUERY__NODE__NODE_VIEW_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ENUM_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ENUM_STMT:
    case PG_QUERY__NODE__NODE_COMPOSITE_TYPE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_RANGE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DOMAIN_STMT:
    case PG_QUERY__NODE__NODE_ALTER_TYPE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_CREATE_FUNCTION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_FUNCTION_STMT:
    case PG_QUERY__NODE__NODE_DEFINE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_ALTER_EXTENSION_STMT:
    case PG_QUERY__NODE__NODE_GRANT_STMT:
    case PG_QUERY__NODE__NODE_GRANT_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DEFAULT_PRIVILEGES_STMT:
    case PG_QUERY__NODE__NODE_CREATE_ROLE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_STMT:
    case PG_QUERY__NODE__NODE_DROP_ROLE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_TRIG_STMT:
    case PG_QUERY__NODE__NODE_CREATE_POLICY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_POLICY_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OWNER_STMT:
    case PG_QUERY__NODE__NODE_ALTER_OBJECT_SCHEMA_STMT:
    case PG_QUERY__NODE__NODE_RULE_STMT:
    case PG_QUERY__NODE__NODE_CREATE_STATS_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CAST_STMT:
    case PG_QUERY__NODE__NODE_ALTER_COLLATION_STMT:
    case PG_QUERY__NODE__NODE_CREATE_CONVERSION_STMT:
    // Databases and role settings live in each shard's server.
    case PG_QUERY__NODE__NODE_CREATEDB_STMT:
    case PG_QUERY__NODE__NODE_DROPDB_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_STMT:
    case PG_QUERY__NODE__NODE_ALTER_DATABASE_SET_STMT:
    case PG_QUERY__NODE__NODE_ALTER_ROLE_SET_STMT:
      return true;
    default:
      return false;
  }
}

bool names_temp_object(const PgQuery__Node* stmt) {
  bool temp = false;
  walk(&stmt->base, [&](const ProtobufCMessage* m) {
    if (m->descriptor == &pg_query__range_var__descriptor) {
      const auto* rv = reinterpret_cast<const PgQuery__RangeVar*>(m);
      if ((rv->relpersistence && rv->relpersistence[0] == 't') ||
          (rv->schemaname && is_temp_schema(rv->schemaname)))
        temp = true;
    } else if (m->descriptor == &pg_query__string__descriptor) {
      const auto* str = reinterpret_cast<const PgQuery__String*>(m);
      if (str->sval && is_temp_schema(str->sval)) temp = true;
    }
  });
  return temp;
}

bool drops_placed_table(const config::Config& cfg, const PgQuery__DropStmt* d) {
  for (size_t i = 0; i < d->n_objects; ++i) {
    const Node* o = d->objects[i];
    if (!o || o->node_case != PG_QUERY__NODE__NODE_LIST || o->list->n_items == 0) continue;
    PgQuery__RangeVar rv = PG_QUERY__RANGE_VAR__INIT;
    std::string rel(str_of(o->list->items[o->list->n_items - 1]));
    std::string schema(o->list->n_items > 1 ? str_of(o->list->items[o->list->n_items - 2]) : "");
    rv.relname = rel.data();
    rv.schemaname = schema.data();
    if (sharded_index(cfg, &rv) >= 0 || is_reference(cfg, &rv)) return true;
  }
  return false;
}

Analysis& schema_change_everywhere(const Node* stmt,
                                   const std::vector<const PgQuery__RangeVar*>& rels, Analysis& a) {
  a.ddl = true;
  a.target = Analysis::Target::kAllShards;
  a.reason = "schema change: every shard";
  for (const auto* r : rels) a.schema_objects.emplace_back(r->relname);
  if (stmt->node_case == PG_QUERY__NODE__NODE_DROP_STMT) {
    a.drops = true;
    const auto* d = stmt->drop_stmt;
    for (size_t i = 0; i < d->n_objects; ++i) {
      const Node* o = d->objects[i];
      if (o && o->node_case == PG_QUERY__NODE__NODE_LIST && o->list->n_items > 0)
        a.schema_objects.emplace_back(str_of(o->list->items[o->list->n_items - 1]));
    }
  }
  return a;
}

Analysis& sharded_schema_change(const config::Config& cfg, const Node* stmt, Analysis& a) {
  if (auto problem = foreign_key_problem(cfg, stmt)) {
    a.target = Analysis::Target::kError;
    a.error = *problem;
    a.hint =
        "reference the shard key from a table sharded alike by that key, or make the "
        "referenced table a reference table";
    return a;
  }
  a.target = Analysis::Target::kAllShards;
  a.reason = "DDL on a sharded table: every shard";
  return a;
}

namespace {

// A JSON string's content from `i` (just past its opening quote) up to its closing quote,
// unescaped; \uXXXX as UTF-8 (a surrogate pair's halves each on their own: such text is
// never a table name pgshard knows).
std::string json_string(std::string_view json, std::size_t i) {
  std::string q;
  for (; i < json.size() && json[i] != '"'; ++i) {
    if (json[i] != '\\') {
      q += json[i];
      continue;
    }
    if (++i >= json.size()) break;
    switch (json[i]) {
      case 'n':
        q += '\n';
        break;
      case 't':
        q += '\t';
        break;
      case 'r':
        q += '\r';
        break;
      case 'b':
        q += '\b';
        break;
      case 'f':
        q += '\f';
        break;
      case 'u': {
        if (i + 4 >= json.size()) return q;
        unsigned code = 0;
        std::from_chars(json.data() + i + 1, json.data() + i + 5, code, 16);
        i += 4;
        if (code < 0x80) {
          q += static_cast<char>(code);
        } else if (code < 0x800) {
          q += static_cast<char>(0xC0 | (code >> 6));
          q += static_cast<char>(0x80 | (code & 0x3F));
        } else {
          q += static_cast<char>(0xE0 | (code >> 12));
          q += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
          q += static_cast<char>(0x80 | (code & 0x3F));
        }
        break;
      }
      default:
        q += json[i];
    }
  }
  return q;
}

}  // namespace

DoBlock read_do_block(const PgQuery__DoStmt* d) {
  DoBlock out;
  std::string_view body, language = "plpgsql";
  for (size_t i = 0; i < d->n_args; ++i) {
    const Node* arg = d->args[i];
    if (!arg || arg->node_case != PG_QUERY__NODE__NODE_DEF_ELEM || !arg->def_elem->defname)
      continue;
    const std::string_view name = arg->def_elem->defname;
    if (name == "as") body = str_of(arg->def_elem->arg);
    if (name == "language") language = str_of(arg->def_elem->arg);
  }
  out.language = language;
  if (body.empty() || language != "plpgsql") return out;
  std::string tag = "pgshard_do";
  while (body.find("$" + tag + "$") != std::string_view::npos) tag += "_";
  const std::string function = "CREATE FUNCTION pgshard_do() RETURNS void LANGUAGE plpgsql AS $" +
                               tag + "$" + std::string(body) + "$" + tag + "$";
  auto parsed = pg_query_parse_plpgsql(function.c_str());
  out.read = !parsed.error && parsed.plpgsql_funcs;
  if (out.read) {
    const std::string_view json = parsed.plpgsql_funcs;
    static constexpr std::string_view kStmt = "\"PLpgSQL_stmt_", kQuery = "\"query\":\"";
    for (auto at = json.find(kStmt); at != std::string_view::npos; at = json.find(kStmt, at + 1)) {
      const auto end = json.find('"', at + kStmt.size());
      const auto type = json.substr(at + kStmt.size(), end - at - kStmt.size());
      if (type != "block" && type != "execsql" && type != "return") out.plain = false;
      if (type == "dynexecute" || type == "dynfors") out.dynamic = true;
    }
    if (json.find("\"dynquery\"") != std::string_view::npos) out.dynamic = true;
    for (auto at = json.find(kQuery); at != std::string_view::npos; at = json.find(kQuery, at + 1))
      out.queries.push_back(json_string(json, at + kQuery.size()));
  }
  pg_query_free_plpgsql_parse_result(parsed);
  return out;
}

bool do_block_changes_schema_only(const config::Config& cfg, const PgQuery__DoStmt* d,
                                  std::string& problem) {
  const DoBlock block = read_do_block(d);
  if (!block.read || !block.plain || block.queries.empty()) return false;
  for (const auto& q : block.queries) {
    const auto tree = parse_tree(q);
    if (!tree || tree->n_stmts == 0) return false;
    for (size_t i = 0; i < tree->n_stmts; ++i) {
      const Node* st = tree->stmts[i]->stmt;
      if (!st || !schema_change(st->node_case) || names_temp_object(st)) return false;
      if (auto p = foreign_key_problem(cfg, st); p && problem.empty()) problem = *p;
    }
  }
  return true;
}

}  // namespace pgshard::router::detail
