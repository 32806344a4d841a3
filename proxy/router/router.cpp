// Routing: a pure function of (statement text, session hints, config) -> Route. No I/O.
#include "proxy/router/router.hpp"

#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <algorithm>
#include <array>
#include <bit>
#include <boost/container/flat_set.hpp>
#include <boost/container/small_vector.hpp>
#include <cstring>
#include <memory>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/router/text.hpp"

namespace pgshard::router {

namespace {

using protocol::sqlstate::kInvalidParameterValue;

constexpr std::string_view kPrefix = "pgshard.";

enum class SetAction { kSet, kReset, kShow };

struct SetCommand {
  SetAction action = SetAction::kSet;
  std::string name;  // after "pgshard."; empty with RESET ALL
  std::string value;
  bool local = false;
};

// pgshard.* settings and hints in a statement string, as PostgreSQL's parser sees them.
struct Settings {
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
    case PG_QUERY__A__CONST__VAL_SVAL:
      return c->sval->sval;
    case PG_QUERY__A__CONST__VAL_IVAL:
      return std::to_string(c->ival->ival);
    case PG_QUERY__A__CONST__VAL_FVAL:
      return c->fval->fval;
    case PG_QUERY__A__CONST__VAL_BOOLVAL:
      return c->boolval->boolval ? "on" : "off";
    default:
      return {};
  }
}

void analyze_statements(std::string_view sql, Settings& a) {
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
        a.commands.push_back(
            {SetAction::kShow, std::string(name.substr(kPrefix.size())), {}, false});
    } else if (node->node_case == PG_QUERY__NODE__NODE_DISCARD_STMT &&
               node->discard_stmt->target == PG_QUERY__DISCARD_MODE__DISCARD_ALL) {
      a.reset_all = true;
    }
  }
  pg_query__parse_result__free_unpacked(tree, nullptr);
}

// /* pgshard: shard=s1 */ and /* pgshard: sharding_key=42 */, found as comment tokens by
// PostgreSQL's own scanner so a string literal that looks like a hint is not one.
void analyze_comments(std::string_view sql, Settings& a) {
  std::string text(sql);
  auto result = pg_query_scan(text.c_str());
  if (result.error) {
    pg_query_free_scan_result(result);
    return;
  }
  auto* scan = pg_query__scan_result__unpack(nullptr, result.pbuf.len,
                                             reinterpret_cast<const uint8_t*>(result.pbuf.data));
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
        while (pos < c.size() &&
               (std::isspace(static_cast<unsigned char>(c[pos])) || c[pos] == ','))
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
        if (key == "shard" && !value.empty())
          a.comment.shard = std::string(value);
        else if (key == "sharding_key" && !value.empty())
          a.comment.sharding_key = std::string(value);
        else
          a.comment_error = "unknown pgshard hint '" + std::string(pair) + "'";
      }
    }
    pg_query__scan_result__free_unpacked(scan, nullptr);
  }
  pg_query_free_scan_result(result);
}

Settings analyze(std::string_view sql) {
  Settings a;
  // Only text that mentions pgshard (or resets everything) can change routing; skip the
  // parser for everything else.
  // One pass for the three words (most statements contain none of them).
  bool mentions = false, resets = false;
  static constexpr auto kFirst = [] {
    std::array<bool, 256> t{};
    for (char c : std::string_view("pPrRdD")) t[static_cast<unsigned char>(c)] = true;
    return t;
  }();
  auto check = [&](std::size_t i) {
    if (!kFirst[static_cast<unsigned char>(sql[i])]) return;
    const char c = static_cast<char>(sql[i] | 0x20);
    const auto rest = sql.substr(i);
    auto starts = [&](std::string_view word) {  // word is lower case
      if (rest.size() < word.size()) return false;
      for (std::size_t k = 0; k < word.size(); ++k)
        if (static_cast<char>(rest[k] | 0x20) != word[k]) return false;
      return true;
    };
    if (c == 'p' && !mentions) mentions = starts("pgshard");
    if (c == 'r' && !resets) resets = starts("reset");
    if (c == 'd' && !resets) resets = starts("discard");
  };
  // Eight bytes at a time: only the bytes that may be a first letter (any case) are looked
  // at. (The zero-byte test flags every such byte, and sometimes a byte above one.)
  constexpr uint64_t kOnes = 0x0101010101010101ULL, kHighs = 0x8080808080808080ULL;
  auto flags = [&](uint64_t x, char letter) {
    const uint64_t v = (x | 0x2020202020202020ULL) ^ (static_cast<uint64_t>(letter) * kOnes);
    return (v - kOnes) & ~v & kHighs;
  };
  std::size_t i = 0;
#ifdef __SSE2__
  // Sixteen bytes at a time, a first letter only where the word's second letter follows
  // (pg, re, di in any case): most text has few such pairs.
  {
    const __m128i lower = _mm_set1_epi8(0x20);
    auto pair = [](__m128i a, __m128i b, char x, char y) {
      return _mm_and_si128(_mm_cmpeq_epi8(a, _mm_set1_epi8(x)),
                           _mm_cmpeq_epi8(b, _mm_set1_epi8(y)));
    };
    for (; i + 17 <= sql.size() && !(mentions && resets); i += 16) {
      const __m128i a =
          _mm_or_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sql.data() + i)), lower);
      const __m128i b = _mm_or_si128(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(sql.data() + i + 1)), lower);
      const __m128i hit = _mm_or_si128(_mm_or_si128(pair(a, b, 'p', 'g'), pair(a, b, 'r', 'e')),
                                       pair(a, b, 'd', 'i'));
      for (auto m = static_cast<unsigned>(_mm_movemask_epi8(hit)); m != 0; m &= m - 1)
        check(i + static_cast<std::size_t>(std::countr_zero(m)));
    }
  }
