// The analysis cache: a bounded LRU of analyses keyed by statement text, and by shape (the
// text with its literals as parameters) where the literals do not change the route, so
// simple-protocol traffic with inline values parses each shape once.
#include <pg_query.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <memory>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "proxy/router/analysis.hpp"
#include "proxy/router/text.hpp"

namespace pgshard::router {

namespace {

// True when the text cannot touch a sharded or reference table: none of their names occur.
bool names_no_placed_table(std::string_view sql, const config::Config& cfg) {
  for (const auto& t : cfg.sharded_tables)
    if (icontains(sql, t.table)) return false;
  for (const auto& r : cfg.reference_tables) {
    auto dot = r.find('.');
    if (icontains(sql, dot == std::string::npos ? std::string_view(r)
                                                : std::string_view(r).substr(dot + 1)))
      return false;
  }
  return true;
}

// A character that continues an identifier (or a $n parameter).
bool ident_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

// The text with numeric and quoted-string literals replaced by '?', for caching statements
// whose routing cannot depend on literals. False (no key) for text with forms we do not
// mask safely (escape strings, dollar quoting).
bool mask_literals(std::string_view sql, std::string& out) {
  out.clear();
  auto ident = [](char c) { return ident_char(c) || c == '.'; };
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\\') return false;
    if (c == '$' && i + 1 < sql.size() && !std::isdigit(static_cast<unsigned char>(sql[i + 1])))
      return false;
    if (c == '\'') {
      if (i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e' || sql[i - 1] == '&')) return false;
      ++i;
      for (;; ++i) {
        if (i >= sql.size()) return false;
        if (sql[i] == '\'') {
          if (i + 1 < sql.size() && sql[i + 1] == '\'') {
            ++i;
            continue;
          }
          break;
        }
      }
      out.push_back('?');
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) && (i == 0 || !ident(sql[i - 1]))) {
      while (i + 1 < sql.size() && std::isdigit(static_cast<unsigned char>(sql[i + 1]))) ++i;
      out.push_back('?');
      continue;
    }
    out.push_back(c);
  }
  return true;
}

// Characters where a literal, quote, comment or parameter may start (see parameterize).
constexpr auto kLiteralStart = [] {
  std::array<bool, 256> t{};
  for (const char ch : std::string_view("$\\\"-/'.0123456789"))
    t[static_cast<unsigned char>(ch)] = true;
  return t;
}();

// The first position from `j` on (up to `n`) whose character is in kLiteralStart. All of
// them but the backslash lie in 0x22..0x39: sixteen bytes at a time, only a byte there (or
// a backslash) is looked up.
std::size_t next_literal_start(const char* s, std::size_t j, std::size_t n) {
#ifdef __SSE2__
  const __m128i above = _mm_set1_epi8(0x21), below = _mm_set1_epi8(0x3A),
                backslash = _mm_set1_epi8('\\');
  for (; j + 16 <= n; j += 16) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + j));
    const __m128i maybe =
        _mm_or_si128(_mm_and_si128(_mm_cmpgt_epi8(v, above), _mm_cmplt_epi8(v, below)),
                     _mm_cmpeq_epi8(v, backslash));  // (signed: bytes from 0x80 are below 0x21)
    for (auto m = static_cast<unsigned>(_mm_movemask_epi8(maybe)); m != 0; m &= m - 1) {
      const std::size_t at = j + static_cast<std::size_t>(std::countr_zero(m));
      if (kLiteralStart[static_cast<unsigned char>(s[at])]) return at;
    }
  }
#endif
  while (j < n && !kLiteralStart[static_cast<unsigned char>(s[j])]) ++j;
  return j;
}

// The end of the block comment that starts at `i` (its last '/'), or npos when it does not
// end. PostgreSQL's block comments nest.
std::size_t block_comment_end(std::string_view sql, std::size_t i) {
  int depth = 0;
  std::size_t j = i;
  for (; j + 1 < sql.size(); ++j) {
    if (sql[j] == '/' && sql[j + 1] == '*') {
      ++depth;
      ++j;
    } else if (sql[j] == '*' && sql[j + 1] == '/') {
      ++j;
      if (--depth == 0) break;
    }
  }
  return depth == 0 ? j : std::string_view::npos;
}

