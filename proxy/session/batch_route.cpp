// Routing one request of a client: see batch_route.hpp.
#include "proxy/session/batch_route.hpp"

#include <algorithm>
#include <boost/container/small_vector.hpp>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

// The batch's route `into` also carries `other`'s statements: it may read from a replica
// only if both may, and it takes a lock or has side effects if either does.
void take_statement_kind(router::Route& into, const router::Route& other) {
  into.read_only = into.read_only && other.read_only;
  into.locks = into.locks || other.locks;
  into.side_effects = into.side_effects || other.side_effects;
  into.unqualified_calls = into.unqualified_calls || other.unqualified_calls;
}

router::Route after_extended_messages(router::Route r, const router::Route* bound,
                                      const router::SessionHints& hints, TxnAt txn) {
  // A simple Query pipelined after extended messages without a Sync: PostgreSQL runs them
  // as one unit (one implicit transaction; after an error in the extended part it skips the
  // Query until a Sync), so they must reach one server together, unchanged: never a BEGIN
  // pgshard answers itself (the extended replies would be hidden with it), never a fan-out.
  auto refuse = [&](std::string why) {
    router::Route e;
    e.action = router::Refuse{
        proto::error(sqlstate::kFeatureNotSupported,
                     "a simple Query pipelined after extended-protocol messages " + why, {},
                     "send a Sync before the Query")};
    e.hints = hints;
    return e;
  };
  const auto* forward = std::get_if<router::Forward>(&r.action);
  if (!forward) return refuse("must go to one shard");
  const auto* bound_forward = bound ? std::get_if<router::Forward>(&bound->action) : nullptr;
  if (bound && (!bound_forward || bound_forward->shard != forward->shard))
    return refuse("must go to the shard of the statements before it");
  if (r.txn != router::TxnControl::kNone && r.txn != router::TxnControl::kSetTransaction &&
      txn == TxnAt::kManaged)
    return refuse("cannot end or start a transaction pgshard manages");
  r.txn = router::TxnControl::kNone;  // it reaches the server as sent
  if (bound) take_statement_kind(r, *bound);
  return r;
}

// Whether a later Bind's route `r` (one that runs on shards) goes where the batch's `first`
// does. A first route that runs nowhere yet (a lookup, an answer, a refusal) counts as the
// first shard's: it is settled before anything runs, and a lookup routes the batch again.
bool same_shards(const router::Route& r, const router::Route& first) {
  static constexpr int kFirstShard = 0;
  const auto theirs = router::runs_on_shards(first) ? router::shards_of(first)
                                                    : std::span<const int>(&kFirstShard, 1);
  const auto mine = router::shards_of(r);
  return std::equal(mine.begin(), mine.end(), theirs.begin(), theirs.end());
}

// Whether a Bind sends any parameter in binary format (only those need the declared types).
bool any_binary(const proto::Bind& b) {
  for (std::size_t i = 0; i < b.params.size(); ++i)
    if (b.format_of(i) == 1) return true;
  return false;
}

// A batch with exactly one Bind and no Query (most extended-protocol traffic): the Bind's
// statement is known from the messages before it; those after it are noted once it is
// routed (a Close or Parse there may replace the text the route reads). One named Route,
// returned once, so it is built in the caller's place (a Route is large to move).
router::Route route_one_bind(std::string_view batch, Statements& statements,
                             const router::SessionHints& hints, const config::Config& cfg,
                             router::Context ctx) {
  // This batch's Parses (a driver's batch has one or none: kept without allocating).
  boost::container::small_vector<std::pair<std::string_view, std::string_view>, 2> parsed;
  auto note = [&](const proto::Frame& f) {
    if (f.type == proto::msg::kParse) {
      if (auto p = proto::Parse::parse(f.body)) {
        parsed.emplace_back(p->name, p->query);
        statements.parsed(p->name, p->query, p->param_types);
      }
    } else if (f.type == proto::msg::kClose) {
      if (auto c = proto::Close::parse(f.body); c && c->kind == 'S') statements.closed(c->name);
    }
  };
  auto frames = proto::frames(batch);
  auto it = frames.begin();
  for (; it != frames.end() && (*it).frame.type != proto::msg::kBind; ++it) note((*it).frame);
  proto::Bind b;
  std::string_view text;  // (a Bind that does not parse gets the server's error anywhere)
  if (proto::Bind::read((*it).frame.body, b)) {
    auto p = std::find_if(parsed.rbegin(), parsed.rend(),
                          [&](const auto& e) { return e.first == b.statement; });
    text = p != parsed.rend() ? p->second : statements.text(b.statement);
    ctx.bind = &b;
    if (any_binary(b)) ctx.param_types = &statements.types(b.statement);
  }
  router::Route r = router::route_extended(text, hints, cfg, ctx);
  for (++it; it != frames.end(); ++it) note((*it).frame);
  return r;
}