#endif
  for (; i + 8 <= sql.size() && !(mentions && resets); i += 8) {
    uint64_t x;
    std::memcpy(&x, sql.data() + i, 8);
    if constexpr (std::endian::native == std::endian::big) x = __builtin_bswap64(x);
    for (uint64_t m = flags(x, 'p') | flags(x, 'r') | flags(x, 'd'); m != 0; m &= m - 1)
      check(i + static_cast<std::size_t>(std::countr_zero(m)) / 8);
  }
  for (; i < sql.size() && !(mentions && resets); ++i) check(i);
  if (!mentions && !resets) return a;
  analyze_statements(sql, a);
  if (mentions) analyze_comments(sql, a);
  return a;
}

bool known_setting(const std::string& name) {
  return name == "shard" || name == "sharding_key" || name == "partial_results";
}

std::optional<std::string>& slot_of(Hints& h, const std::string& name) {
  return name == "shard" ? h.shard : name == "sharding_key" ? h.sharding_key : h.partial_results;
}

std::optional<std::string> check_hint(const std::string& name, const std::string& value,
                                      const config::Config& cfg) {
  if (name == "shard") {
    if (cfg.shard_index(value) < 0) return "unknown shard \"" + value + "\"";
  } else if (name == "sharding_key") {
    if (!shard_for_key(value, cfg))
      return "invalid sharding key \"" + value + "\" for type " +
             config::to_string(cfg.default_key_type());
  } else if (name == "partial_results") {
    if (!parse_bool(value)) return "parameter \"pgshard.partial_results\" requires a Boolean value";
  } else {
    return "unrecognized configuration parameter \"pgshard." + name + "\"";
  }
  return std::nullopt;
}

// Applies SET/RESET pgshard.* to `h`; returns an error for bad names or values.
std::optional<protocol::ErrorInfo> apply(const Settings& a, SessionHints& h,
                                         const config::Config& cfg) {
  if (a.reset_all) h = SessionHints{};
  for (const auto& c : a.commands) {
    if (c.action == SetAction::kShow) {
      if (!known_setting(c.name))
        return protocol::error(protocol::sqlstate::kUndefinedObject,
                               "unrecognized configuration parameter \"pgshard." + c.name + "\"");
      continue;
    }
    if (c.value == "\x01")
      return protocol::error(kInvalidParameterValue, "pgshard." + c.name + " takes a single value");
    if (c.action == SetAction::kSet) {
      if (auto err = check_hint(c.name, c.value, cfg))
        return protocol::error(
            known_setting(c.name) ? kInvalidParameterValue : protocol::sqlstate::kUndefinedObject,
            *err);
    } else if (!known_setting(c.name)) {
      return protocol::error(protocol::sqlstate::kUndefinedObject,
                             "unrecognized configuration parameter \"pgshard." + c.name + "\"");
    }
    Hints& level = c.local ? h.local : h.session;
    auto& slot = slot_of(level, c.name);
    if (c.action == SetAction::kSet)
      slot = c.value;
    else
      slot.reset();
    // A session-level SET also replaces a SET LOCAL of the same name, as in PostgreSQL.
    if (!c.local) slot_of(h.local, c.name).reset();
  }
  return std::nullopt;
}

// Picks the shard from hints by precedence; nullopt when no hint applies.
bool places(const Hints& h) {
  return h.shard || h.sharding_key;
}