// The end (closing quote) of the standard string literal that starts at `i`, its value in
// `value`; npos when it does not end.
std::size_t string_literal_end(std::string_view sql, std::size_t i, std::string& value) {
  for (++i;; ++i) {
    if (i >= sql.size()) return std::string_view::npos;
    if (sql[i] == '\'') {
      if (i + 1 < sql.size() && sql[i + 1] == '\'') {
        value += '\'';
        ++i;
        continue;
      }
      return i;
    }
    value += sql[i];
  }
}

// The end (one past) of the number that starts at `i`: digits, a fraction, an exponent.
std::size_t number_end(std::string_view sql, std::size_t i) {
  const std::size_t n = sql.size();
  std::size_t j = i;
  auto digits = [&] {
    while (j < n && std::isdigit(static_cast<unsigned char>(sql[j]))) ++j;
  };
  digits();
  if (j < n && sql[j] == '.') {
    ++j;
    digits();
  }
  if (j < n && (sql[j] == 'e' || sql[j] == 'E')) {
    ++j;
    if (j < n && (sql[j] == '+' || sql[j] == '-')) ++j;
    digits();
  }
  return j;
}

// The text with each literal (numbers, standard 'strings') replaced by $1, $2... in order,
// and the literals' values. False for text this does not rewrite safely: parameters of its
// own, backslashes, dollar quoting, prefixed strings (E'', B'', U&''...), unterminated
// quotes or comments. Quoted identifiers and comments are kept as written.
bool parameterize(std::string_view sql, std::string& out, std::vector<std::string>& values) {
  out.clear();
  values.clear();
  const std::size_t n = sql.size();
  auto param = [&](std::string value) {
    values.push_back(std::move(value));
    out += '$';
    out += std::to_string(values.size());
  };
  // Copies sql[i..end] as it is and goes on after it; false when there is no end.
  auto keep_to = [&](std::size_t& i, std::size_t end) {
    if (end == std::string_view::npos) return false;
    out.append(sql.substr(i, end - i + 1));
    i = end;
    return true;
  };
  // Runs of characters where no literal, quote, comment or parameter starts are copied
  // whole.
  for (std::size_t i = 0; i < n; ++i) {
    const char c = sql[i];
    if (!kLiteralStart[static_cast<unsigned char>(c)]) {
      const std::size_t j = next_literal_start(sql.data(), i + 1, n);
      out.append(sql.data() + i, j - i);
      i = j - 1;
      continue;
    }
    const char next = i + 1 < n ? sql[i + 1] : '\0';
    if (c == '$' || c == '\\') return false;
    if (c == '"') {
      if (!keep_to(i, sql.find('"', i + 1))) return false;  // "" inside: two quoted parts
    } else if (c == '-' && next == '-') {
      const std::size_t end = sql.find('\n', i);
      keep_to(i, end == std::string_view::npos ? n - 1 : end);
    } else if (c == '/' && next == '*') {
      if (!keep_to(i, block_comment_end(sql, i))) return false;
    } else if (c == '\'') {
      if (i > 0 && (ident_char(sql[i - 1]) || sql[i - 1] == '&')) return false;
      std::string value;
      i = string_literal_end(sql, i, value);
      if (i == std::string_view::npos) return false;
      param(std::move(value));
    } else if ((std::isdigit(static_cast<unsigned char>(c)) ||
                (c == '.' && std::isdigit(static_cast<unsigned char>(next)))) &&
               (i == 0 || (!ident_char(sql[i - 1]) && sql[i - 1] != '.'))) {
      const std::size_t j = number_end(sql, i);
      if (j < n && (ident_char(sql[j]) || sql[j] == '.')) return false;
      param(std::string(sql.substr(i, j - i)));
      i = j - 1;
    } else {
      out += c;
    }
  }
  return true;
}

