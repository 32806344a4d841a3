// Routing: a pure function of (statement text, session hints, config) -> Route. No I/O.
#include "proxy/router/router.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>

#include <algorithm>
#include <memory>

#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"

namespace pgshard::router {

namespace {

using protocol::sqlstate::kInvalidParameterValue;

constexpr std::string_view kPrefix = "pgshard.";

// ASCII case-insensitive search for a lowercase needle; runs on every statement, so it
// avoids locale-aware tolower().
std::size_t ifind(std::string_view hay, std::string_view needle) {
  if (needle.size() > hay.size()) return std::string_view::npos;
  const std::size_t last = hay.size() - needle.size();
  for (std::size_t i = 0; i <= last; ++i) {
    if ((hay[i] | 0x20) != needle[0]) continue;
    std::size_t j = 1;
    while (j < needle.size() && (hay[i + j] | 0x20) == (needle[j] | 0x20)) ++j;
    if (j == needle.size()) return i;
  }
  return std::string_view::npos;
}

bool icontains(std::string_view hay, std::string_view needle) {
  return ifind(hay, needle) != std::string_view::npos;
}

enum class SetAction { kSet, kReset, kShow };

struct SetCommand {
  SetAction action = SetAction::kSet;
  std::string name;  // after "pgshard."; empty with RESET ALL
  std::string value;
  bool local = false;
};

// What the parser says about a statement string, restricted to what routing needs here.
struct Analysis {
  bool parsed = false;
  int statements = 0;
  std::vector<SetCommand> commands;  // pgshard.* SET/RESET/SHOW, in order
  bool reset_all = false;            // RESET ALL / DISCARD ALL also clear pgshard.*
  Hints comment;                     // from /* pgshard: ... */ comments
  std::string comment_error;
};

std::string const_text(const PgQuery__Node* n) {
  if (!n || n->node_case != PG_QUERY__NODE__NODE_A_CONST) return {};
  const auto* c = n->a_const;
  switch (c->val_case) {
    case PG_QUERY__A__CONST__VAL_SVAL: return c->sval->sval;
    case PG_QUERY__A__CONST__VAL_IVAL: return std::to_string(c->ival->ival);
    case PG_QUERY__A__CONST__VAL_FVAL: return c->fval->fval;
    case PG_QUERY__A__CONST__VAL_BOOLVAL: return c->boolval->boolval ? "on" : "off";
    default: return {};
  }
}

void analyze_statements(std::string_view sql, Analysis& a) {
  std::string text(sql);
  auto result = pg_query_parse_protobuf(text.c_str());
  std::unique_ptr<PgQueryProtobufParseResult, void (*)(PgQueryProtobufParseResult*)> guard(
      &result, [](PgQueryProtobufParseResult* r) { pg_query_free_protobuf_parse_result(*r); });
  if (result.error) return;
  auto* tree = pg_query__parse_result__unpack(
      nullptr, result.parse_tree.len, reinterpret_cast<const uint8_t*>(result.parse_tree.data));
  if (!tree) return;
  a.parsed = true;
  a.statements = static_cast<int>(tree->n_stmts);
  for (std::size_t i = 0; i < tree->n_stmts; ++i) {
    const auto* node = tree->stmts[i]->stmt;
    if (!node) continue;
    if (node->node_case == PG_QUERY__NODE__NODE_VARIABLE_SET_STMT) {
      const auto* s = node->variable_set_stmt;
      std::string_view name = s->name ? s->name : "";
      if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_RESET_ALL) {
        a.reset_all = true;
        continue;
      }
      if (!name.starts_with(kPrefix)) continue;
      SetCommand c;
      c.name = name.substr(kPrefix.size());
      c.local = s->is_local;
      if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_VALUE && s->n_args == 1) {
        c.value = const_text(s->args[0]);
      } else if (s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_RESET ||
                 s->kind == PG_QUERY__VARIABLE_SET_KIND__VAR_SET_DEFAULT) {
        c.action = SetAction::kReset;
      } else {
        c.value = "\x01";  // marks a form we do not accept (lists, FROM CURRENT)
      }
      a.commands.push_back(std::move(c));
    } else if (node->node_case == PG_QUERY__NODE__NODE_VARIABLE_SHOW_STMT) {
      std::string_view name = node->variable_show_stmt->name;
      if (name.starts_with(kPrefix))
        a.commands.push_back({SetAction::kShow, std::string(name.substr(kPrefix.size())), {}, false});
    } else if (node->node_case == PG_QUERY__NODE__NODE_DISCARD_STMT &&
               node->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
      a.reset_all = true;
    }
  }
  pg_query__parse_result__free_unpacked(tree, nullptr);
}