// Where a batch goes so far, as its Binds are routed one by one.
struct BatchSoFar {
  router::Route route;    // where the batch goes (once `routed`)
  bool routed = false;    // a Bind was routed
  bool began = false;     // the batch's first statement is a BEGIN
  bool unplaced = false;  // `route` is a DEALLOCATE ALL's (drops_statements_only)
  // No transaction of the client's is open: a COMMIT or ROLLBACK after a BEGIN of the batch
  // ends the batch's own, where its statements run.
  bool ends_where_it_runs = false;
};

// Whether `r`, a COMMIT or ROLLBACK, ends a transaction the batch itself began on the one
// shard its statements go to: it goes there with them (before: it was placed on the first
// shard, and BEGIN; a keyed statement; ROLLBACK pipelined by psycopg 3 was refused 0A000
// unless the key was on the first shard).
bool ends_batch_transaction(const router::Route& r, const BatchSoFar& b) {
  return b.began && b.ends_where_it_runs && router::runs_on_shards(r) &&
         (r.txn == router::TxnControl::kCommit || r.txn == router::TxnControl::kRollback) &&
         std::holds_alternative<router::Forward>(b.route.action);
}

// DEALLOCATE ALL alone, which psycopg 3 sends ahead of its next statements after a ROLLBACK:
// any server runs it alike (the client's statements are followed by their messages), so it
// does not place a batch.
bool drops_statements_only(const router::Route& r) {
  return r.sql_prepare == router::Analysis::SqlPrepareOp::kDeallocate && r.sql_prepared.empty() &&
         r.settings.empty() && std::holds_alternative<router::Forward>(r.action);
}

// The batch's route when one more Bind's route `r` joins it. False when they go to different
// places.
bool joined(BatchSoFar& b, router::Route&& r) {
  // A BEGIN pipelined ahead of the first statement (JDBC) goes where that goes.
  const bool begin = router::runs_on_shards(r) && r.txn == router::TxnControl::kBegin;
  if (!b.routed || (b.route.txn == router::TxnControl::kBegin && !begin)) {
    // The statement after such a BEGIN opens a transaction on its server: a replica would
    // hold the whole transaction, writes too (its modes are not read here: the primary).
    const bool after_begin = b.routed;
    b.began = b.began || begin;
    b.unplaced = drops_statements_only(r);
    b.route = std::move(r);
    b.routed = true;
    if (after_begin) b.route.read_only = false;
  } else if (b.unplaced && !begin && router::runs_on_shards(r) &&
             r.sql_prepare == router::Analysis::SqlPrepareOp::kNone) {
    b.unplaced = false;
    // The batch goes where the statement after it goes; the session still forgets the SQL
    // prepared statements it keeps, as after DEALLOCATE ALL alone.
    b.route = std::move(r);
    b.route.sql_prepare = router::Analysis::SqlPrepareOp::kDeallocate;
    b.route.read_only = false;
  } else if (begin || ends_batch_transaction(r, b)) {
    return true;
  } else if (!router::runs_on_shards(r) || !same_shards(r, b.route)) {
    return false;
  } else {
    // The batch may read from a replica only if every statement in it may.
    take_statement_kind(b.route, r);
  }
  return true;
}

// One batch, one destination: the session may split the pipeline instead.
router::Route split_pipeline(const router::SessionHints& hints) {
  router::Route e;
  e.action = router::SplitPipeline{proto::error(
      sqlstate::kFeatureNotSupported, "statements in one pipelined batch route to different shards",
      {}, "send a Sync after each statement that goes to another shard")};
  e.hints = hints;
  return e;
}

// A batch of several statements, or of none that runs: where all of it goes.
router::Route route_several(std::string_view batch, Statements& statements,
                            const router::SessionHints& hints, const config::Config& cfg,
                            router::Context ctx, TxnAt txn, bool* simple) {
  BatchSoFar so_far;
  so_far.ends_where_it_runs = txn == TxnAt::kNone;
  router::Route& route = so_far.route;
  const bool& routed = so_far.routed;
  std::string_view described;  // a statement described without being bound
  std::vector<std::pair<std::string_view, std::string_view>> parsed;  // this batch's Parses
  auto text_of = [&](std::string_view name) -> std::string_view {
    for (auto it = parsed.rbegin(); it != parsed.rend(); ++it)
      if (it->first == name) return it->second;
    return statements.text(name);
  };
  for (const auto m : proto::frames(batch)) {
    const auto& f = m.frame;
    switch (f.type) {
      case proto::msg::kQuery:
        if (auto q = proto::Query::parse(f.body)) {
          *simple = true;
          const bool after_extended = m.raw.size() != batch.size();
          auto r = router::route_query(q->sql, routed ? route.hints : hints, cfg, ctx);
          if (!after_extended || std::holds_alternative<router::Refuse>(r.action)) return r;
          return after_extended_messages(std::move(r), routed ? &route : nullptr, hints, txn);
        }
        break;
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body)) {
          parsed.emplace_back(p->name, p->query);
          statements.parsed(p->name, p->query, p->param_types);
          if (described.empty()) described = p->query;
        }
        break;
      case proto::msg::kBind:
        if (auto b = proto::Bind::parse(f.body)) {
          ctx.bind = &*b;
          if (any_binary(*b)) ctx.param_types = &statements.types(b->statement);
          auto r =
              router::route_extended(text_of(b->statement), routed ? route.hints : hints, cfg, ctx);
          ctx.bind = nullptr;
          ctx.param_types = nullptr;
          if (!joined(so_far, std::move(r))) return split_pipeline(hints);
        }
        break;
      case proto::msg::kDescribe:
        if (auto dsc = proto::Describe::parse(f.body); dsc && dsc->kind == 'S' && described.empty())
          described = text_of(dsc->name);
        break;
      case proto::msg::kClose:
        if (auto c = proto::Close::parse(f.body); c && c->kind == 'S') {
          statements.closed(c->name);
        }
        break;
      default:
        break;
    }
  }
  if (routed) return std::move(route);
  // Nothing is executed (Parse/Describe/Close/Sync only): any shard that has the statement's
  // tables describes it alike.
  ctx.describe_only = true;
  return router::route_extended(described, hints, cfg, ctx);
}

}  // namespace

