// Multi-shard execution: one statement sent to several shards at once, their replies read in
// lockstep (every shard answers the same messages in the same order) and combined into the
// one reply the client expects — rows merged by merge::Merger, tags summed, one
// ReadyForQuery. Simple and extended protocol; writes commit on every shard or on none.
#include <spdlog/spdlog.h>

#include <deque>
#include <set>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/router/text.hpp"
#include "proxy/server/cancel.hpp"
#include "proxy/server/server.hpp"
#include "proxy/session/params.hpp"
#include "proxy/session/read_replies.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
constexpr std::size_t kClientFlush = 256 * 1024;

// Shards agree on a result shape when names, types and formats match; table OIDs and
// column numbers differ from shard to shard and do not count.
bool same_columns(std::string_view a_body, std::string_view b_body) {
  auto a = proto::RowDescription::parse(a_body);
  auto b = proto::RowDescription::parse(b_body);
  if (!a || !b || a->fields.size() != b->fields.size()) return false;
  for (std::size_t i = 0; i < a->fields.size(); ++i) {
    const auto& x = a->fields[i];
    const auto& y = b->fields[i];
    if (x.name != y.name || x.type_oid != y.type_oid || x.format != y.format) return false;
  }
  return true;
}

// "SELECT 3", "UPDATE 2", "INSERT 0 5" carry a count; "CREATE TABLE" does not.
struct Tag {
  std::string verb;
  uint64_t total = 0;
  bool counted = false;
  void add(std::string_view tag) {
    auto sp = tag.rfind(' ');
    auto last = sp == tag.npos ? std::string_view() : tag.substr(sp + 1);
    counted = !last.empty() && last.find_first_not_of("0123456789") == last.npos;
    verb = std::string(counted ? tag.substr(0, tag.find(' ')) : tag);
    if (counted) total += std::strtoull(std::string(last).c_str(), nullptr, 10);
  }
  std::string text() const {
    if (!counted) return verb;
    return verb == "INSERT" ? "INSERT 0 " + std::to_string(total)
                            : verb + " " + std::to_string(total);
  }
};

// One shard's part of the statement.
struct Leg {
  int shard = 0;
  pool::Lease lease;                 // a server of its own, or
  std::shared_ptr<Link> link;        // a transaction participant's, borrowed
  pool::ServerConn* conn = nullptr;  // whichever it is
  bool failed = false;               // lost, timed out, or never connected
  bool timed_out = false;
  bool abandoned = false;  // the client left: stop reading
  bool done = false;       // ReadyForQuery of the request seen
  bool rows_ended = false;
  std::optional<proto::Frame> head;  // the next reply, not consumed yet
  std::size_t head_size = 0;
  bool head_hidden = false;  // a RowDescription pgshard asked for: for the merge only
  std::string problem;       // why the leg failed
};

}  // namespace

