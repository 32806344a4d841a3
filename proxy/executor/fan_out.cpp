// Multi-shard execution: one statement sent to several shards at once, their replies read in
// lockstep (every shard answers the same messages in the same order) and combined into the
// one reply the client expects — rows merged by merge::Merger, tags summed, one
// ReadyForQuery. Simple and extended protocol; writes commit on every shard or on none.
#include <spdlog/spdlog.h>

#include <deque>
#include <set>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/combiner.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/router/text.hpp"
#include "proxy/server/cancel.hpp"
#include "proxy/server/server.hpp"
#include "proxy/session/params.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kClientFlush = 256 * 1024;

// One shard's part of the statement.
struct Leg {
  int shard = 0;
  pool::Lease lease;                 // a server of its own, or
  std::shared_ptr<pool::Link> link;  // a transaction participant's, borrowed
  pool::ServerConn* conn = nullptr;  // whichever it is
  bool failed = false;               // lost, timed out, or never connected
  bool timed_out = false;
  bool abandoned = false;  // the client left: stop reading
  bool done = false;       // ReadyForQuery of the request seen
  std::string problem;     // why the leg failed
};

}  // namespace

// The shards' version of an extended-protocol batch; false after writing a refusal to
// `out`.
static bool build_extended(Client& c, const merge::MergePlan* plan, std::string_view override_sql,
                           std::string& request, pool::Replies& expected,
                           std::optional<int64_t>& limit, std::optional<int64_t>& offset,
                           int32_t& max_rows, std::string& out, const std::string& names);
// The shards' text collation, read once per worker.
static awaitable<const merge::Collation*> shard_collation(Client& c, pool::ServerConn& conn,
                                                          std::string* error);