router::Route route_batch(std::string_view batch, Statements& statements,
                          const router::SessionHints& hints, const config::Config& cfg,
                          router::Context ctx, TxnAt txn, bool* simple) {
  // Batches of one statement (nearly all) are routed straight into the caller's Route.
  int binds = 0, queries = 0;
  for (const auto m : proto::frames(batch)) {
    binds += m.frame.type == proto::msg::kBind;
    queries += m.frame.type == proto::msg::kQuery;
  }
  if (queries == 0 && binds == 1) return route_one_bind(batch, statements, hints, cfg, ctx);
  if (queries == 1 && binds == 0 && !batch.empty() && batch[0] == proto::msg::kQuery) {
    if (auto q = proto::Query::parse(proto::decode_frame(batch).frame.body)) {
      *simple = true;
      return router::route_query(q->sql, hints, cfg, ctx);
    }
  }
  return route_several(batch, statements, hints, cfg, ctx, txn, simple);
}

bool rewrite_statement(std::string& batch, Statements& statements, const Rewrite& rewrite) {
  // The statement that generates is the batch's Query, or the statement of its last Bind
  // (a batch with generated keys routes one Bind; a BEGIN pipelined ahead comes first).
  std::string_view last_bind;
  std::vector<std::pair<proto::Parse, std::string_view>> parses;  // the batch's, and their frames
  for (const auto m : proto::frames(batch)) {
    if (m.frame.type == proto::msg::kQuery) {
      auto q = proto::Query::parse(m.frame.body);
      auto sql = q ? rewrite(q->sql, nullptr) : std::nullopt;
      if (!sql) return false;
      const auto at = static_cast<std::size_t>(m.raw.data() - batch.data());
      std::string out = batch.substr(0, at);
      proto::Query{*sql}.write(out);
      out.append(batch, at + m.raw.size());
      batch = std::move(out);
      return true;
    }
    if (m.frame.type == proto::msg::kBind) last_bind = m.raw;
    if (m.frame.type == proto::msg::kParse)
      if (auto p = proto::Parse::parse(m.frame.body)) parses.emplace_back(*p, m.raw);
  }
  auto b = last_bind.empty() ? std::nullopt : proto::Bind::parse(last_bind.substr(5));
  if (!b) return false;
  // Its text: the batch's last Parse of that name before it, else the one stored earlier.
  auto p = std::find_if(parses.rbegin(), parses.rend(), [&](const auto& e) {
    return e.first.name == b->statement && e.second.data() < last_bind.data();
  });
  const bool here = p != parses.rend();
  auto sql = rewrite(here ? p->first.query : statements.text(b->statement), &*b);
  if (!sql) return false;
  // The client's statement stays as it is (it may run it again): pgshard parses the text with
  // the keys in as the unnamed statement, hidden from the client, and binds that. A second
  // rewrite (keys generated for the rows an INSERT ... SELECT put in) replaces pgshard's Parse.
  const bool ours = here && b->statement.empty() && statements.injected(p->first.query);
  const auto at = static_cast<std::size_t>((ours ? p->second : last_bind).data() - batch.data());
  std::string out = batch.substr(0, at);
  out.reserve(batch.size() + sql->size() + 64);
  proto::Parse{"", *sql,
               router::declared_types(
                   *sql, here ? p->first.param_types : statements.types(b->statement), *b)}
      .write(out);
  if (ours)
    out.append(batch, at + p->second.size(),
               last_bind.data() - p->second.data() - p->second.size());
  b->statement = "";
  b->write(out);
  out.append(batch, static_cast<std::size_t>(last_bind.data() - batch.data()) + last_bind.size());
  statements.set_injected(std::move(*sql));
  batch = std::move(out);
  return true;
}

}  // namespace pgshard::session