// The key values of `out` (a copy of `shape`, or an analysis made from it before) with the
// shape's parameters $1..$n put back as the literals `v`; false when a parameter stands
// where no literal can (an array parameter, a generated key).
bool put_literals(Analysis& out, const Analysis& shape, const std::vector<std::string>& v) {
  auto put = [&](KeyValue& to, const KeyValue& from) {
    if (from.kind == KeyValue::Kind::kLiteral) return true;
    if (from.kind != KeyValue::Kind::kParam || from.param < 1 ||
        static_cast<std::size_t>(from.param) > v.size())
      return false;
    to.literal = v[static_cast<std::size_t>(from.param - 1)];
    to.kind = KeyValue::Kind::kLiteral;
    to.param = 0;
    return true;
  };
  for (std::size_t i = 0; i < shape.keys.size(); ++i)
    if (!put(out.keys[i], shape.keys[i])) return false;
  for (std::size_t r = 0; r < shape.positional.size(); ++r)
    for (std::size_t i = 0; i < shape.positional[r].size(); ++i)
      if (shape.positional[r][i] && !put(*out.positional[r][i], *shape.positional[r][i]))
        return false;
  return !shape.new_key || put(*out.new_key, *shape.new_key);
}

// LIMIT / OFFSET literals: such a shape's statements each need a plan of their own.
bool bounds_are_literals(const Analysis& shape) {
  return shape.merge && (shape.merge->limit.param > 0 || shape.merge->offset.param > 0);
}

// `shape` with its parameters $1..$n (the literals) put back as literal key values; null
// when a parameter stands where no literal can (an array parameter).
std::shared_ptr<Analysis> with_literals(const Analysis& shape, const std::vector<std::string>& v) {
  auto out = std::make_shared<Analysis>(shape);
  if (!put_literals(*out, shape, v)) return nullptr;
  if (bounds_are_literals(*out)) {
    // LIMIT / OFFSET literals: the plan with this statement's bounds.
    auto plan = std::make_shared<merge::MergePlan>(*out->merge);
    for (auto* b : {&plan->limit, &plan->offset}) {
      if (b->param <= 0) continue;
      if (static_cast<std::size_t>(b->param) > v.size()) return nullptr;
      const auto& text = v[static_cast<std::size_t>(b->param - 1)];
      int64_t n = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ec != std::errc() || end != text.data() + text.size()) return nullptr;
      b->value = n;
      b->param = 0;
    }
    out->merge = std::move(plan);
  }
  return out;
}

// Whether two analyses route alike: everything routing reads is equal, merge plans
// included (a plan whose shards run a rewritten statement never is: its text would carry
// the parameters).
// Settings, a signalled pid, a prepared transaction's identifier and SQL PREPARE/EXECUTE
// (the arguments) carry their literals:
// such statements are cached by their exact text only.
bool carries_literals(const Analysis& a) {
  return !a.settings.empty() || a.pins || a.signal_call || !a.gid.empty() ||
         a.sql_prepare != Analysis::SqlPrepareOp::kNone;
}

bool routes_alike(const Analysis& a, const Analysis& b) {
  auto same_plan = [](const std::shared_ptr<const merge::MergePlan>& p,
                      const std::shared_ptr<const merge::MergePlan>& q) {
    if (!p || !q) return !p && !q;
    return p->shard_sql.empty() && q->shard_sql.empty() && *p == *q;
  };
  return a.target == b.target && a.write == b.write && a.ddl == b.ddl && a.table == b.table &&
         a.keys == b.keys && a.new_key == b.new_key && a.positional == b.positional &&
         a.insert_columns == b.insert_columns && a.insert_defaults == b.insert_defaults &&
         a.cursor_op == b.cursor_op && a.cursor == b.cursor && a.cursor_hold == b.cursor_hold &&
         a.insert == b.insert && a.replicated == b.replicated && a.txn == b.txn &&
         a.controls_txn == b.controls_txn && !a.explain_route && !b.explain_route && !a.copy_in &&
         !b.copy_in && a.copy_out_header == b.copy_out_header && a.statements == b.statements &&
         a.concat_safe == b.concat_safe && a.merge_blocker == b.merge_blocker &&
         a.merge_candidate == b.merge_candidate && same_plan(a.merge, b.merge) &&
         a.key_columns == b.key_columns && a.sharded_tables == b.sharded_tables &&
         !carries_literals(a) && !carries_literals(b) && a.user_functions == b.user_functions &&
         a.prepared_statements_view == b.prepared_statements_view && a.error == b.error &&
         a.hint == b.hint && a.reason == b.reason;
}

}  // namespace