// The Route a placing hint (places(h)) gives. (Most statements have none: no Route built.)
Route from_hints(const Hints& h, const char* level, const config::Config& cfg) {
  Route r;
  if (h.shard) {
    r.shard = cfg.shard_index(*h.shard);
    r.reason = std::string(level) + " shard=" + *h.shard;
    if (r.shard < 0) {
      r.kind = RouteKind::kError;
      r.error = protocol::error(kInvalidParameterValue, "unknown shard \"" + *h.shard + "\"", {},
                                "shards are: see SHOW SHARDS on the pgshard console");
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
  }
  return r;
}

// The shards a statement's keys name, in order, each once (no allocation for a few).
using ShardSet =
    boost::container::flat_set<int, std::less<int>, boost::container::small_vector<int, 8>>;

std::string shard_list(const ShardSet& shards, const config::Config& cfg) {
  std::string out;
  for (int i : shards)
    out += (out.empty() ? "" : ", ") + cfg.shards[static_cast<std::size_t>(i)].name;
  return out;
}

void every_shard(Route& r, const config::Config& cfg) {
  r.shard = 0;
  r.shards.clear();
  if (cfg.shards.size() > 1)
    for (int i = 0; i < static_cast<int>(cfg.shards.size()); ++i) r.shards.push_back(i);
}

bool is_integer(config::KeyType t) {
  return t == config::KeyType::kInt2 || t == config::KeyType::kInt4 || t == config::KeyType::kInt8;
}

bool param_is_null(const protocol::Bind& bind, int n) {
  return n >= 1 && static_cast<std::size_t>(n) <= bind.params.size() &&
         !bind.params[static_cast<std::size_t>(n - 1)];
}

// The type the statement's Parse declared for parameter `n` (0: unspecified or unknown).
int32_t declared_type(const Context& ctx, int n) {
  if (!ctx.param_types || n < 1 || static_cast<std::size_t>(n) > ctx.param_types->size()) return 0;
  return (*ctx.param_types)[static_cast<std::size_t>(n - 1)];
}

Route refuse(std::string message, std::string hint = {}) {
  Route r;
  r.kind = RouteKind::kError;
  r.error = protocol::error(protocol::sqlstate::kFeatureNotSupported, std::move(message), {},
                            std::move(hint));
  return r;
}

Route by_parser_placed(const std::shared_ptr<const Analysis>& a, std::string_view sql,
                       const config::Config& cfg, const Context& ctx);

// What the statement does to the session wherever it runs: settings it changes, pinning,
// functions it calls, transaction control. A hint picks the shard, never these.
// (Most statements have none of these: an empty vector is not copied, a call each.)
template <typename Vector>
void copy_unless_both_empty(Vector& to, const Vector& from) {
  if (!from.empty() || !to.empty()) to = from;
}

void take_session_effects(Route& r, const Analysis& a) {
  copy_unless_both_empty(r.settings, a.settings);
  r.pins = a.pins;
  r.prepared_statements_view = a.prepared_statements_view;
  copy_unless_both_empty(r.user_functions, a.user_functions);
  r.signal_call = a.signal_call;
  copy_unless_both_empty(r.temp_tables, a.temp_tables);
  copy_unless_both_empty(r.schema_objects, a.schema_objects);
  r.drops = a.drops;
  r.txn = a.txn;
  if (!a.gid.empty()) r.gid = a.gid;
  r.controls_txn = a.controls_txn;
  r.cursor_op = a.cursor_op;
  if (a.cursor_op != Analysis::CursorOp::kNone) r.cursor = a.cursor;
  r.cursor_hold = a.cursor_hold;
}

// The generated columns (other than the key) an INSERT of `rows` VALUES rows leaves to the
// database, with how many rows do: left out of the column list (every row), DEFAULT in
// their place, or (without a column list) rows that stop before the column.
std::vector<Route::GenerateColumn> columns_to_generate(
    const Analysis& a, const std::vector<GeneratedColumn>& generated, std::size_t rows) {
  std::vector<Route::GenerateColumn> out;
  for (const auto& g : generated) {
    int count = 0;
    if (!a.positional.empty()) {
      const auto at = static_cast<std::size_t>(g.position);
      for (const auto& row : a.positional)
        count += at >= row.size() || (row[at] && row[at]->kind == KeyValue::Kind::kGenerate);
    } else {
      const auto named = std::find(a.insert_columns.begin(), a.insert_columns.end(), g.name);
      count = named == a.insert_columns.end()
                  ? static_cast<int>(rows)
                  : a.insert_defaults[static_cast<std::size_t>(named - a.insert_columns.begin())];
    }
    if (count > 0) out.push_back({g, count, !a.positional.empty()});
  }
  return out;
}

// Shards holding the rows `a` names, given the request's parameters.
// The analysis of `sql`: the one the caller fetched, the cache's, or a fresh one.
std::shared_ptr<const Analysis> analysis_of(std::string_view sql, const config::Config& cfg,
                                            const Context& ctx) {
  if (ctx.analysis) return *ctx.analysis;
  if (ctx.cache) return ctx.cache->get(sql, cfg);
  return std::make_shared<const Analysis>(analyze_statement(sql, cfg));
}

Route by_parser(std::string_view sql, const config::Config& cfg, const Context& ctx) {
  std::shared_ptr<const Analysis> a = analysis_of(sql, cfg, ctx);
  // (Every return names `r`: the Route, large, is built in the caller's place.)
  Route r = by_parser_placed(a, sql, cfg, ctx);
  if (a->statements > 1 && r.kind == RouteKind::kShard && r.shards.size() > 1 && !r.ddl) {
    // Each statement would need its own merge (and one implicit transaction across the
    // shards); concatenating the shards' answers would be wrong, so refuse the whole Query.
    // DDL scripts run shard by shard and answer once (migrations send them whole).
    r = refuse("a Query of several statements that needs several shards is not supported",
               "send the statements one at a time, or keep them on one shard");
  }
  if (a->cursor_op == Analysis::CursorOp::kDeclare && r.kind == RouteKind::kShard &&
      r.shards.size() > 1 && !r.replicated) {
    // A cursor lives in one server session; FETCH from one shard's cursor would return that
    // shard's rows only. Merged cursors are not done: refused, never part of the answer.
    r = refuse("DECLARE CURSOR over a query that needs several shards is not supported",
               "add the shard key to the cursor's query (or a shard hint), or run the query "
               "without a cursor");
  }
  return r;
}

// A read of tables every shard holds alike: the client's shard, else the next in turn.
int reference_read_shard(const config::Config& cfg, const Context& ctx) {
  const int n = static_cast<int>(cfg.shards.size());
  if (ctx.attached) return *ctx.attached;
  return ctx.round_robin ? static_cast<int>((*ctx.round_robin)++ % n) : 0;
}

Route by_parser_placed(const std::shared_ptr<const Analysis>& a, std::string_view sql,
                       const config::Config& cfg, const Context& ctx) {
  const int n = static_cast<int>(cfg.shards.size());
  const int fallback = ctx.attached.value_or(0);
  Route r;
  r.names_unique_id = a->names_unique_id;
  if (a->unique_ids > 0) {
    // Run: the ids are put in first. Only described: any shard describes it alike.
    if (ctx.describe_only)
      r.shard = fallback;
    else
      r.kind = RouteKind::kLookup;
    r.unique_ids = !ctx.describe_only;
    return r;
  }
  r.write = a->write || a->ddl;
  r.ddl = a->ddl;
  r.takes_snapshot = a->takes_snapshot;
  r.replicated = a->replicated;
  r.copy_out_header = a->copy_out_header;
  r.transaction_modes = a->transaction_modes;
  if (ctx.reasons) r.reason = a->reason;
  r.concat_safe = a->concat_safe;
  r.merge_blocker = a->merge_blocker;
  r.merge = a->merge;
  take_session_effects(r, *a);
  switch (a->target) {
    case Analysis::Target::kUnparsed:
      // PostgreSQL reports its own syntax error; send it where unsharded statements go.
      r.shard = cfg.unsharded.policy == config::Unsharded::Policy::kShard ? cfg.unsharded.shard
                                                                          : fallback;
      return r;
    case Analysis::Target::kSequenceHome:
      r.shard = 0;
      return r;
    case Analysis::Target::kInsertSelect:
      // Run: the session runs the SELECT and puts its rows in, then routes again. Only
      // described: any shard describes it alike.
      if (ctx.describe_only) {
        r.shard = fallback;
        return r;
      }
      r.kind = RouteKind::kLookup;
      r.insert_select = true;
      return r;
    case Analysis::Target::kAnyShard:
      r.shard = fallback;
      return r;
    case Analysis::Target::kReferenceRead:
      r.shard = reference_read_shard(cfg, ctx);
      return r;
    case Analysis::Target::kAllShards:
      every_shard(r, cfg);
      return r;
    case Analysis::Target::kError:
      r = refuse(a->error, a->hint);
      return r;
    case Analysis::Target::kUnsharded:
      switch (cfg.unsharded.policy) {
        case config::Unsharded::Policy::kReject: {
          r = refuse(
              "statement uses tables that are not in pgshard's shard map (unsharded: reject)",
              "add the tables to sharded_tables or reference_tables, set unsharded, or use a shard "
              "hint");
          return r;
        }
        case config::Unsharded::Policy::kShard:
          r.shard = cfg.unsharded.shard;
          if (ctx.reasons)
            r.reason =
                "unsharded table: shard " + cfg.shards[static_cast<std::size_t>(r.shard)].name;
          return r;
        case config::Unsharded::Policy::kAll:
          // Every shard keeps a copy of the table, as of a reference table: writes go to
          // all (one shard's reply stands), reads to one.
          if (!r.write) {
            r.shard = reference_read_shard(cfg, ctx);
            if (ctx.reasons) r.reason = "unsharded table read (unsharded: all): one shard";
            return r;
          }
          every_shard(r, cfg);
          r.replicated = true;
          if (!r.shards.empty() && a->copy_in) r.copy_in = a->copy_in;
          if (ctx.reasons) r.reason = "unsharded table write (unsharded: all): every shard";
          return r;
      }
      return r;
    case Analysis::Target::kCopyIn:
      every_shard(r, cfg);
      if (r.shards.empty()) return r;  // one shard: plain forwarding
      r.copy_in = a->copy_in;
      r.copy_table = a->copy_in->replicate ? -1 : a->table;
      return r;
    case Analysis::Target::kKeys:
      break;
  }
  const auto& table = cfg.sharded_tables[static_cast<std::size_t>(a->table)];
  // INSERT without a column list: each row's key sits at the key column's place in the
  // table's column order, which the session reads from the catalog first.
  std::vector<KeyValue> positional_keys;
  if (!a->positional.empty()) {
    const auto position =
        ctx.columns ? ctx.columns->key_position(table.qualified_name()) : std::nullopt;
    if (!position) {
      r = Route{};
      r.kind = RouteKind::kLookup;
      r.column_lookups.push_back(a->table);
      return r;
    }
    if (*position < 0) {
      // No such table (or column) on the shards: PostgreSQL says which.
      r.shard = fallback;
      return r;
    }
    for (const auto& row : a->positional) {
      const auto at = static_cast<std::size_t>(*position);
      if (at >= row.size()) {
        r = refuse("INSERT into sharded table \"" + table.table + "\" must set its shard key \"" +
                       table.column + "\" (column " + std::to_string(at + 1) +
                       " of the table; this row has " + std::to_string(row.size()) + " values)",
                   "give every row a value for " + table.column);
        return r;
      }
      if (!row[at]) {
        r = refuse("the shard key of an INSERT must be a constant or a parameter",
                   "compute the key in the application");
        return r;
      }
      positional_keys.push_back(*row[at]);
    }
  }
  const auto& keys = a->positional.empty() ? a->keys : positional_keys;
  // Rows that leave the key, or another generated column, to the column's default: the
  // session gets one generated value for each from the sequence's home, puts them in the
  // statement and routes it again (a statement only described runs nowhere: any shard
  // describes it).
  const auto generate = std::count_if(keys.begin(), keys.end(), [](const KeyValue& k) {
    return k.kind == KeyValue::Kind::kGenerate;
  });
  std::vector<Route::GenerateColumn> columns;
  // (A Query string of several statements is sent as it is: its INSERT is not rewritten.)
  if (a->insert && a->statements == 1 && !ctx.describe_only && ctx.columns && !keys.empty()) {
    const auto* generated = ctx.columns->generated(table.qualified_name());
    if (!generated) {
      r = Route{};
      r.kind = RouteKind::kLookup;
      r.column_lookups.push_back(a->table);
      return r;
    }
    columns = columns_to_generate(*a, *generated, keys.size());
  }
  if (generate || !columns.empty()) {
    if (ctx.describe_only) {
      r.shard = fallback;
      return r;
    }
    r = Route{};
    r.kind = RouteKind::kLookup;
    r.generate_table = a->table;
    r.generate_count = static_cast<int>(generate);
    r.generate_columns = std::move(columns);
    return r;
  }
  ShardSet shards;
  bool unknown = false;  // a parameter we do not have (Describe without Bind)
  std::string placement_error;
  // INSERT: the shard of each VALUES row (no allocation for a few).
  boost::container::small_vector<int, 8> row_shard;
  std::vector<std::pair<int, std::string>> lookups;
  auto add = [&](std::string_view text) {
    auto p = place_key(table, text, n, ctx.directory, a->table);
    if (p.needs_lookup) {
      lookups.emplace_back(a->table, config::canonical_key(table.type, text));
      return;
    }
    if (!p.shard && p.error.empty() && is_integer(table.type)) {
      // 42.0 compares equal to the integer 42 in PostgreSQL.
      auto dot = text.find('.');
      if (dot != std::string_view::npos &&
          text.find_first_not_of('0', dot + 1) == std::string_view::npos && dot > 0)
        p = place_key(table, text.substr(0, dot), n, ctx.directory, a->table);
    }
    row_shard.push_back(p.shard.value_or(-1));
    if (p.shard)
      shards.insert(*p.shard);
    else if (!p.error.empty())
      placement_error = p.error;
    else
      unknown = true;  // not a valid key: PostgreSQL will say so on any shard
  };
  std::string keys_text;
  int undecodable = 0;  // the parameter number of a key we could not read
  // Each key's text, literal or a Bind parameter's value, in row order (a split INSERT).
  std::vector<std::string> key_texts;
  for (const auto& k : keys) {
    if (k.kind == KeyValue::Kind::kLiteral) {
      key_texts.push_back(k.literal);
      add(k.literal);
      if (ctx.reasons) keys_text += (keys_text.empty() ? "" : ",") + k.literal;
    } else if (!ctx.bind) {
      unknown = true;
    } else if (param_is_null(*ctx.bind, k.param)) {
      unknown = true;  // key = NULL matches no row
    } else if (k.kind == KeyValue::Kind::kParam) {
      if (auto v = param_text(*ctx.bind, k.param, table.type, declared_type(ctx, k.param))) {
        key_texts.push_back(*v);
        add(*v);
        if (ctx.reasons) keys_text += (keys_text.empty() ? "" : ",") + *v;
      } else {
        undecodable = k.param;
      }
    } else if (auto vs = array_param(*ctx.bind, k.param, table.type)) {
      for (const auto& v : *vs) add(v);
      if (vs->empty()) unknown = true;
    } else {
      undecodable = k.param;
    }
  }
  if (undecodable) {
    // A key we cannot read is never guessed: reads go everywhere, writes are refused.
    if (r.write) {
      r = refuse("cannot read the shard key from parameter $" + std::to_string(undecodable) +
                     " (its binary format is not one pgshard decodes for " +
                     config::to_string(table.type) + ")",
                 "send the parameter in text format");
      return r;
    }
    every_shard(r, cfg);
    return r;
  }
  if (!lookups.empty()) {
    r = Route{};
    r.kind = RouteKind::kLookup;
    r.lookups = std::move(lookups);
    return r;
  }
  if (!placement_error.empty() && r.write) {
    r = Route{};
    r.kind = RouteKind::kError;
    r.error = protocol::error("23514", placement_error, {},
                              "add a range or list entry for it, or a default shard");
    return r;
  }
  if (shards.empty()) {
    // Nothing to place by: the statement cannot match rows (NULL or invalid key) or is only
    // being described; any shard gives PostgreSQL's answer.
    r.shard = fallback;
    if (ctx.reasons && unknown) r.reason += " (key not known yet)";
    return r;
  }
  if (a->new_key) {
    std::optional<std::string> text;
    if (a->new_key->kind == KeyValue::Kind::kLiteral)
      text = a->new_key->literal;
    else if (ctx.bind)
      text = param_text(*ctx.bind, a->new_key->param, table.type,
                        declared_type(ctx, a->new_key->param));
    if (text) {
      auto moved = place_key(table, *text, n).shard;
      if (moved && (shards.size() != 1 || *moved != *shards.begin())) {
        r = refuse("UPDATE would move rows of \"" + table.table + "\" to another shard (" +
                       table.column + " = " + *text + " belongs on shard " +
                       cfg.shards[static_cast<std::size_t>(*moved)].name + ")",
                   "delete the row and insert it again with the new key");
        return r;
      }
    }
  }
  if (ctx.reasons)
    r.reason += " " + table.column + "=" + keys_text + " (" + config::to_string(table.type) + " " +
                config::to_string(table.function) + ")";
  if (shards.size() == 1) {
    r.shard = *shards.begin();
    return r;
  }
  if (a->insert) {
    // Rows for several shards: one INSERT per shard, built by the deparser.
    // Every row's key known: a literal, or a parameter whose value this Bind carries (the
    // parts are built again for each Bind).
    std::optional<std::vector<std::pair<int, std::string>>> parts;
    if (key_texts.size() == keys.size() && row_shard.size() == keys.size() &&
        std::find(row_shard.begin(), row_shard.end(), -1) == row_shard.end())
      parts = split_insert(sql, row_shard);
    if (!parts) {
      r = refuse("INSERT rows belong on different shards (" + shard_list(shards, cfg) +
                     ") and this INSERT cannot be split (parameters or expressions)",
                 "insert the rows in separate statements");
      return r;
    }
    r.per_shard_sql = std::move(*parts);
    r.insert_row_shards.assign(row_shard.begin(), row_shard.end());
    for (const auto& k : key_texts) r.insert_row_keys.push_back(key_identity(table.type, k));
    r.insert_key_column = table.column;
    r.insert_key_type = table.type;
    if (ctx.reasons) r.reason += ": split into one INSERT per shard";
  }
  r.shard = *shards.begin();
  r.shards.assign(shards.begin(), shards.end());
  return r;
}

// EXPLAIN (ROUTE): one row per shard the statement would use, with the reason, then the
// plan for combining their answers.
Route explain(Route inner, const config::Config& cfg, const SessionHints& hints) {
  Route r;
  r.kind = RouteKind::kAnswer;
  r.hints = hints;
  r.reason = "EXPLAIN (ROUTE)";
  protocol::RowDescription desc;
  desc.fields.push_back({"shard", 0, 0, 25, -1, -1, 0});
  desc.fields.push_back({"route", 0, 0, 25, -1, -1, 0});
  desc.write(r.answer);
  auto row = [&](std::string_view a, std::string_view b) {
    protocol::DataRow{{a, b}}.write(r.answer);
  };
  if (inner.kind == RouteKind::kError) {
    row("", "refused: " + inner.error.message + " (SQLSTATE " + inner.error.code + ")");
  } else if (inner.shards.size() > 1) {
    for (int s : inner.shards) row(cfg.shards[static_cast<std::size_t>(s)].name, inner.reason);
    std::string how;
    if (inner.write)
      how = "merge: run on every shard, sum the command tags";
    else if (inner.concat_safe)
      how = "merge: concatenate rows, sum the command tags";
    else if (!inner.merge_blocker.empty())
      how = "merge: refused: " + inner.merge_blocker + " across shards is not supported";
    else
      how = "merge: " + inner.merge->describe();
    row("", how);
  } else {
    row(cfg.shards[static_cast<std::size_t>(inner.shard)].name, inner.reason);
  }
  protocol::CommandComplete{"EXPLAIN"}.write(r.answer);
  return r;
}

Route pick(const Settings& a, const SessionHints& h, const config::Config& cfg,
           std::string_view sql, const Context& ctx) {
  if (!a.comment_error.empty()) {
    Route r;
    r.kind = RouteKind::kError;
    r.error = protocol::error(kInvalidParameterValue, a.comment_error, {},
                              "use /* pgshard: shard=NAME */ or /* pgshard: sharding_key=VALUE */");
    return r;
  }
  // The most local hint places the statement: a comment, then SET LOCAL, then SET.
  const Hints* hint = places(a.comment)   ? &a.comment
                      : places(h.local)   ? &h.local
                      : places(h.session) ? &h.session
                                          : nullptr;
  if (hint) {
    const char* level = hint == &a.comment ? "comment hint"
                        : hint == &h.local ? "SET LOCAL pgshard"
                                           : "SET pgshard";
    Route hinted = from_hints(*hint, level, cfg);
    // The hint places the statement; COMMIT still ends the transaction on every shard it
    // used, and a SET is still tracked for the session.
    if (cfg.router_parse && hinted.kind == RouteKind::kShard) {
      const auto analysis = analysis_of(sql, cfg, ctx);
      if (analysis->unique_ids > 0 && !ctx.describe_only) {
        Route r;  // pgshard.unique_id() calls are put in first, wherever the hint points
        r.kind = RouteKind::kLookup;
        r.unique_ids = true;
        return r;
      }
      take_session_effects(hinted, *analysis);
      hinted.names_unique_id = analysis->names_unique_id;
    }
    return hinted;
  }
  if (!cfg.router_parse) {
    Route r;
    r.shard = ctx.attached.value_or(0);
    if (ctx.reasons) r.reason = "parser off: first shard";
    return r;
  }
  return by_parser(sql, cfg, ctx);
}

Route pick_or_explain(const Settings& a, const SessionHints& h, const config::Config& cfg,
                      std::string_view sql, const Context& ctx) {
  if (!cfg.router_parse) return pick(a, h, cfg, sql, ctx);
  const auto analysis = analysis_of(sql, cfg, ctx);
  Context known = ctx;
  known.analysis = &analysis;
  if (!analysis->explain_route) return pick(a, h, cfg, sql, known);
  Context with_reasons = known;
  with_reasons.reasons = true;
  Route inner = pick(a, h, cfg, sql, with_reasons);
  if (inner.kind == RouteKind::kLookup) return inner;  // resolve the directory, then explain
  return explain(std::move(inner), cfg, h);
}

void answer_show(const SetCommand& c, const SessionHints& h, std::string& out) {
  SessionHints copy = h;
  const auto& local = slot_of(copy.local, c.name);
  const auto& slot = local ? local : slot_of(copy.session, c.name);
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
  const int n = static_cast<int>(cfg.shards.size());
  if (cfg.sharded_tables.empty()) {
    auto h = partition_hash(config::KeyType::kInt8, key);
    if (!h) return std::nullopt;
    return hash_to_index(*h, n);
  }
  return place_key(cfg.sharded_tables.front(), key, n).shard;
}

Route route_query(std::string_view sql, const SessionHints& hints, const config::Config& cfg,
                  const Context& ctx) {
  Settings a = analyze(sql);
  SessionHints after = hints;
  // One named result, returned once: built in the caller's place (a Route is large).
  const auto err = apply(a, after, cfg);
  const bool only_ours = !err && a.parsed && a.statements > 0 &&
                         static_cast<int>(a.commands.size()) == a.statements && !a.reset_all;
  Route r = err || only_ours ? Route{} : pick_or_explain(a, after, cfg, sql, ctx);
  if (err) {
    r.kind = RouteKind::kError;
    r.error = *err;
    r.hints = hints;
    return r;
  }
  if (only_ours) {
    r.kind = RouteKind::kAnswer;
    r.reason = "pgshard setting";
    for (const auto& c : a.commands) {
      if (c.action == SetAction::kShow) {
        answer_show(c, after, r.answer);
      } else {
        protocol::CommandComplete{c.action == SetAction::kSet ? "SET" : "RESET"}.write(r.answer);
      }
    }
  }
  r.hints = std::move(after);
  return r;
}

// route_extended for a statement text the session routed last (see StatementMemo): no
// pgshard words in it, its analysis at hand.
Route route_remembered(std::string_view sql, const StatementMemo& memo, const SessionHints& hints,
                       const config::Config& cfg, const Context& ctx) {
  if (ctx.cache) ctx.cache->count_hit();
  Context known = ctx;
  known.analysis = &memo.analysis;
  static const Settings kNone;  // a remembered text has no pgshard words
  Route r = pick_or_explain(kNone, hints, cfg, sql, known);
  r.hints = hints;
  return r;
}

Route route_extended(std::string_view sql, const SessionHints& hints, const config::Config& cfg,
                     const Context& ctx) {
  auto* memo = cfg.router_parse && !sql.empty() ? ctx.memo : nullptr;
  if (memo && memo->analysis && memo->cfg == &cfg && memo->sql == sql)
    return route_remembered(sql, *memo, hints, cfg, ctx);
  Settings a = analyze(sql);
  SessionHints after = hints;
  // One named result, returned once: built in the caller's place (a Route is large).
  const auto err = apply(a, after, cfg);
  Context known = ctx;
  if (memo && !err && !a.parsed && a.comment_error.empty() && !a.comment.shard &&
      !a.comment.sharding_key) {
    memo->analysis = analysis_of(sql, cfg, ctx);
    memo->sql.assign(sql);
    memo->cfg = &cfg;
    known.analysis = &memo->analysis;
  }
  Route r = err ? Route{} : pick_or_explain(a, after, cfg, sql, known);
  if (err) {
    r.kind = RouteKind::kError;
    r.error = *err;
    r.hints = hints;
  } else {
    r.hints = std::move(after);
  }
  return r;
}

}  // namespace pgshard::router