awaitable<void> fan_out(Client& c, const router::Route& route, bool simple, char boundary) {
  if (!co_await c.drain()) co_return;
  Waiting waiting(c, "shards (fan-out)");
  std::string out;
  std::string names;
  for (int s : route.shards) names += (names.empty() ? "" : ", ") + c.config().shards[s].name;
  // (Not a coroutine: GCC 12 mishandles temporaries in co_await arguments.)
  auto refuse = [&](std::string message, std::string hint) {
    proto::write_error(
        out, proto::error(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint)));
    if (boundary == proto::msg::kFlush)
      c.skip_to_sync();
    else
      out += proto::ready_for_query(c.transaction_status());
  };
  const merge::MergePlan* plan =
      route.merge && route.merge_blocker.empty() ? route.merge.get() : nullptr;
  // A read in a transaction that has not touched a shard yet (BEGIN is still pgshard's) at
  // READ COMMITTED sees what any new statement would: it runs on fresh servers and the
  // transaction stays open. Anything else inside a transaction waits for two-phase commit.
  const auto& begin = c.transaction().deferred_begin();
  const bool fresh_read_committed =
      !c.backends().active && c.transaction().deferred() && !route.write && !route.ddl &&
      !router::icontains(begin, "serializable") && !router::icontains(begin, "repeatable") &&
      !router::icontains(begin, "snapshot");
  // Inside a transaction on a shard, the statement runs in that transaction on every shard
  // it needs: shards already in it lend their servers, others join (two-phase commit).
  const bool in_txn = c.transaction_status() != 'I' && !fresh_read_committed;
  // BEGIN still pgshard's (REPEATABLE READ, or a write first): every shard joins now.
  const bool opens_txn = in_txn && !c.backends().active && c.transaction().deferred();
  if (in_txn && !opens_txn &&
      (!c.backends().active || c.backends().active->lease->status != 'T' ||
       c.transaction().failed() || c.transaction().savepoints() || route.ddl)) {
    refuse("statement needs shards " + names + " inside this transaction (" +
               (route.ddl ? std::string("DDL")
                : c.transaction().savepoints()
                    ? std::string("it has savepoints")
                    : std::string("it has failed or has not started on a shard")) +
               "); not supported",
           "run it outside the transaction, or add the shard key");
    co_await c.write_client(out);
    co_return;
  }
  if (!route.write && !route.concat_safe && !plan) {
    std::string hint = "add the shard key to the WHERE clause so one shard answers";
    if (route.merge && !route.merge->hint.empty()) hint = route.merge->hint;
    refuse(route.merge_blocker + " across shards (" + names + ") is not supported", hint);
    co_await c.write_client(out);
    co_return;
  }
  if (route.write && plan) {
    refuse("SELECT ... FOR UPDATE/SHARE with ORDER BY, LIMIT or aggregates across shards (" +
               names + ") is not supported",
           "lock the rows with a plain SELECT ... FOR UPDATE, or add the shard key");
    co_await c.write_client(out);
    co_return;
  }
  if (!simple && boundary != proto::msg::kSync) {
    refuse("a statement that needs shards " + names +
               " must end its extended-protocol batch with Sync",
           "send Sync after Execute");
    co_await c.write_client(out);
    co_return;
  }
  if (route.ddl) {
    co_await run_ddl(c, route);
    co_return;
  }
  if (c.backends().active && !c.session_pooled() && !in_txn) c.release(c.backends().active);

  // ---- the request each shard gets ----
  std::string request;  // the same for every shard, unless the INSERT was split
  std::optional<int64_t> limit, offset;
  // What each shard will owe for the request (the replies pgshard caused itself hidden).
  pool::Replies expected;
  int32_t max_rows = 0;  // Execute's row limit, 0: all
  if (simple) {
    if (plan && !plan->shard_sql.empty())
      proto::Query{plan->shard_sql}.write(request);
    else
      request = c.request();
    expected.expect_batch(request, pool::Replies::Owner::kClient);
    if (plan) {
      limit = plan->limit.value;
      offset = plan->offset.value;
    }
  } else {
    if (!build_extended(c, plan, {}, request, expected, limit, offset, max_rows, out, names)) {
      co_await c.write_client(out);
      co_return;
    }
  }

  // ---- connect every shard ----
  const bool partial = !route.write && router::partial_results(c.hints(), c.config(), c.user());
  const bool atomic = route.write && !in_txn;  // in a transaction, its COMMIT decides
  std::vector<Leg> legs;
  std::vector<std::string> missing;  // shards left out of a partial answer
  auto jobs = route.shards;
  if (!route.per_shard_sql.empty()) {
    jobs.clear();
    for (const auto& [shard, sql] : route.per_shard_sql) jobs.push_back(shard);
  }
  if (opens_txn) c.transaction().take_deferred();  // every shard opens it as the client did
  struct GiveBack {
    Client& c;
    std::vector<Leg>& legs;
    ~GiveBack() {
      for (auto& leg : legs)
        if (leg.link) c.backends().give_back(leg.link);
    }
  } give_back_guard{c, legs};
  for (int shard : jobs) {
    Leg leg;
    leg.shard = shard;
    if (in_txn) {
      std::shared_ptr<pool::Link> link;
      if (c.backends().active && c.backends().active->shard == shard) {
        link = c.backends().active;
      } else if (auto participant = c.backends().participant(shard)) {
        link = std::move(participant);
      } else {
        // A new participant, opened the way the client opened the transaction.
        auto saved = c.backends().active;
        c.backends().active.reset();
        const bool attached = co_await c.attach(shard);  // answers the client on failure
        link = c.backends().active;
        c.backends().active = saved;
        if (!attached) co_return;
        c.backends().add_participant(link);
        c.transaction().joined();
        if (!link->prelude.empty()) {
          std::string prelude = std::move(link->prelude);
          link->prelude.clear();
          co_await c.write_server(link, prelude);
        }
        if (!co_await c.run_ours(link, c.transaction().begin_sql) ||
            link->lease->replies.tag != "BEGIN") {
          c.transaction().fail();
          proto::write_error(
              out, proto::error(sqlstate::kConnectionFailure,
                                "could not open the transaction on shard " +
                                    c.config().shards[static_cast<std::size_t>(shard)].name));
          out += proto::ready_for_query(c.transaction_status());
          co_await c.write_client(out);
          co_return;
        }
      }
      co_await c.backends().borrow(link);
      leg.link = link;
      leg.conn = &*link->lease;
      legs.push_back(std::move(leg));
      continue;
    }
    auto got = co_await c.worker().pool(shard, c.user()).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      if (!partial) {
        proto::write_error(out, proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
        out += proto::ready_for_query(c.transaction_status());
        co_await c.write_client(out);
        co_return;
      }
      missing.push_back(c.config().shards[static_cast<std::size_t>(shard)].name);
      continue;
    }
    leg.lease = std::move(std::get<pool::Lease>(got));
    leg.conn = &*leg.lease;
    legs.push_back(std::move(leg));
  }
  // One participant takes the client's next statements; the others wait for COMMIT.
  if (opens_txn) c.backends().promote();
  // Text comparisons use the shards' collation, read once per worker.
  const merge::Collation* collation = nullptr;
  if (plan && !legs.empty()) {
    std::string err;
    collation = co_await shard_collation(c, *legs[0].conn, &err);
    if (!collation) {
      proto::write_error(out, proto::error(sqlstate::kFeatureNotSupported, err));
      out += proto::ready_for_query(c.transaction_status());
      co_await c.write_client(out);
      co_return;
    }
  }

  // ---- send: settings, BEGIN for writes, the request ----
  for (std::size_t i = 0; i < legs.size(); ++i) {
    auto& leg = legs[i];
    auto* lease = leg.conn;
    auto& replies = lease->replies;
    std::string batch = c.sync_prelude(*lease);
    if (atomic) {
      proto::Query{"BEGIN"}.write(batch);
      replies.expect_ready(pool::Replies::Owner::kOwn);
    }
    if (!route.per_shard_sql.empty() && simple) {
      proto::Query{route.per_shard_sql[i].second}.write(batch);
      replies.expect_ready(pool::Replies::Owner::kClient);
    } else if (!route.per_shard_sql.empty()) {
      // Each shard's part of a split INSERT, in the client's extended batch.
      std::string mine;
      pool::Replies its;
      build_extended(c, nullptr, route.per_shard_sql[i].second, mine, its, limit, offset, max_rows,
                     out, names);
      replies.append(its);
      batch += mine;
    } else {
      replies.append(expected);
      batch += request;
    }
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    if (ec) {
      leg.failed = true;
      leg.problem = "connection lost";
    }
  }

  // A CancelRequest from the client reaches every shard of the statement.
  std::vector<pool::ServerConn*> running;
  for (auto& leg : legs) running.push_back(leg.conn);
  c.running_on(std::move(running));
  struct ClearOnExit {
    Client& c;
    ~ClearOnExit() { c.running_on({}); }
  } clear_servers{c};

  // A client that leaves stops the statement on every shard (cancelled, servers discarded)
  // instead of having pgshard read every shard to the end for nobody.
  auto watch = std::make_shared<ClientWatch>(c.worker().executor());
  asio::co_spawn(c.worker().executor(),
                 c.watch_client(watch,
                                [&legs] {
                                  for (auto& leg : legs)
                                    if (!leg.done && !leg.failed) {
                                      leg.abandoned = true;
                                      leg.timed_out = true;  // check_legs cancels it on its shard
                                      error_code ignored;
                                      leg.conn->socket().cancel(ignored);
                                    }
                                }),
                 asio::detached);

  // A shard that takes longer than timeouts.shard_statement is cancelled and left out.
  asio::steady_timer deadline(co_await asio::this_coro::executor);
  if (c.config().timeouts.shard_statement.count() > 0) {
    deadline.expires_after(c.config().timeouts.shard_statement);
    deadline.async_wait([&legs](error_code ec) {
      if (ec) return;  // cancelled: the statement finished in time
      for (auto& leg : legs)
        if (!leg.done && !leg.failed) {
          leg.timed_out = true;
          error_code ignored;
          leg.conn->socket().cancel(ignored);
        }
    });
  }

  // ---- read every shard's replies; the combiner says whose reply it needs next ----
  CombineOptions options;
  options.plan = plan;
  options.collation = collation;
  options.limit = limit;
  options.offset = offset;
  options.max_rows = max_rows;
  options.replicated = route.replicated;
  options.partial = partial;
  for (const auto& leg : legs)
    options.shard_names.push_back(c.config().shards[static_cast<std::size_t>(leg.shard)].name);
  Combiner combiner(static_cast<int>(legs.size()), std::move(options));
  combiner.out() = std::move(out);
  out.clear();
  // Hands the combiner the next reply of legs[i] that concerns it: replies to pgshard's own
  // messages are hidden by the server's reply queue (except a RowDescription the merge
  // needs). False when the shard is gone.
  auto next_reply = [&](Leg& leg, int i) -> awaitable<bool> {
    auto* conn = leg.conn;
    for (;;) {
      auto d = proto::decode_frame(conn->rbuf.view(), c.config().listen.max_message_size);
      if (d.status == proto::DecodeStatus::kError) co_return false;
      if (d.status == proto::DecodeStatus::kNeedMore) {
        // The client left while another shard was being read: this socket had no read
        // to cancel then, so do not start one now.
        if (leg.abandoned) co_return false;
        std::size_t room;
        char* at = conn->rbuf.prepare(kReadChunk, &room);
        auto [ec, n] = co_await conn->socket().async_read_some(asio::buffer(at, room), use_nothrow);
        if (ec) co_return false;
        conn->rbuf.commit(n);
        continue;
      }
      const auto& f = d.frame;
      if (f.type == proto::msg::kReadyForQuery) conn->status = f.body.empty() ? 'I' : f.body[0];
      const bool ours = conn->replies.own_front();
      const bool hidden =
          conn->replies.classify(f, &conn->prepared) == pool::Replies::Verdict::kHide;
      const bool pass = !hidden || (!ours && f.type == proto::msg::kRowDescription);
      if (pass) combiner.add(i, f, std::string_view(conn->rbuf.data(), d.consumed), hidden);
      conn->rbuf.consume(d.consumed);
      if (pass) co_return true;
    }
  };
  for (std::size_t i = 0; i < legs.size(); ++i)
    if (legs[i].failed) combiner.fail(static_cast<int>(i), legs[i].problem, false);
  // A shard left mid-reply is discarded; one that timed out (or whose client left) is
  // cancelled so it stops working for nobody.
  auto stop_leg = [&](Leg& leg) {
    leg.done = true;
    leg.conn->broken = true;
    if (leg.timed_out && leg.conn->pid()) {
      const auto& shard = c.config().shards[static_cast<std::size_t>(leg.shard)];
      server::send_server_cancel(c.worker().executor(), shard.primary.host, shard.primary.port,
                                 leg.conn->pid(), leg.conn->secret());
    }
  };
  for (int i; (i = combiner.wants()) >= 0;) {
    auto& leg = legs[static_cast<std::size_t>(i)];
    if (!co_await next_reply(leg, i)) {
      leg.failed = true;
      stop_leg(leg);
      combiner.fail(
          i, leg.timed_out ? "did not answer within timeouts.shard_statement" : "connection lost",
          leg.timed_out);
      continue;
    }
    if (combiner.finished(i)) leg.done = true;
    if (combiner.out().size() > kClientFlush && !c.gone()) {
      co_await c.write_client(combiner.out());
      combiner.out().clear();
    }
  }
  for (std::size_t i = 0; i < legs.size(); ++i)
    if (combiner.finished(static_cast<int>(i))) legs[i].done = true;
  out += combiner.out();
  std::optional<proto::ErrorInfo> failure = combiner.failure();
  const bool error_sent = combiner.error_sent();
  missing.insert(missing.end(), combiner.missing().begin(), combiner.missing().end());
  deadline.cancel();
  co_await c.stop_watch(*watch);

  // A statement pgshard failed itself: shards still mid-reply are not worth waiting for.
  for (auto& leg : legs)
    if (!leg.done && (failure || leg.timed_out)) stop_leg(leg);

  // ---- writes: COMMIT everywhere, or ROLLBACK everywhere ----
  const bool ok = !failure && !error_sent && missing.empty();
  if (atomic) {
    std::vector<std::string> committed;
    for (auto& leg : legs) {
      if (leg.conn->broken || leg.failed) continue;
      const char* end_verb = ok ? "COMMIT" : "ROLLBACK";
      const bool done = co_await leg.conn->run_own(end_verb, c.config().listen.max_message_size) &&
                        leg.conn->replies.tag == end_verb;
      if (!done) leg.conn->broken = true;
      const auto& name = c.config().shards[static_cast<std::size_t>(leg.shard)].name;
      if (ok && done) committed.push_back(name);
      if (ok && !done && !failure) {
        std::string note;
        for (auto& c : committed) note += (note.empty() ? "" : ", ") + c;
        failure = proto::error(
            sqlstate::kConnectionFailure,
            "COMMIT failed on shard " + name +
                (note.empty() ? std::string() : " after shard(s) " + note + " committed"),
            {}, "the shards may now disagree; check and repair");
      }
    }
  }
  // In a transaction, a failure on any shard fails the whole transaction (25P02 until it
  // ends), as one PostgreSQL would.
  if (in_txn && (failure || error_sent)) c.transaction().fail();
  if (failure) {
    proto::write_error(out, *failure);
  } else if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    auto warning = proto::error(sqlstate::kWarning, "partial result: shard(s) " + list +
                                                        " did not answer; their rows are missing");
    warning.severity = "WARNING";
    // The warning goes before the final ReadyForQuery (notices may come at any time).
    proto::write_notice(out, warning);
  }
  out += proto::ready_for_query(c.transaction_status());
  co_await c.write_client(out);
}

