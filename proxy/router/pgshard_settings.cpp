// pgshard's own settings: SET / RESET / SHOW pgshard.shard, pgshard.sharding_key and
// pgshard.partial_results (session or LOCAL), and /* pgshard: ... */ comment hints, found by
// PostgreSQL's own parser and scanner in text that mentions them.
#include <pg_query.h>
#include <pg_query/pg_query.pb-c.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <memory>

#include "protocol/messages.hpp"
#include "proxy/router/router_internal.hpp"
#include "proxy/router/text.hpp"

namespace pgshard::router {

namespace detail {

namespace {

using protocol::sqlstate::kInvalidParameterValue;

constexpr std::string_view kPrefix = "pgshard.";

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

bool known_setting(const std::string& name) {
  return name == "shard" || name == "sharding_key" || name == "partial_results" ||
         name == "read_token";
}

std::optional<std::string>& slot_of(Hints& h, const std::string& name) {
  return name == "shard"          ? h.shard
         : name == "sharding_key" ? h.sharding_key
         : name == "read_token"   ? h.read_token
                                  : h.partial_results;
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
  } else if (name == "read_token") {
    std::string unknown;
    if (parse_read_token(value, cfg, &unknown)) return std::nullopt;
    if (!unknown.empty()) return "unknown shard \"" + unknown + "\" in pgshard.read_token";
    return "invalid read token \"" + value +
           "\": expected shard:LSN pairs separated by commas, as SHOW pgshard.read_token gives";
  } else {
    return "unrecognized configuration parameter \"pgshard." + name + "\"";
  }
  return std::nullopt;
}

// Which of pgshard's words the text holds, in any case: "pgshard" (`mentions`), "reset" or
// "discard" (`resets`). One pass for the three words (most statements contain none).
struct Words {
  bool mentions = false;
  bool resets = false;
};

Words words_in(std::string_view sql) {
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
  return {mentions, resets};
}

}  // namespace

Settings settings_of(std::string_view sql) {
  Settings a;
  // Only text that mentions pgshard (or resets everything) can change routing; skip the
  // parser for everything else.
  const Words words = words_in(sql);
  if (!words.mentions && !words.resets) return a;
  analyze_statements(sql, a);
  if (words.mentions) analyze_comments(sql, a);
  return a;
}

std::optional<protocol::ErrorInfo> apply_settings(const Settings& a, SessionHints& h,
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

bool places(const Hints& h) {
  return h.shard || h.sharding_key;
}

namespace {

// The sharded table whose placement a sharding_key hint takes (`table`): the first of those
// the statement names, -1 when it names none. Tables placed differently (another key type,
// function, buckets, ranges or lists) would put the key on different shards: refused.
std::optional<protocol::ErrorInfo> hint_table(const Analysis* analysis, const config::Config& cfg,
                                              int& table) {
  table = -1;
  if (!analysis || analysis->sharded_tables.empty()) return std::nullopt;
  table = analysis->sharded_tables.front();
  const auto& first = cfg.sharded_tables[static_cast<std::size_t>(table)];
  for (int other : analysis->sharded_tables) {
    const auto& t = cfg.sharded_tables[static_cast<std::size_t>(other)];
    if (config::same_placement(first, t)) continue;
    return protocol::error(protocol::sqlstate::kFeatureNotSupported,
                           "a sharding_key hint cannot place a statement on sharded tables "
                           "placed differently (" +
                               first.table + " and " + t.table + ")",
                           {}, "send the statement with a shard hint: /* pgshard: shard=NAME */");
  }
  return std::nullopt;
}

}  // namespace

Route from_hints(const Hints& h, const char* level, const config::Config& cfg,
                 const Analysis* analysis) {
  Route r;
  if (h.shard) {
    const int shard = cfg.shard_index(*h.shard);
    r.reason = std::string(level) + " shard=" + *h.shard;
    if (shard < 0)
      r.action =
          Refuse{protocol::error(kInvalidParameterValue, "unknown shard \"" + *h.shard + "\"", {},
                                 "shards are: see SHOW SHARDS on the pgshard console")};
    else
      r.action = Forward{shard};
    return r;
  }
  if (h.sharding_key) {
    r.reason = std::string(level) + " sharding_key=" + *h.sharding_key;
    int table = -1;
    if (auto refused = hint_table(analysis, cfg, table)) {
      r.action = Refuse{std::move(*refused)};
      return r;
    }
    auto s = shard_for_key(*h.sharding_key, cfg, table);
    if (!s) {
      const auto type = table >= 0 ? cfg.sharded_tables[static_cast<std::size_t>(table)].type
                                   : cfg.default_key_type();
      r.action = Refuse{protocol::error(
          kInvalidParameterValue,
          "invalid sharding key \"" + *h.sharding_key + "\" for type " + config::to_string(type))};
      return r;
    }
    r.action = Forward{*s};
  }
  return r;
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

}  // namespace detail

std::string lsn_text(uint64_t lsn) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                static_cast<unsigned>(lsn & 0xffffffffu));
  return buf;
}

std::optional<uint64_t> parse_lsn(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= text.size())
    return std::nullopt;
  uint32_t hi = 0, lo = 0;
  const char* end = text.data() + text.size();
  const auto a = std::from_chars(text.data(), text.data() + slash, hi, 16);
  const auto b = std::from_chars(text.data() + slash + 1, end, lo, 16);
  if (a.ec != std::errc() || a.ptr != text.data() + slash || b.ec != std::errc() || b.ptr != end)
    return std::nullopt;
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

std::optional<std::vector<std::pair<int, uint64_t>>> parse_read_token(std::string_view text,
                                                                      const config::Config& cfg,
                                                                      std::string* unknown_shard) {
  std::vector<std::pair<int, uint64_t>> parts;
  if (text.empty()) return parts;  // (no position to wait for)
  for (bool more = true; more;) {
    const auto comma = text.find(',');
    const auto part = text.substr(0, comma);
    more = comma != std::string_view::npos;
    if (more) text.remove_prefix(comma + 1);
    const auto colon = part.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string name(part.substr(0, colon));
    const int shard = cfg.shard_index(name);
    const auto lsn = parse_lsn(part.substr(colon + 1));
    if (shard < 0 && lsn && !name.empty() && unknown_shard) *unknown_shard = name;
    if (shard < 0 || !lsn) return std::nullopt;
    // A shard named twice: which position is meant is not the client's to leave open.
    for (const auto& [seen, at] : parts)
      if (seen == shard) return std::nullopt;
    parts.emplace_back(shard, *lsn);
  }
  return parts;
}

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

}  // namespace pgshard::router