namespace pgshard::router {

std::optional<bool> parse_bool(std::string_view v) {
  std::string s;
  for (char c : v) s.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (s == "on" || s == "true" || s == "yes" || s == "1" || s == "t" || s == "y") return true;
  if (s == "off" || s == "false" || s == "no" || s == "0" || s == "f" || s == "n") return false;
  return std::nullopt;
}

bool partial_results(const SessionHints& hints, const config::Config& cfg,
                     const config::User& user) {
  for (const auto* slot : {&hints.local.partial_results, &hints.session.partial_results})
    if (*slot)
      if (auto b = parse_bool(**slot)) return *b;
  return user.partial_results.value_or(cfg.partial_results);
}

Action action(const Route& r) {
  switch (r.kind) {
    case RouteKind::kAnswer:
      return Action::kAnswer;
    case RouteKind::kError:
      return Action::kRefuse;
    case RouteKind::kLookup:
      return Action::kLookup;
    case RouteKind::kShard:
      break;
  }
  if (r.copy_in) return Action::kCopyIn;
  if (r.shards.size() > 1) return r.ddl ? Action::kDdl : Action::kFanOut;
  return Action::kForward;
}

const char* to_string(Action a) {
  switch (a) {
    case Action::kForward:
      return "forward";
    case Action::kFanOut:
      return "fan-out";
    case Action::kDdl:
      return "DDL";
    case Action::kCopyIn:
      return "COPY in";
    case Action::kAnswer:
      return "answer";
    case Action::kRefuse:
      return "refuse";
    case Action::kLookup:
      return "lookup";
  }
  return "?";
}

}  // namespace pgshard::router