static bool build_extended(Client& c, const merge::MergePlan* plan, std::string_view override_sql,
                           std::string& request, pool::Replies& expected,
                           std::optional<int64_t>& limit, std::optional<int64_t>& offset,
                           int32_t& max_rows, std::string& out, const std::string& names) {
  // The client's batch as the shards get it: statement names prefixed (and closed again
  // before Sync, so no shard keeps them), a Parse ahead of any Bind or Describe of a
  // statement this batch did not parse, and a Describe ahead of Execute so the merge knows
  // the column types. The replies those cause are hidden from the client.
  request.clear();
  max_rows = 0;
  expected.clear();
  using Owner = pool::Replies::Owner;
  using Action = pool::Replies::Action;
  auto refuse = [&](std::string message, std::string hint) {
    proto::write_error(
        out, proto::error(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint)));
    out += proto::ready_for_query(c.transaction_status());
  };
  std::set<std::string, std::less<>> parsed;
  std::vector<std::string> fan_names;  // statements to close before Sync
  int executes = 0;
  auto shard_name = [](std::string_view name) {
    return name.empty() ? std::string() : "pgshard_fan." + std::string(name);
  };
  auto shard_text = [&](std::string_view sql) -> std::string_view {
    if (!override_sql.empty()) return override_sql;
    if (plan && !plan->shard_sql.empty() &&
        c.worker().analysis_cache().get(sql, c.config())->merge.get() == plan)
      return plan->shard_sql;
    return sql;
  };
  auto inject_parse = [&](std::string_view name) {
    if (parsed.contains(name)) return;
    const std::string renamed = shard_name(name);  // Parse holds views: keep the name alive
    proto::Parse{renamed, shard_text(c.stored_text(name)), c.stored_types(name)}.write(request);
    expected.expect_parse(Owner::kClient, Action::kHide);
    parsed.insert(std::string(name));
    if (!name.empty()) fan_names.push_back(shard_name(name));
  };
  std::set<std::string, std::less<>> described_portals;
  for (std::string_view rest = c.request(); !rest.empty();) {
    auto d = proto::decode_frame(rest);
    if (d.status != proto::DecodeStatus::kFrame) break;
    rest.remove_prefix(d.consumed);
    const auto& f = d.frame;
    switch (f.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body)) {
          std::string n = shard_name(p->name);
          proto::Parse{n, shard_text(p->query), p->param_types}.write(request);
          expected.expect_parse(Owner::kClient, Action::kForward);
          parsed.insert(std::string(p->name));
          if (!p->name.empty()) fan_names.push_back(n);
        }
        break;
      case proto::msg::kBind:
        if (auto b = proto::Bind::parse(f.body)) {
          inject_parse(b->statement);
          std::string n = shard_name(b->statement);
          b->statement = n;
          // Helper columns come after the client's; they travel as text.
          if (plan && plan->hidden > 0 && b->result_formats.size() > 1)
            b->result_formats.resize(
                b->result_formats.size() + static_cast<std::size_t>(plan->hidden), 0);
          if (plan) {
            auto resolve = [&](const merge::Bound& bound) -> std::optional<int64_t> {
              if (bound.value) return bound.value;
              if (bound.param <= 0) return std::nullopt;
              auto text = router::param_text(*b, bound.param, config::KeyType::kInt8);
              if (!text) return std::nullopt;
              return std::strtoll(text->c_str(), nullptr, 10);
            };
            limit = resolve(plan->limit);
            offset = resolve(plan->offset);
          }
          b->write(request);
        }
        break;
      case proto::msg::kDescribe:
        if (auto dsc = proto::Describe::parse(f.body)) {
          std::string n(dsc->name);
          if (dsc->kind == 'S') {
            inject_parse(dsc->name);
            n = shard_name(dsc->name);
          } else {
            described_portals.insert(n);
          }
          proto::Describe{dsc->kind, n}.write(request);
          expected.expect_describe(Owner::kClient, Action::kForward);
        }
        break;
      case proto::msg::kExecute:
        if (auto e = proto::Execute::parse(f.body)) {
          ++executes;
          // A row limit (asyncpg's fetchrow, JDBC's fetch size): the shards run the portal
          // to the end; pgshard hands out max_rows rows and then PortalSuspended. The rest
          // of the portal is gone, so only a batch that ends it (Sync) may do this.
          if (e->max_rows != 0) {
            if (max_rows != 0) {
              refuse("several row-limited Executes across shards (" + names + ") in one batch",
                     "fetch all rows, or add the shard key");
              return false;
            }
            max_rows = e->max_rows;
          }
          // The merge needs the columns' types even when the client did not ask.
          if (!described_portals.contains(e->portal)) {
            proto::Describe{'P', e->portal}.write(request);
            expected.expect_describe(Owner::kClient, Action::kHide);
          }
          proto::Execute{e->portal, 0}.write(request);
        }
        break;
      case proto::msg::kClose:
        if (auto c = proto::Close::parse(f.body)) {
          proto::Close{c->kind, c->kind == 'S' ? shard_name(c->name) : std::string(c->name)}.write(
              request);
          expected.expect_close(Owner::kClient, Action::kForward);
        }
        break;
      case proto::msg::kSync:
        // Shards keep nothing of the client's statements: close what was parsed here.
        for (const auto& n : fan_names) {
          proto::Close{'S', n}.write(request);
          expected.expect_close(Owner::kClient, Action::kHide);
        }
        request.append(rest.data() - d.consumed, d.consumed);
        expected.expect_ready(Owner::kClient);
        break;
      default:
        request.append(rest.data() - d.consumed, d.consumed);
    }
  }
  if (plan && executes > 1) {
    refuse("several multi-shard statements in one pipelined batch",
           "send a Sync after each statement");
    return false;
  }
  return true;
}