awaitable<void> Session::fan_out(const router::Route& route, bool simple, char boundary) {
  if (!co_await drain()) co_return;
  Waiting waiting(*this, "shards (fan-out)");
  std::string out;
  std::string names;
  for (int s : route.shards) names += (names.empty() ? "" : ", ") + config_.shards[s].name;
  // (Not a coroutine: GCC 12 mishandles temporaries in co_await arguments.)
  auto refuse = [&](std::string message, std::string hint) {
    proto::write_error(
        out, proto::error(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint)));
    if (boundary == proto::msg::kFlush)
      discard_until_sync_ = true;
    else
      out += proto::ready_for_query(transaction_status());
  };
  const merge::MergePlan* plan =
      route.merge && route.merge_blocker.empty() ? route.merge.get() : nullptr;
  // A read in a transaction that has not touched a shard yet (BEGIN is still pgshard's) at
  // READ COMMITTED sees what any new statement would: it runs on fresh servers and the
  // transaction stays open. Anything else inside a transaction waits for two-phase commit.
  const auto& begin = txn_.deferred_begin();
  const bool fresh_read_committed = !active_ && txn_.deferred() && !route.write && !route.ddl &&
                                    !router::icontains(begin, "serializable") &&
                                    !router::icontains(begin, "repeatable") &&
                                    !router::icontains(begin, "snapshot");
  // Inside a transaction on a shard, the statement runs in that transaction on every shard
  // it needs: shards already in it lend their servers, others join (two-phase commit).
  const bool in_txn = transaction_status() != 'I' && !fresh_read_committed;
  // BEGIN still pgshard's (REPEATABLE READ, or a write first): every shard joins now.
  const bool opens_txn = in_txn && !active_ && txn_.deferred();
  if (in_txn && !opens_txn &&
      (!active_ || active_->lease->status != 'T' || txn_.failed() || txn_.savepoints() ||
       route.ddl)) {
    refuse("statement needs shards " + names + " inside this transaction (" +
               (route.ddl           ? std::string("DDL")
                : txn_.savepoints() ? std::string("it has savepoints")
                                    : std::string("it has failed or has not started on a shard")) +
               "); not supported",
           "run it outside the transaction, or add the shard key");
    co_await write_client(out);
    co_return;
  }
  if (!route.write && !route.concat_safe && !plan) {
    std::string hint = "add the shard key to the WHERE clause so one shard answers";
    if (route.merge && !route.merge->hint.empty()) hint = route.merge->hint;
    refuse(route.merge_blocker + " across shards (" + names + ") is not supported", hint);
    co_await write_client(out);
    co_return;
  }
  if (route.write && plan) {
    refuse("SELECT ... FOR UPDATE/SHARE with ORDER BY, LIMIT or aggregates across shards (" +
               names + ") is not supported",
           "lock the rows with a plain SELECT ... FOR UPDATE, or add the shard key");
    co_await write_client(out);
    co_return;
  }
  if (!simple && boundary != proto::msg::kSync) {
    refuse("a statement that needs shards " + names +
               " must end its extended-protocol batch with Sync",
           "send Sync after Execute");
    co_await write_client(out);
    co_return;
  }
  if (route.ddl) {
    co_await run_ddl(route);
    co_return;
  }
  if (active_ && !session_pooled() && !in_txn) release(active_);

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
      request = pending_;
    expected.expect_batch(request, pool::Replies::Owner::kClient);
    if (plan) {
      limit = plan->limit.value;
      offset = plan->offset.value;
    }
  } else {
    if (!build_extended(plan, {}, request, expected, limit, offset, max_rows, out, names)) {
      co_await write_client(out);
      co_return;
    }
  }

  // ---- connect every shard ----
  const bool partial = !route.write && router::partial_results(hints_, config_, *user_);
  const bool atomic = route.write && !in_txn;  // in a transaction, its COMMIT decides
  std::vector<Leg> legs;
  std::vector<std::string> missing;  // shards left out of a partial answer
  auto jobs = route.shards;
  if (!route.per_shard_sql.empty()) {
    jobs.clear();
    for (const auto& [shard, sql] : route.per_shard_sql) jobs.push_back(shard);
  }
  if (opens_txn) txn_.take_deferred();  // every shard opens it as the client did
  struct GiveBack {
    Session* session;
    std::vector<Leg>& legs;
    ~GiveBack() {
      for (auto& leg : legs)
        if (leg.link) session->give_back(leg.link);
    }
  } give_back_guard{this, legs};
  for (int shard : jobs) {
    Leg leg;
    leg.shard = shard;
    if (in_txn) {
      std::shared_ptr<Link> link;
      if (active_ && active_->shard == shard) {
        link = active_;
      } else if (auto it = txn_links_.find(shard); it != txn_links_.end()) {
        link = it->second;
      } else {
        // A new participant, opened the way the client opened the transaction.
        auto saved = active_;
        active_.reset();
        const bool attached = co_await attach(shard);  // answers the client on failure
        link = active_;
        active_ = saved;
        if (!attached) co_return;
        txn_links_[shard] = link;
        txn_.joined();
        if (!link->prelude.empty()) {
          std::string prelude = std::move(link->prelude);
          link->prelude.clear();
          co_await write_server(link, prelude);
        }
        if (!co_await run_ours(link, txn_.begin_sql) || link->lease->replies.tag != "BEGIN") {
          txn_.fail();
          proto::write_error(
              out, proto::error(sqlstate::kConnectionFailure,
                                "could not open the transaction on shard " +
                                    config_.shards[static_cast<std::size_t>(shard)].name));
          out += proto::ready_for_query(transaction_status());
          co_await write_client(out);
          co_return;
        }
      }
      co_await borrow(link);
      leg.link = link;
      leg.conn = &*link->lease;
      legs.push_back(std::move(leg));
      continue;
    }
    auto got = co_await worker_.pool(shard, *user_).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      if (!partial) {
        proto::write_error(out, proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
        out += proto::ready_for_query(transaction_status());
        co_await write_client(out);
        co_return;
      }
      missing.push_back(config_.shards[static_cast<std::size_t>(shard)].name);
      continue;
    }
    leg.lease = std::move(std::get<pool::Lease>(got));
    leg.conn = &*leg.lease;
    legs.push_back(std::move(leg));
  }
  if (opens_txn && !active_ && !txn_links_.empty()) {
    // One participant takes the client's next statements; the others wait for COMMIT.
    active_ = txn_links_.begin()->second;
    txn_links_.erase(txn_links_.begin());
  }
  // Text comparisons use the shards' collation, read once per worker.
  const merge::Collation* collation = nullptr;
  if (plan && !legs.empty()) {
    std::string err;
    collation = co_await shard_collation(*legs[0].conn, &err);
    if (!collation) {
      proto::write_error(out, proto::error(sqlstate::kFeatureNotSupported, err));
      out += proto::ready_for_query(transaction_status());
      co_await write_client(out);
      co_return;
    }
  }

  // ---- send: settings, BEGIN for writes, the request ----
  for (std::size_t i = 0; i < legs.size(); ++i) {
    auto& leg = legs[i];
    auto* lease = leg.conn;
    auto& replies = lease->replies;
    std::string batch = sync_prelude(*lease);
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
      build_extended(nullptr, route.per_shard_sql[i].second, mine, its, limit, offset, max_rows,
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
  fan_out_servers_.clear();
  for (auto& leg : legs) fan_out_servers_.push_back(leg.conn);
  struct ClearOnExit {
    std::vector<pool::ServerConn*>& v;
    ~ClearOnExit() { v.clear(); }
  } clear_servers{fan_out_servers_};

  // A client that leaves stops the statement on every shard (cancelled, servers discarded)
  // instead of having pgshard read every shard to the end for nobody.
  auto watch = std::make_shared<ClientWatch>(worker_.executor());
  asio::co_spawn(worker_.executor(),
                 watch_client(watch,
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
  if (config_.timeouts.shard_statement.count() > 0) {
    deadline.expires_after(config_.timeouts.shard_statement);
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

  std::set<std::string> notices_seen;
  // Makes legs[i].head the next reply that matters; false when the shard is gone.
  auto peek = [&](Leg& leg) -> awaitable<bool> {
    auto* lease = leg.conn;
    while (!leg.head) {
      auto d = proto::decode_frame(lease->rbuf.view(), config_.listen.max_message_size);
      if (d.status == proto::DecodeStatus::kError) break;
      if (d.status == proto::DecodeStatus::kNeedMore) {
        // The client left while another shard was being read: this socket had no read
        // to cancel then, so do not start one now.
        if (leg.abandoned) break;
        std::size_t room;
        char* at = lease->rbuf.prepare(kReadChunk, &room);
        auto [ec, n] =
            co_await lease->socket().async_read_some(asio::buffer(at, room), use_nothrow);
        if (ec) break;
        lease->rbuf.commit(n);
        continue;
      }
      const auto& f = d.frame;
      std::string_view raw(lease->rbuf.data(), d.consumed);
      if (f.type == proto::msg::kReadyForQuery) lease->status = f.body.empty() ? 'I' : f.body[0];
      const bool ours = lease->replies.own_front();
      const bool hidden =
          lease->replies.classify(f, &lease->prepared) == pool::Replies::Verdict::kHide;
      // A RowDescription pgshard asked for is hidden from the client, not from the merge.
      if (hidden && (ours || f.type != proto::msg::kRowDescription)) {
        lease->rbuf.consume(d.consumed);
        continue;
      }
      leg.head_hidden = hidden;
      if (f.type == proto::msg::kNoticeResponse || f.type == proto::msg::kNotificationResponse) {
        // The same notice from every shard reaches the client once.
        if (notices_seen.insert(std::string(raw)).second) out.append(raw);
        lease->rbuf.consume(d.consumed);
        continue;
      }
      if (f.type == proto::msg::kParameterStatus) {
        lease->rbuf.consume(d.consumed);
        continue;
      }
      leg.head = f;
      leg.head_size = d.consumed;
      co_return true;
    }
    if (leg.head) co_return true;
    leg.failed = true;
    leg.problem =
        leg.timed_out ? "did not answer within timeouts.shard_statement" : "connection lost";
    co_return false;
  };
  auto consume = [](Leg& leg) {
    leg.conn->rbuf.consume(leg.head_size);
    leg.head.reset();
  };
  auto raw_head = [](Leg& leg) { return std::string_view(leg.conn->rbuf.data(), leg.head_size); };
  auto flush_client = [&]() -> awaitable<void> {
    if (out.size() > kClientFlush && !client_gone_) {
      co_await write_client(out);
      out.clear();
    }
  };

  // Rows for the client, cut at Execute's row limit (the rest are dropped: suspended).
  int64_t delivered = 0;
  bool suspended = false;
  auto deliver = [&](std::string_view frames) {
    if (max_rows == 0) {
      out.append(frames);
      delivered += 1;
      return;
    }
    while (!frames.empty()) {
      auto d = proto::decode_frame(frames);
      if (d.status != proto::DecodeStatus::kFrame) break;
      if (delivered < max_rows)
        out.append(frames.substr(0, d.consumed));
      else
        suspended = true;
      ++delivered;
      frames.remove_prefix(d.consumed);
    }
  };
  std::string merged;                       // the merger's rows on their way to deliver()
  std::optional<proto::ErrorInfo> failure;  // pgshard's own error for the statement
  bool error_sent = false;                  // a shard's ErrorResponse went to the client
  std::optional<merge::Merger> merger;
  Tag tag;
  // Drop (partial) or fail on shards that are gone; true when the statement goes on.
  auto check_legs = [&]() {
    for (auto& leg : legs) {
      if (!leg.failed || leg.done) continue;
      leg.done = true;
      leg.conn->broken = true;
      const auto& shard = config_.shards[static_cast<std::size_t>(leg.shard)];
      if (leg.timed_out && leg.conn->pid())
        server::send_server_cancel(worker_.executor(), shard.primary.host, shard.primary.port,
                                   leg.conn->pid(), leg.conn->secret());
      if (partial) {
        missing.push_back(shard.name);
        if (merger && !leg.rows_ended) {
          leg.rows_ended = true;
          merger->end_of_rows(static_cast<int>(&leg - legs.data()));
        }
      } else if (!failure && !error_sent) {
        failure =
            proto::error(leg.timed_out ? sqlstate::kQueryCanceled : sqlstate::kConnectionFailure,
                         "shard " + shard.name + " " + leg.problem, {},
                         "set pgshard.partial_results = on to answer from the other shards");
      }
    }
    return !failure;
  };
  auto live = [&]() {
    std::vector<Leg*> v;
    for (auto& leg : legs)
      if (!leg.failed && !leg.done) v.push_back(&leg);
    return v;
  };

  // ---- read every shard's replies in lockstep ----
  while (!failure) {
    for (auto* leg : live()) co_await peek(*leg);
    if (!check_legs()) break;
    auto legs_now = live();
    if (legs_now.empty()) break;
    // A shard's error ends the statement: PostgreSQL skips to the end of the request.
    Leg* erring = nullptr;
    for (auto* leg : legs_now)
      if (leg->head->type == proto::msg::kErrorResponse) {
        erring = leg;
        break;
      }
    if (erring) {
      if (!error_sent) out.append(raw_head(*erring));
      error_sent = true;
      for (auto* leg : legs_now) {
        while (!leg->failed && leg->head->type != proto::msg::kReadyForQuery) {
          consume(*leg);
          if (!co_await peek(*leg)) break;
        }
      }
      continue;  // the next round sees ReadyForQuery everywhere
    }
    const char first_type = legs_now[0]->head->type;
    bool rows = false;
    for (auto* leg : legs_now)
      if (leg->head->type == proto::msg::kDataRow || leg->head->type == proto::msg::kCopyData)
        rows = true;
    if (rows && merger) {
      // The merger asks for the rows it needs, one at a time.
      for (int s; !failure && (s = merger->wants()) >= 0;) {
        Leg& leg = legs[static_cast<std::size_t>(s)];
        if (leg.failed || leg.done) break;
        if (leg.head->type == proto::msg::kDataRow) {
          merger->add_row(s, leg.head->body);
          consume(leg);
          if (!co_await peek(leg) && !check_legs()) break;
        } else {
          leg.rows_ended = true;
          merger->end_of_rows(s);
        }
        merged.clear();
        merger->take(merged);
        deliver(merged);
        co_await flush_client();
      }
      if (!merger->error().empty()) {
        failure = proto::error(sqlstate::kFeatureNotSupported, merger->error());
        break;
      }
      // LIMIT reached: the rest of each shard's rows is not needed.
      for (auto* leg : live())
        while (leg->head && leg->head->type == proto::msg::kDataRow) {
          consume(*leg);
          if (!co_await peek(*leg)) break;
        }
      continue;
    }
    if (rows) {
      for (auto* leg : legs_now)
        while (!leg->failed && (leg->head->type == proto::msg::kDataRow ||
                                leg->head->type == proto::msg::kCopyData)) {
          // A reference-table write returns its rows once, from the first copy.
          if (!route.replicated || leg == legs_now[0]) deliver(raw_head(*leg));
          consume(*leg);
          co_await flush_client();
          if (!co_await peek(*leg)) break;
        }
      continue;
    }
    for (auto* leg : legs_now)
      if (leg->head->type != first_type) {
        failure = proto::error(sqlstate::kInternalError,
                               "shards answered the statement differently (shard " +
                                   config_.shards[static_cast<std::size_t>(leg->shard)].name + ")");
      }
    if (failure) break;
    std::string_view first_raw = raw_head(*legs_now[0]);
    std::string_view first_body = legs_now[0]->head->body;
    bool emit = true;
    switch (first_type) {
      case proto::msg::kRowDescription: {
        for (auto* leg : legs_now)
          if (!same_columns(first_body, leg->head->body))
            failure =
                proto::error(sqlstate::kDatatypeMismatch,
                             "shards disagree on the result columns (shard " +
                                 config_.shards[static_cast<std::size_t>(leg->shard)].name + ")",
                             {}, "make the table definitions the same on every shard");
        if (failure) break;
        emit = !legs_now[0]->head_hidden;
        if (plan) {
          merger.emplace(*plan, static_cast<int>(legs.size()), *collation, limit, offset);
          for (auto& leg : legs)
            if (leg.failed) {
              leg.rows_ended = true;
              merger->end_of_rows(static_cast<int>(&leg - legs.data()));
            }
          std::string err;
          auto body = merger->describe(first_body, &err);
          if (!body) {
            failure = proto::error(sqlstate::kFeatureNotSupported, err, {},
                                   "add the shard key to the WHERE clause so one shard answers");
            break;
          }
          if (emit)
            proto::MessageWriter(out).begin(proto::msg::kRowDescription).bytes(*body).finish();
          emit = false;
        }
        break;
      }
      case proto::msg::kCommandComplete:
        emit = false;
        if (merger) {
          for (auto& leg : legs)
            if (!leg.rows_ended) {
              leg.rows_ended = true;
              merger->end_of_rows(static_cast<int>(&leg - legs.data()));
            }
          merged.clear();
          merger->take(merged);
          deliver(merged);
          if (!merger->error().empty()) {
            failure = proto::error(sqlstate::kFeatureNotSupported, merger->error());
            break;
          }
          if (suspended)
            proto::write_empty(out, proto::msg::kPortalSuspended);
          else
            proto::CommandComplete{"SELECT " + std::to_string(merger->rows_sent())}.write(out);
          merger.reset();
          delivered = 0;
          suspended = false;
          break;
        }
        for (auto* leg : legs_now) {
          if (auto c = proto::CommandComplete::parse(leg->head->body)) tag.add(c->tag);
          if (route.replicated) break;  // every shard changed its own copy of the same rows
        }
        if (suspended)
          proto::write_empty(out, proto::msg::kPortalSuspended);
        else
          proto::CommandComplete{tag.text()}.write(out);
        tag = {};
        delivered = 0;
        suspended = false;
        break;
      case proto::msg::kReadyForQuery:
        emit = false;
        for (auto* leg : legs_now) leg->done = true;
        break;
      default:
        break;  // BindComplete, ParameterDescription, EmptyQuery, CopyOut/Done: once
    }
    if (failure) break;
    if (emit) out.append(first_raw);
    for (auto* leg : legs_now) consume(*leg);
  }
  deadline.cancel();
  co_await stop_watch(*watch);

  // A statement pgshard failed itself: shards still mid-reply are not worth waiting for.
  if (failure)
    for (auto& leg : legs)
      if (!leg.done && !leg.failed) leg.conn->broken = true;

  // ---- writes: COMMIT everywhere, or ROLLBACK everywhere ----
  const bool ok = !failure && !error_sent && missing.empty();
  if (atomic) {
    std::vector<std::string> committed;
    for (auto& leg : legs) {
      if (leg.conn->broken || leg.failed) continue;
      const char* end_verb = ok ? "COMMIT" : "ROLLBACK";
      const bool done = co_await run_own(*leg.conn, end_verb) && leg.conn->replies.tag == end_verb;
      if (!done) leg.conn->broken = true;
      const auto& name = config_.shards[static_cast<std::size_t>(leg.shard)].name;
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
  if (in_txn && (failure || error_sent)) txn_.fail();
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
  out += proto::ready_for_query(transaction_status());
  co_await write_client(out);
}

bool Session::build_extended(const merge::MergePlan* plan, std::string_view override_sql,
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
    out += proto::ready_for_query(transaction_status());
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
        worker_.analysis_cache().get(sql, config_)->merge.get() == plan)
      return plan->shard_sql;
    return sql;
  };
  auto inject_parse = [&](std::string_view name) {
    if (parsed.contains(name)) return;
    const std::string renamed = shard_name(name);  // Parse holds views: keep the name alive
    proto::Parse{renamed, shard_text(stored_text(name)), stored_types(name)}.write(request);
    expected.expect_parse(Owner::kClient, Action::kHide);
    parsed.insert(std::string(name));
    if (!name.empty()) fan_names.push_back(shard_name(name));
  };
  std::set<std::string, std::less<>> described_portals;
  for (std::string_view rest = pending_; !rest.empty();) {
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

awaitable<void> Session::run_ddl(const router::Route& route) {
  // DDL runs on every shard in shard order and stops at the first failure; the client
  // learns which shards applied it. No transaction wraps it, so CREATE INDEX CONCURRENTLY
  // works as it does on one PostgreSQL.
  if (active_ && !session_pooled()) release(active_);
  std::string out;
  std::vector<std::string> applied;
  std::string first_tag;
  std::optional<std::string> error_frame;
  std::string failed_shard;
  std::set<std::string> notices_seen;
  for (int shard : route.shards) {
    const auto& name = config_.shards[static_cast<std::size_t>(shard)].name;
    auto got = co_await worker_.pool(shard, *user_).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      std::string e;
      proto::write_error(e, proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
      error_frame = e;
      failed_shard = name;
      break;
    }
    auto lease = std::move(std::get<pool::Lease>(got));
    std::string batch = sync_prelude(*lease);
    batch += pending_;
    lease->replies.expect_batch(pending_, pool::Replies::Owner::kClient);
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    std::string replies;
    bool failed = false;
    bool ok = !ec && co_await read_replies(*lease, [&](const proto::Frame& f, std::string_view raw,
                                                       pool::Replies::Verdict verdict) {
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
      const auto& name = config_.shards[static_cast<std::size_t>(shard)].name;
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
  out += proto::ready_for_query(transaction_status());
  co_await write_client(out);
}

awaitable<const merge::Collation*> Session::shard_collation(pool::ServerConn& conn,
                                                            std::string* error) {
  if (const auto* c = worker_.collation()) co_return c;
  std::string name;
  const bool ok = co_await run_own(
      conn, "SELECT datcollate FROM pg_database WHERE datname = current_database()",
      [&](std::string_view body) {
        if (auto row = proto::DataRow::parse(body); row && !row->values.empty() && row->values[0])
          name = std::string(*row->values[0]);
      });
  if (!ok || name.empty()) {
    conn.broken = true;
    *error = "could not read the shard's collation";
    co_return nullptr;
  }
  const auto* c = worker_.set_collation(name);
  if (!c) *error = "the shards' collation \"" + name + "\" is not available on the pgshard host";
  co_return c;
}

}  // namespace pgshard::session
