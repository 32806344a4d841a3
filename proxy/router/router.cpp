// Routing: a pure function of (statement text, session hints, config) -> Route. No I/O.
// A pgshard setting or hint (pgshard_settings.cpp) places a statement first; the parser's
// analysis (route_by_parser.cpp) places the rest. EXPLAIN (ROUTE) is answered here.
#include "proxy/router/router.hpp"

#include <algorithm>
#include <cctype>
#include <memory>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/router/router_internal.hpp"

namespace pgshard::router {

namespace {

using detail::analysis_of;
using detail::SetAction;
using detail::Settings;
using protocol::sqlstate::kInvalidParameterValue;

// How a statement on several shards combines their answers, as EXPLAIN (ROUTE) says it.
std::string how_merged(const Route& inner) {
  const auto* f = std::get_if<FanOut>(&inner.action);
  if (inner.write || !f) return "merge: run on every shard, sum the command tags";
  if (f->concat_safe) return "merge: concatenate rows, sum the command tags";
  if (!f->merge_blocker.empty())
    return "merge: refused: " + f->merge_blocker + " across shards is not supported";
  return "merge: " + f->merge->describe();
}

// EXPLAIN (ROUTE): one row per shard the statement would use, with the reason, then the
// plan for combining their answers.
Route explain(const Route& inner, const config::Config& cfg, const SessionHints& hints) {
  Route r;
  r.hints = hints;
  r.reason = "EXPLAIN (ROUTE)";
  std::string& answer = r.action.emplace<Answer>().text;
  protocol::RowDescription desc;
  desc.fields.push_back({"shard", 0, 0, 25, -1, -1, 0});
  desc.fields.push_back({"route", 0, 0, 25, -1, -1, 0});
  desc.write(answer);
  auto row = [&](std::string_view a, std::string_view b) {
    protocol::DataRow{{a, b}}.write(answer);
  };
  const auto shards = shards_of(inner);
  if (const auto* e = refusal(inner)) {
    row("", "refused: " + e->message + " (SQLSTATE " + e->code + ")");
  } else if (shards.size() > 1) {
    for (int s : shards) row(cfg.shards[static_cast<std::size_t>(s)].name, inner.reason);
    row("", how_merged(inner));
  } else {
    row(cfg.shards[static_cast<std::size_t>(shards.empty() ? 0 : shards.front())].name,
        inner.reason);
  }
  protocol::CommandComplete{"EXPLAIN"}.write(answer);
  return r;
}

// The route a placing hint gives. A sharding_key is placed with the placement of the
// sharded tables the statement names (the first table's when it names none).
Route by_hint(const Hints& hint, const char* level, const config::Config& cfg, std::string_view sql,
              const Context& ctx) {
  std::shared_ptr<const Analysis> analysis;
  if (cfg.router_parse && hint.sharding_key && !hint.shard) analysis = analysis_of(sql, cfg, ctx);
  Route hinted = detail::from_hints(hint, level, cfg, analysis.get());
  // The hint places the statement; COMMIT still ends the transaction on every shard it
  // used, and a SET is still tracked for the session.
  if (cfg.router_parse && runs_on_shards(hinted)) {
    if (!analysis) analysis = analysis_of(sql, cfg, ctx);
    if (analysis->unique_ids > 0 && !ctx.describe_only) {
      Route r;  // pgshard.unique_id() calls are put in first, wherever the hint points
      r.action = UniqueIds{};
      return r;
    }
    detail::take_session_effects(hinted, *analysis);
    detail::take_replica_safety(hinted, *analysis, cfg);
    hinted.names_unique_id = analysis->names_unique_id;
  }
  return hinted;
}

Route pick(const Settings& a, const SessionHints& h, const config::Config& cfg,
           std::string_view sql, const Context& ctx) {
  if (!a.comment_error.empty()) {
    Route r;
    r.action = Refuse{
        protocol::error(kInvalidParameterValue, a.comment_error, {},
                        "use /* pgshard: shard=NAME */ or /* pgshard: sharding_key=VALUE */")};
    return r;
  }
  // The most local hint places the statement: a comment, then SET LOCAL, then SET.
  const Hints* hint = detail::places(a.comment)   ? &a.comment
                      : detail::places(h.local)   ? &h.local
                      : detail::places(h.session) ? &h.session
                                                  : nullptr;
  if (hint) {
    const char* level = hint == &a.comment ? "comment hint"
                        : hint == &h.local ? "SET LOCAL pgshard"
                                           : "SET pgshard";
    return by_hint(*hint, level, cfg, sql, ctx);
  }
  if (!cfg.router_parse) {
    Route r;
    r.action = Forward{ctx.attached.value_or(0)};
    if (ctx.reasons) r.reason = "parser off: first shard";
    return r;
  }
  return detail::by_parser(sql, cfg, ctx);
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
  if (routes_again(inner)) return inner;  // resolve the directory, then explain
  return explain(inner, cfg, h);
}

}  // namespace

bool key_bytes_as_stored(std::string_view client_encoding, std::string_view text) {
  if (std::all_of(text.begin(), text.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return true;
  // PostgreSQL's spelling rules for encoding names: case and punctuation do not count
  // ("utf-8", "Unicode" and "UTF8" are one encoding).
  std::string name;
  for (char c : client_encoding)
    if (std::isalnum(static_cast<unsigned char>(c)))
      name.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return name.empty() || name == "utf8" || name == "unicode" || name == "sqlascii";
}

std::string foreign_key_message(std::string_view client_encoding) {
  return "a text shard key with non-ASCII characters in client_encoding " +
         std::string(client_encoding) + " cannot be placed";
}

std::optional<int> shard_for_key(std::string_view key, const config::Config& cfg, int table) {
  const int n = static_cast<int>(cfg.shards.size());
  if (cfg.sharded_tables.empty()) {
    auto h = partition_hash(config::KeyType::kInt8, key);
    if (!h) return std::nullopt;
    return hash_to_index(*h, n);
  }
  const auto& t =
      table >= 0 ? cfg.sharded_tables[static_cast<std::size_t>(table)] : cfg.sharded_tables.front();
  return place_key(t, key, n).shard;
}

namespace {

// Whether every statement of the text is pgshard's own SET/RESET/SHOW pgshard.*.
bool only_ours(const Settings& a) {
  return a.parsed && a.statements > 0 && static_cast<int>(a.commands.size()) == a.statements &&
         !a.reset_all;
}

// pgshard answers its own statements (`a`, only_ours) itself, with the hints as they are
// after them.
void answer_ours(const Settings& a, const SessionHints& after, Route& r) {
  r.reason = "pgshard setting";
  std::string& answer = r.action.emplace<Answer>().text;
  for (const auto& c : a.commands) {
    if (c.action == SetAction::kShow) {
      r.shows_read_token |= c.name == "read_token";
      detail::answer_show(c, after, answer);
    } else {
      protocol::CommandComplete{c.action == SetAction::kSet ? "SET" : "RESET"}.write(answer);
    }
  }
}

}  // namespace

Route route_query(std::string_view sql, const SessionHints& hints, const config::Config& cfg,
                  const Context& ctx) {
  Settings a = detail::settings_of(sql);
  SessionHints after = hints;
  // One named result, returned once: built in the caller's place (a Route is large).
  const auto err = detail::apply_settings(a, after, cfg);
  const bool ours = !err && only_ours(a);
  Route r = err || ours ? Route{} : pick_or_explain(a, after, cfg, sql, ctx);
  if (err) {
    r.action = Refuse{*err};
    r.hints = hints;
    return r;
  }
  if (ours) answer_ours(a, after, r);
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
  Settings a = detail::settings_of(sql);
  SessionHints after = hints;
  // One named result, returned once: built in the caller's place (a Route is large).
  const auto err = detail::apply_settings(a, after, cfg);
  Context known = ctx;
  if (memo && !err && !a.parsed && a.comment_error.empty() && !a.comment.shard &&
      !a.comment.sharding_key) {
    memo->analysis = analysis_of(sql, cfg, ctx);
    memo->sql.assign(sql);
    memo->cfg = &cfg;
    known.analysis = &memo->analysis;
  }
  // SHOW pgshard.* is answered as the simple Query's (a server does not know the name:
  // 42704, as asyncpg's fetchval, which prepares every statement, got). A SET or RESET of
  // them still goes on to a shard, which keeps it as a placeholder setting.
  const bool shows = !err && only_ours(a) &&
                     std::all_of(a.commands.begin(), a.commands.end(),
                                 [](const auto& c) { return c.action == SetAction::kShow; });
  Route r = err || shows ? Route{} : pick_or_explain(a, after, cfg, sql, known);
  if (err) {
    r.action = Refuse{*err};
    r.hints = hints;
    return r;
  }
  if (shows) answer_ours(a, after, r);
  r.hints = std::move(after);
  return r;
}

bool runs_on_shards(const Route& r) {
  return std::holds_alternative<Forward>(r.action) || std::holds_alternative<FanOut>(r.action) ||
         std::holds_alternative<Ddl>(r.action) || std::holds_alternative<CopyIn>(r.action);
}

bool routes_again(const Route& r) {
  return std::holds_alternative<Lookup>(r.action) ||
         std::holds_alternative<GenerateKeys>(r.action) ||
         std::holds_alternative<InsertSelect>(r.action) ||
         std::holds_alternative<UniqueIds>(r.action);
}

std::span<const int> shards_of(const Route& r) {
  if (const auto* f = std::get_if<Forward>(&r.action)) return {&f->shard, 1};
  if (const auto* f = std::get_if<FanOut>(&r.action)) return f->shards;
  if (const auto* d = std::get_if<Ddl>(&r.action)) return d->shards;
  if (const auto* c = std::get_if<CopyIn>(&r.action)) return c->shards;
  return {};
}

const protocol::ErrorInfo* refusal(const Route& r) {
  if (const auto* e = std::get_if<Refuse>(&r.action)) return &e->error;
  if (const auto* e = std::get_if<SplitPipeline>(&r.action)) return &e->error;
  return nullptr;
}

// Action names the alternatives of RouteAction in their order.
static_assert(std::variant_size_v<RouteAction> == static_cast<std::size_t>(Action::kUniqueIds) + 1);
static_assert(std::is_same_v<
              std::variant_alternative_t<static_cast<std::size_t>(Action::kCopyIn), RouteAction>,
              CopyIn>);
static_assert(
    std::is_same_v<
        std::variant_alternative_t<static_cast<std::size_t>(Action::kSplitPipeline), RouteAction>,
        SplitPipeline>);

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
    case Action::kSplitPipeline:
      return "split pipeline";
    case Action::kLookup:
      return "lookup";
    case Action::kGenerateKeys:
      return "generate keys";
    case Action::kInsertSelect:
      return "INSERT ... SELECT";
    case Action::kUniqueIds:
      return "unique ids";
  }
  return "?";
}

}  // namespace pgshard::router