awaitable<void> run_ddl(Client& c, const router::Route& route) {
  // DDL runs on every shard in shard order and stops at the first failure; the client
  // learns which shards applied it. No transaction wraps it, so CREATE INDEX CONCURRENTLY
  // works as it does on one PostgreSQL.
  if (c.backends().active && !c.session_pooled()) c.release(c.backends().active);
  std::string out;
  std::vector<std::string> applied;
  std::string first_tag;
  std::optional<std::string> error_frame;
  std::string failed_shard;
  std::set<std::string> notices_seen;
  for (int shard : route.shards) {
    const auto& name = c.config().shards[static_cast<std::size_t>(shard)].name;
    auto got = co_await c.worker().pool(shard, c.user()).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      std::string e;
      proto::write_error(e, proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
      error_frame = e;
      failed_shard = name;
      break;
    }
    auto lease = std::move(std::get<pool::Lease>(got));
    std::string batch = c.sync_prelude(*lease);
    batch += c.request();
    lease->replies.expect_batch(c.request(), pool::Replies::Owner::kClient);
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    std::string replies;
    bool failed = false;
    bool ok = !ec &&
              co_await lease->read_replies(
                  c.config().listen.max_message_size,
                  [&](const proto::Frame& f, std::string_view raw, pool::Replies::Verdict verdict) {
                    if (verdict == pool::Replies::Verdict::kHide) return false;
                    switch (f.type) {
                      case proto::msg::kErrorResponse:
                        failed = true;
                        error_frame = std::string(raw);
                        break;
                      case proto::msg::kNoticeResponse:
                        if (notices_seen.insert(std::string(raw)).second) out.append(raw);
                        break;
                      case proto::msg::kReadyForQuery:
                      case proto::msg::kParameterStatus:
                        break;
                      default:
                        // The first shard's replies stand for all (tags, ParseComplete...).
                        if (applied.empty()) replies.append(raw);
                    }
                    return f.type == proto::msg::kReadyForQuery && lease->replies.empty();
                  });
    if (!ok) {
      lease->broken = true;
      std::string e;
      proto::write_error(e, proto::error(sqlstate::kConnectionFailure,
                                         "server connection to shard " + name + " was lost"));
      error_frame = e;
      failed = true;
    }
    if (failed) {
      failed_shard = name;
      break;
    }
    if (applied.empty()) first_tag = replies;
    applied.push_back(name);
  }
  if (error_frame) {
    // The shard's own error, with a detail saying where the statement took effect.
    auto fields = proto::ErrorFields::parse(std::string_view(*error_frame).substr(5));
    std::string applied_list, pending_list;
    for (const auto& a : applied) applied_list += (applied_list.empty() ? "" : ", ") + a;
    bool after = false;
    for (int shard : route.shards) {
      const auto& name = c.config().shards[static_cast<std::size_t>(shard)].name;
      if (name == failed_shard) after = true;
      if (after) pending_list += (pending_list.empty() ? "" : ", ") + name;
    }
    proto::ErrorInfo e = proto::error(
        fields ? fields->code() : sqlstate::kInternalError,
        (fields ? std::string(fields->message()) : std::string("DDL failed")) + " (on shard " +
            failed_shard + ")",
        "applied on shard(s): " + (applied_list.empty() ? std::string("none") : applied_list) +
            "; not applied on: " + pending_list,
        applied.empty() ? std::string()
                        : "repair or undo the statement on the shards that applied it");
    proto::write_error(out, e);
  } else {
    out += first_tag;
  }
  out += proto::ready_for_query(c.transaction_status());
  co_await c.write_client(out);
}

static awaitable<const merge::Collation*> shard_collation(Client& c, pool::ServerConn& conn,
                                                          std::string* error) {
  if (const auto* known = c.worker().collation()) co_return known;
  std::string name;
  const bool ok = co_await conn.run_own(
      "SELECT datcollate FROM pg_database WHERE datname = current_database()",
      c.config().listen.max_message_size, [&](std::string_view body) {
        if (auto row = proto::DataRow::parse(body); row && !row->values.empty() && row->values[0])
          name = std::string(*row->values[0]);
      });
  if (!ok || name.empty()) {
    conn.broken = true;
    *error = "could not read the shard's collation";
    co_return nullptr;
  }
  const auto* opened = c.worker().set_collation(name);
  if (!opened)
    *error = "the shards' collation \"" + name + "\" is not available on the pgshard host";
  co_return opened;
}

}  // namespace pgshard::executor