// /* pgshard: shard=s1 */ and /* pgshard: sharding_key=42 */, found as comment tokens by
// PostgreSQL's own scanner so a string literal that looks like a hint is not one.
void analyze_comments(std::string_view sql, Analysis& a) {
  std::string text(sql);
  auto result = pg_query_scan(text.c_str());
  if (result.error) {
    pg_query_free_scan_result(result);
    return;
  }
  auto* scan = pg_query__scan_result__unpack(
      nullptr, result.pbuf.len, reinterpret_cast<const uint8_t*>(result.pbuf.data));
  if (scan) {
    for (std::size_t i = 0; i < scan->n_tokens; ++i) {
      const auto* t = scan->tokens[i];
      if (t->token != PG_QUERY__TOKEN__C_COMMENT && t->token != PG_QUERY__TOKEN__SQL_COMMENT)
        continue;
      std::string_view c = sql.substr(static_cast<std::size_t>(t->start),
                                      static_cast<std::size_t>(t->end - t->start));
      c.remove_prefix(2);  // "/*" or "--"
      if (c.ends_with("*/")) c.remove_suffix(2);
      auto at = ifind(c, "pgshard:");
      if (at == c.npos) continue;
      c.remove_prefix(at + 8);
      // Whitespace- or comma-separated key=value pairs.
      std::size_t pos = 0;
      while (pos < c.size()) {
        while (pos < c.size() && (std::isspace(static_cast<unsigned char>(c[pos])) || c[pos] == ','))
          ++pos;
        auto end = pos;
        while (end < c.size() && !std::isspace(static_cast<unsigned char>(c[end])) && c[end] != ',')
          ++end;
        auto pair = c.substr(pos, end - pos);
        pos = end;
        if (pair.empty()) continue;
        auto eq = pair.find('=');
        std::string key(pair.substr(0, eq));
        for (char& ch : key) ch = static_cast<char>(ch | (ch >= 'A' && ch <= 'Z' ? 0x20 : 0));
        auto value = eq == pair.npos ? std::string_view{} : pair.substr(eq + 1);
        if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'')
          value = value.substr(1, value.size() - 2);
        if (key == "shard" && !value.empty()) a.comment.shard = std::string(value);
        else if (key == "sharding_key" && !value.empty()) a.comment.sharding_key = std::string(value);
        else a.comment_error = "unknown pgshard hint '" + std::string(pair) + "'";
      }
    }
    pg_query__scan_result__free_unpacked(scan, nullptr);
  }
  pg_query_free_scan_result(result);
}

Analysis analyze(std::string_view sql) {
  Analysis a;
  // Only text that mentions pgshard (or resets everything) can change routing; skip the
  // parser for everything else.
  bool mentions = icontains(sql, "pgshard");
  bool resets = icontains(sql, "reset") || icontains(sql, "discard");
  if (!mentions && !resets) return a;
  analyze_statements(sql, a);
  if (mentions) analyze_comments(sql, a);
  return a;
}

std::optional<std::string> check_hint(const std::string& name, const std::string& value,
                                      const config::Config& cfg) {
  if (name == "shard") {
    if (cfg.shard_index(value) < 0) return "unknown shard \"" + value + "\"";
  } else if (name == "sharding_key") {
    if (!shard_for_key(value, cfg))
      return "invalid sharding key \"" + value + "\" for type " +
             config::to_string(cfg.default_key_type());
  } else {
    return "unrecognized configuration parameter \"pgshard." + name + "\"";
  }
  return std::nullopt;
}

// Applies SET/RESET pgshard.* to `h`; returns an error for bad names or values.
std::optional<protocol::ErrorInfo> apply(const Analysis& a, SessionHints& h,
                                         const config::Config& cfg) {
  if (a.reset_all) h = SessionHints{};
  for (const auto& c : a.commands) {
    if (c.action == SetAction::kShow) {
      if (c.name != "shard" && c.name != "sharding_key")
        return protocol::error(protocol::sqlstate::kUndefinedObject,
                               "unrecognized configuration parameter \"pgshard." + c.name + "\"");
      continue;
    }
    if (c.value == "\x01")
      return protocol::error(kInvalidParameterValue, "pgshard." + c.name + " takes a single value");
    if (c.action == SetAction::kSet) {
      if (auto err = check_hint(c.name, c.value, cfg))
        return protocol::error(c.name == "shard" || c.name == "sharding_key"
                                   ? kInvalidParameterValue
                                   : protocol::sqlstate::kUndefinedObject,
                               *err);
    } else if (c.name != "shard" && c.name != "sharding_key") {
      return protocol::error(protocol::sqlstate::kUndefinedObject,
                             "unrecognized configuration parameter \"pgshard." + c.name + "\"");
    }
    Hints& level = c.local ? h.local : h.session;
    auto& slot = c.name == "shard" ? level.shard : level.sharding_key;
    if (c.action == SetAction::kSet) slot = c.value;
    else slot.reset();
    // A session-level SET also replaces a SET LOCAL of the same name, as in PostgreSQL.
    if (!c.local) (c.name == "shard" ? h.local.shard : h.local.sharding_key).reset();
  }
  return std::nullopt;
}