std::shared_ptr<const Analysis> AnalysisCache::learn_shape(std::string_view sql,
                                                           const config::Config& cfg) {
  // Analyse the statement and its shape (masked_, literals_); keep the shape only when
  // putting this statement's literals back gives the statement's own analysis.
  ++misses_;
  auto real = std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  auto shape = std::make_shared<const Analysis>(analyze_statement(masked_, cfg));
  auto back = with_literals(*shape, literals_);
  if (shapes_.size() >= capacity_) shapes_.clear();
  shapes_.emplace(masked_, Shape{back && routes_alike(*back, *real) ? shape : nullptr, nullptr});
  return real;
}

std::shared_ptr<const Analysis> AnalysisCache::Shape::with(const std::vector<std::string>& v) {
  // (A refilled analysis had no holder left: nobody sees it change.)
  if (built && built.use_count() == 1 && !bounds_are_literals(*analysis) &&
      put_literals(*built, *analysis, v))
    return built;
  built = with_literals(*analysis, v);
  return built;
}

std::shared_ptr<const Analysis> AnalysisCache::get(std::string_view sql,
                                                   const config::Config& cfg) {
  if (&cfg != owner_) return std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  // Statements that name no sharded or reference table route alike whatever their literals,
  // so simple-protocol traffic with inline values shares one entry per shape.
  // The exact text first: the common case of a repeated statement costs one hash lookup.
  if (auto it = map_.find(sql); it != map_.end()) {
    ++hits_;
    order_.splice(order_.begin(), order_, it->second.order);
    return it->second.analysis;
  }
  // A statement of a shape seen before: the shape's analysis, with this statement's
  // literals. (Its identifiers are the shape's: it names the placed tables the shape does.)
  const bool shaped = capacity_ > 0 && parameterize(sql, masked_, literals_) && !literals_.empty();
  bool shape_known = false;
  if (shaped) {
    if (auto it = shapes_.find(masked_); it != shapes_.end()) {
      shape_known = true;
      if (auto a = it->second.analysis ? it->second.with(literals_) : nullptr) {
        ++hits_;
        return a;
      }
    }
  }
  std::string_view key = sql;
  if (!names_no_placed_table(sql, cfg)) {
    // Keys of sharded tables are literals that matter: statements of one shape share the
    // shape's analysis with their own literals put back (simple-protocol traffic parses
    // each shape once instead of each statement). A known shape that does not fit is
    // cached by the statement's text.
    return lookup(sql, sql, cfg, shaped && !shape_known ? learn_shape(sql, cfg) : nullptr);
  }
  if (mask_literals(sql, masked_)) key = masked_;
  if (key.data() == masked_.data()) {
    // A shape shared across literals never holds settings (see lookup).
    if (auto it = map_.find(key); it != map_.end() && carries_literals(*it->second.analysis))
      key = sql;
  }
  return lookup(key, sql, cfg);
}

std::shared_ptr<const Analysis> AnalysisCache::lookup(std::string_view key, std::string_view sql,
                                                      const config::Config& cfg,
                                                      std::shared_ptr<const Analysis> known) {
  if (auto it = map_.find(key); it != map_.end()) {
    ++hits_;
    order_.splice(order_.begin(), order_, it->second.order);
    return it->second.analysis;
  }
  if (!known) ++misses_;
  auto a = known ? std::move(known) : std::make_shared<const Analysis>(analyze_statement(sql, cfg));
  if (carries_literals(*a)) key = sql;
  if (capacity_ == 0) return a;
  if (map_.size() >= capacity_) {
    map_.erase(order_.back());
    order_.pop_back();
  }
  order_.emplace_front(key);
  map_.emplace(order_.front(), Entry{a, order_.begin()});
  return a;
}

}  // namespace pgshard::router