// Picks the shard from hints by precedence; nullopt when no hint applies.
std::optional<Route> from_hints(const Hints& h, const char* level, const config::Config& cfg) {
  Route r;
  if (h.shard) {
    r.shard = cfg.shard_index(*h.shard);
    r.reason = std::string(level) + " shard=" + *h.shard;
    if (r.shard < 0) {
      r.kind = RouteKind::kError;
      r.error = protocol::error(kInvalidParameterValue, "unknown shard \"" + *h.shard + "\"",
                                {}, "shards are: see SHOW SHARDS on the pgshard console");
    }
    return r;
  }
  if (h.sharding_key) {
    auto s = shard_for_key(*h.sharding_key, cfg);
    r.reason = std::string(level) + " sharding_key=" + *h.sharding_key;
    if (!s) {
      r.kind = RouteKind::kError;
      r.error = protocol::error(kInvalidParameterValue,
                                "invalid sharding key \"" + *h.sharding_key + "\" for type " +
                                    config::to_string(cfg.default_key_type()));
      return r;
    }
    r.shard = *s;
    return r;
  }
  return std::nullopt;
}

Route pick(const Analysis& a, const SessionHints& h, const config::Config& cfg) {
  if (!a.comment_error.empty()) {
    Route r;
    r.kind = RouteKind::kError;
    r.error = protocol::error(kInvalidParameterValue, a.comment_error, {},
                              "use /* pgshard: shard=NAME */ or /* pgshard: sharding_key=VALUE */");
    return r;
  }
  if (auto r = from_hints(a.comment, "comment hint", cfg)) return *r;
  if (auto r = from_hints(h.local, "SET LOCAL pgshard", cfg)) return *r;
  if (auto r = from_hints(h.session, "SET pgshard", cfg)) return *r;
  Route r;
  r.shard = 0;
  r.reason = "first shard";
  return r;
}

void answer_show(const SetCommand& c, const SessionHints& h, std::string& out) {
  const auto& slot = c.name == "shard" ? (h.local.shard ? h.local.shard : h.session.shard)
                                       : (h.local.sharding_key ? h.local.sharding_key
                                                               : h.session.sharding_key);
  protocol::RowDescription desc;
  std::string col = "pgshard." + c.name;
  desc.fields.push_back({col, 0, 0, 25 /* text */, -1, -1, 0});
  desc.write(out);
  protocol::DataRow row;
  static const std::string kUnset;
  row.values.emplace_back(std::string_view(slot ? *slot : kUnset));
  row.write(out);
  protocol::CommandComplete{"SHOW"}.write(out);
}

}  // namespace

std::optional<int> shard_for_key(std::string_view key, const config::Config& cfg) {
  auto h = partition_hash(cfg.default_key_type(), key);
  if (!h) return std::nullopt;
  return hash_to_index(*h, static_cast<int>(cfg.shards.size()));
}

Route route_query(std::string_view sql, const SessionHints& hints, const config::Config& cfg) {
  Analysis a = analyze(sql);
  SessionHints after = hints;
  if (auto err = apply(a, after, cfg)) {
    Route r;
    r.kind = RouteKind::kError;
    r.error = *err;
    r.hints = hints;
    return r;
  }
  const bool only_ours = a.parsed && a.statements > 0 &&
                         static_cast<int>(a.commands.size()) == a.statements && !a.reset_all;
  if (only_ours) {
    Route r;
    r.kind = RouteKind::kAnswer;
    r.reason = "pgshard setting";
    for (const auto& c : a.commands) {
      if (c.action == SetAction::kShow) {
        answer_show(c, after, r.answer);
      } else {
        protocol::CommandComplete{c.action == SetAction::kSet ? "SET" : "RESET"}.write(r.answer);
      }
    }
    r.hints = after;
    return r;
  }
  Route r = pick(a, after, cfg);
  r.hints = after;
  return r;
}

Route route_extended(std::string_view sql, const SessionHints& hints, const config::Config& cfg) {
  Analysis a = analyze(sql);
  SessionHints after = hints;
  if (auto err = apply(a, after, cfg)) {
    Route r;
    r.kind = RouteKind::kError;
    r.error = *err;
    r.hints = hints;
    return r;
  }
  Route r = pick(a, after, cfg);
  r.hints = after;
  return r;
}

}  // namespace pgshard::router
