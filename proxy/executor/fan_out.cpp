// Multi-shard execution: one statement sent to several shards at once, their replies read in
// lockstep (every shard answers the same messages in the same order) and combined into the
// one reply the client expects — rows merged by merge::Merger, tags summed, one
// ReadyForQuery. Simple and extended protocol; writes commit on every shard or on none.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <set>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/combiner.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/executor/fan_out_parts.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/pool/server_fate.hpp"
#include "proxy/router/text.hpp"
#include "proxy/runtime/cancel.hpp"
#include "proxy/runtime/cluster_gate.hpp"
#include "proxy/runtime/params.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

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
  int own_ready = 0;       // ReadyForQuerys of pgshard's own messages sent ahead of the request
  std::string problem;     // why the leg failed
  // Its columns' collations other than the database's (read when rows are merged).
  std::shared_ptr<const merge::ColumnCollations> collations;
};

// The simple-protocol Query messages in `bytes` (pgshard's own prelude): one ReadyForQuery each.
int count_queries(std::string_view bytes) {
  int n = 0;
  for (;;) {
    auto d = proto::decode_frame(bytes);
    if (d.status != proto::DecodeStatus::kFrame) return n;
    n += d.frame.type == proto::msg::kQuery ? 1 : 0;
    bytes.remove_prefix(d.consumed);
  }
}

// One multi-shard statement, from its checks to the client's ReadyForQuery.
class FanOut {
 public:
  // `spread`: the route's FanOut, or the plain fan-out of its Ddl's or CopyIn's shards.
  FanOut(Client& c, ReplySink& reply, const router::Route& route, const router::FanOut& spread,
         const Request& request);
  ~FanOut();  // borrowed servers go back to their relays
  FanOut(const FanOut&) = delete;
  FanOut& operator=(const FanOut&) = delete;
  awaitable<void> run();

 private:
  // Why the statement cannot run across shards here (message, hint), if it cannot.
  std::optional<std::pair<std::string, std::string>> refusal() const;
  void refuse(std::string message, std::string hint);
  void fail(const proto::ErrorInfo& e);
  // The request every shard gets; false after a refusal.
  bool build_request();
  // A server per shard (a transaction's own, or from the pool); false after answering.
  awaitable<bool> connect();
  awaitable<bool> join(int shard, Leg& leg);
  // Settings, BEGIN for an atomic write, the request.
  // The shards' collation and each leg's column collations, for a merge that orders;
  // false after failing the statement.
  awaitable<bool> read_collations(const merge::Collation*& collation);
  awaitable<void> send();
  awaitable<void> read(const merge::Collation* collation);
  CombineOptions combine_options(const merge::Collation* collation) const;
  awaitable<bool> next_reply(Leg& leg, int i, Combiner& combiner);
  void stop_leg(Leg& leg);
  // An atomic write commits on every shard or on none.
  awaitable<void> end_write();
  // The statement's error, or a partial result's warning, ahead of ReadyForQuery.
  void end_answer();
  // A read over several shards whose snapshots must not split a cross-shard commit.
  bool gated_read() const;
  // The visibility gate for the shards of the statement's live legs.
  awaitable<runtime::GateHold> enter_gate(runtime::VisibilityGate::Mode mode);
  // Waits until every shard has begun executing the request (so has taken its snapshot):
  // its first reply that comes only after that is in the leg's buffer.
  awaitable<void> await_snapshots();
  std::string names() const;

  Client& c_;
  ReplySink& reply_;
  const router::Route& route_;
  const std::string_view messages_;  // what the statement runs (Request::messages)
  const router::FanOut& spread_;
  const bool simple_;
  const char boundary_;
  const merge::MergePlan* plan_;
  bool in_txn_ = false;     // runs inside the client's transaction
  bool opens_txn_ = false;  // and opens it on every shard (BEGIN was still pgshard's)
  bool partial_ = false;    // a failed shard is left out (pgshard.partial_results)
  bool atomic_ = false;     // a write outside a transaction: COMMIT everywhere or nowhere
  std::string out_;
  std::string request_;     // the same for every shard, unless the INSERT was split
  pool::Replies expected_;  // what each shard will owe for it (pgshard's own replies hidden)
  std::optional<int64_t> limit_, offset_;
  int32_t max_rows_ = 0;  // Execute's row limit, 0: all
  std::vector<Leg> legs_;
  std::vector<std::string> missing_;  // shards left out of a partial answer
  std::optional<proto::ErrorInfo> failure_;
  bool error_sent_ = false;
};

FanOut::FanOut(Client& c, ReplySink& reply, const router::Route& route,
               const router::FanOut& spread, const Request& request)
    : c_(c),
      reply_(reply),
      route_(route),
      messages_(request.messages),
      spread_(spread),
      simple_(request.simple),
      boundary_(request.boundary),
      // A write to tables every shard holds alike answers with one shard's rows: no merge.
      plan_(spread.merge && spread.merge_blocker.empty() && !spread.replicated ? spread.merge.get()
                                                                               : nullptr) {
  // A read in a transaction that has not touched a shard yet (BEGIN is still pgshard's) at
  // READ COMMITTED sees what any new statement would: it runs on fresh servers and the
  // transaction stays open. Anything else inside a transaction waits for two-phase commit.
  auto& txn = c.transaction();
  // (With the modes of a SET TRANSACTION pgshard held since.)
  const std::string begin = txn.deferred_begin() + txn.modes();
  const bool fresh_read_committed = !c.backends().active && txn.deferred() && !route.write &&
                                    !route.ddl && !router::icontains(begin, "serializable") &&
                                    !router::icontains(begin, "repeatable") &&
                                    !router::icontains(begin, "snapshot");
  // Inside a transaction on a shard, the statement runs in that transaction on every shard
  // it needs: shards already in it lend their servers, others join (two-phase commit).
  in_txn_ = c.transaction_status() != proto::txn_status::kIdle && !fresh_read_committed;
  // BEGIN still pgshard's (REPEATABLE READ, or a write first): every shard joins now.
  opens_txn_ = in_txn_ && !c.backends().active && txn.deferred();
  partial_ = !route.write && router::partial_results(c.hints(), c.config(), c.user());
  atomic_ = route.write && !in_txn_;  // in a transaction, its COMMIT decides
}

FanOut::~FanOut() {
  // A user-defined function may have changed settings on the servers where pgshard cannot
  // see: pooled servers of its own are closed rather than handed to another client.
  const bool unknown_settings =
      !c_.session_pooled() && !c_.worker().functions_keep_settings(route_.user_functions);
  c_.holding({});
  for (auto& leg : legs_) {
    if (leg.link) {
      c_.backends().give_back(leg.link);
      // A transaction's server left mid-reply (pgshard failed the statement, the shard timed
      // out or was lost) is closed, not handed back to its relay: the relay would pass the
      // rest of the abandoned reply to the client, out of step with what it was told. The
      // transaction has failed (stop_leg); its other servers roll back at its end.
      if (leg.link->lease && leg.link->lease->broken) c_.release(leg.link);
    }
    if (leg.lease && unknown_settings) pool::report(*leg.lease, pool::ServerFailure::kSessionState);
  }
}

std::string FanOut::names() const {
  std::string names;
  for (int s : spread_.shards) names += (names.empty() ? "" : ", ") + c_.config().shards[s].name;
  return names;
}

void FanOut::refuse(std::string message, std::string hint) {
  proto::write_error(
      out_, proto::error(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint)));
  c_.fail_transaction();
  if (boundary_ == proto::msg::kFlush)
    c_.skip_to_sync();
  else
    reply_.end_request(out_, c_.transaction_status());
}

void FanOut::fail(const proto::ErrorInfo& e) {
  proto::write_error(out_, e);
  reply_.end_request(out_, c_.transaction_status());
}

std::optional<std::pair<std::string, std::string>> FanOut::refusal() const {
  const auto& txn = c_.transaction();
  const auto& active = c_.backends().active;
  if (in_txn_ && !opens_txn_ &&
      (!active || active->lease->status != proto::txn_status::kInBlock || txn.failed() ||
       txn.savepoints())) {
    const std::string why =
        txn.savepoints() ? "it has savepoints" : "it has failed or has not started on a shard";
    return std::pair{"statement needs shards " + names() + " inside this transaction (" + why +
                         "); not supported",
                     std::string("run it outside the transaction, or add the shard key")};
  }
  if (!route_.write && !spread_.concat_safe && !plan_) {
    std::string hint = "add the shard key to the WHERE clause so one shard answers";
    if (spread_.merge && !spread_.merge->hint.empty()) hint = spread_.merge->hint;
    return std::pair{spread_.merge_blocker + " across shards (" + names() + ") is not supported",
                     hint};
  }
  if (route_.write && plan_)
    return std::pair{
        "a SELECT that locks rows (FOR UPDATE/SHARE) or writes (a WITH holding INSERT, "
        "UPDATE or DELETE) with ORDER BY, LIMIT or aggregates across shards (" +
            names() + ") is not supported",
        std::string("lock or write the rows in a statement of their own without ORDER BY, "
                    "LIMIT or aggregates, then read them; or add the shard key")};
  if (std::holds_alternative<router::CopyIn>(route_.action))
    return std::pair{"COPY FROM STDIN into a table on several shards (" + names() +
                         ") is supported only as a simple Query",
                     std::string("send COPY ... FROM STDIN as a simple Query (as psql does)")};
  if (!simple_ && boundary_ != proto::msg::kSync)
    return std::pair{"a statement that needs shards " + names() +
                         " must end its extended-protocol batch with Sync",
                     std::string("send Sync after Execute")};
  return std::nullopt;
}

awaitable<void> FanOut::run() {
  if (auto why = refusal()) {
    refuse(std::move(why->first), std::move(why->second));
    co_await reply_.write(out_);
    co_return;
  }
  if (route_.ddl && !in_txn_) {
    co_await run_ddl(c_, reply_, spread_.shards, messages_);
    co_return;
  }
  // DDL inside the client's transaction runs in it on every shard, like any write there:
  // its COMMIT (two-phase across shards) or ROLLBACK decides everywhere.
  if (route_.ddl) catalog_changed(c_);
  auto& backends = c_.backends();
  if (backends.active && !c_.session_pooled() && !in_txn_) c_.release(backends.active);
  if (!build_request() || !co_await connect()) {
    co_await reply_.write(out_);
    co_return;
  }
  // A read over several shards takes its snapshots while no cross-shard commit is halfway
  // visible on them (runtime::VisibilityGate); it holds the gate until each shard has begun
  // executing it. Taken before the collation look-ups below: in a REPEATABLE READ
  // transaction their catalog query fixes the shard's snapshot.
  runtime::GateHold gate;
  if (gated_read()) gate = co_await enter_gate(runtime::VisibilityGate::Mode::kRead);
  auto& visibility = c_.worker().shared().visibility;
  if (in_txn_) {
    // Shards new to the transaction take their snapshots now (txn::Snapshots); under the
    // gate, together.
    static std::atomic<uint64_t> statements{1};
    const uint64_t together = gate.held() ? statements.fetch_add(1) : 0;
    const uint64_t from = visibility.first_unfinished();
    for (const auto& leg : legs_)
      if (!leg.failed && !(leg.link && leg.link->shard != leg.shard))  // (not on a replica)
        c_.transaction().snapshots.sending(leg.shard, from, route_.takes_snapshot, together);
  }
  // Text comparisons use the shards' collation, read once per worker.
  const merge::Collation* collation = nullptr;
  if (plan_ && !legs_.empty() && !co_await read_collations(collation)) {
    co_await reply_.write(out_);
    co_return;
  }
  co_await send();
  if (gate.held()) {
    co_await await_snapshots();
    co_await gate.release();
  }
  co_await read(collation);
  if (in_txn_) c_.transaction().snapshots.replied(visibility.last_begun());
  // (A deadlock victim's servers, rolled back below, go back to the pool after.)
  co_await c_.cancels_delivered();
  co_await end_write();
  // In a transaction block, a failure on any shard fails the whole transaction (25P02 until
  // it ends), as one PostgreSQL would — also a read that ran on fresh servers.
  if (failure_ || error_sent_) c_.fail_transaction();
  end_answer();
  reply_.end_request(out_, c_.transaction_status());
  co_await reply_.write(out_);
}

awaitable<bool> FanOut::read_collations(const merge::Collation*& collation) {
  std::string err;
  collation = co_await shard_collation(c_, *legs_[0].conn, &err);
  if (!collation) {
    fail(proto::error(sqlstate::kFeatureNotSupported, err));
    co_return false;
  }
  for (auto& leg : legs_) {
    if (leg.failed) continue;
    leg.collations = co_await column_collations(c_, leg.shard, *leg.conn, *collation);
    if (!leg.collations) {
      fail(proto::error(sqlstate::kConnectionFailure,
                        "could not read the column collations of shard " +
                            c_.config().shards[static_cast<std::size_t>(leg.shard)].name));
      co_return false;
    }
  }
  co_return true;
}

void FanOut::end_answer() {
  if (failure_) {
    proto::write_error(out_, *failure_);
  } else if (!missing_.empty()) {
    std::string list;
    for (const auto& m : missing_) list += (list.empty() ? "" : ", ") + m;
    auto warning = proto::error(sqlstate::kWarning, "partial result: shard(s) " + list +
                                                        " did not answer; their rows are missing");
    warning.severity = "WARNING";
    // The warning goes before the final ReadyForQuery (notices may come at any time).
    proto::write_notice(out_, warning);
  }
}

bool FanOut::build_request() {
  if (!simple_) {
    if (build_extended(c_, messages_, plan_, {}, request_, expected_, limit_, offset_, max_rows_,
                       out_, names()))
      return true;
    reply_.end_request(out_, c_.transaction_status());
    return false;
  }
  if (plan_ && !plan_->shard_sql.empty())
    proto::Query{plan_->shard_sql}.write(request_);
  else
    request_ = messages_;
  expected_.expect_batch(request_, pool::Replies::Owner::kClient);
  if (plan_) {
    limit_ = plan_->limit.value;
    offset_ = plan_->offset.value;
  }
  return true;
}

awaitable<bool> FanOut::connect() {
  auto jobs = spread_.shards;
  if (!spread_.per_shard_sql.empty()) {
    jobs.clear();
    for (const auto& [shard, sql] : spread_.per_shard_sql) jobs.push_back(shard);
  }
  if (opens_txn_) c_.transaction().take_deferred();  // every shard opens it as the client did
  for (int shard : jobs) {
    Leg leg;
    leg.shard = shard;
    if (in_txn_) {
      if (!co_await join(shard, leg)) co_return false;
      legs_.push_back(std::move(leg));
      continue;
    }
    // A read may run on replicas, when reads of several shards need not see cross-shard
    // commits whole: replicas replay each shard's part on their own (atomic_visibility off).
    int target = shard;
    if (route_.read_only && !c_.config().atomic_visibility)
      target = co_await c_.read_target(route_, shard, boundary_);
    auto got = co_await c_.wait_for_server(target);
    if (auto* err = std::get_if<proto::ErrorInfo>(&got)) {
      // Only a shard without a server is left out of partial results: a cancelled or
      // terminated wait ends the statement.
      if (!partial_ || err->code != sqlstate::kSqlclientUnableToEstablish) {
        fail(*err);
        co_return false;
      }
      missing_.push_back(c_.config().shards[static_cast<std::size_t>(shard)].name);
      continue;
    }
    leg.lease = std::move(std::get<pool::Lease>(got));
    leg.conn = &*leg.lease;
    legs_.push_back(std::move(leg));
    // What it holds while it waits for the next shard's server, and later its row locks:
    // the deadlock detector sees the statement (a cycle through it is broken as any other).
    std::vector<pool::ServerConn*> held;
    for (const auto& l : legs_) held.push_back(l.conn);
    c_.holding(std::move(held));
  }
  // One participant takes the client's next statements; the others wait for COMMIT.
  if (opens_txn_) c_.backends().promote();
  co_return true;
}

awaitable<bool> FanOut::join(int shard, Leg& leg) {
  auto& backends = c_.backends();
  std::shared_ptr<pool::Link> link;
  // The host of the transaction's part on the shard: where it began, or (a READ ONLY
  // transaction new to the shard) a replica.
  const int target = co_await c_.read_target(route_, shard, boundary_);
  if (backends.active && backends.active->shard == target) {
    link = backends.active;
  } else if (auto participant = backends.participant(target)) {
    link = std::move(participant);
  } else {
    // A new participant, opened the way the client opened the transaction.
    auto saved = backends.active;
    backends.active.reset();
    const bool attached = co_await c_.attach(target);  // answers the client on failure
    link = backends.active;
    backends.active = saved;
    if (!attached) co_return false;
    backends.add_participant(link);
    c_.transaction().joined();
    if (!link->prelude.empty()) {
      std::string prelude = std::move(link->prelude);
      link->prelude.clear();
      co_await c_.write_server(link, prelude);
    }
    // (The client's own spelling is replayed: START TRANSACTION answers with its own tag.)
    const bool begun = co_await c_.run_ours(link, c_.transaction().joining_begin());
    const auto& tag = link->lease->replies.tag;
    if (!begun || (tag != "BEGIN" && tag != "START TRANSACTION")) {
      c_.transaction().fail();
      fail(proto::error(sqlstate::kConnectionFailure,
                        "could not open the transaction on shard " +
                            c_.config().shards[static_cast<std::size_t>(shard)].name));
      co_return false;
    }
  }
  if (!co_await backends.borrow(link)) {
    // The transaction's server on this shard is gone (lost, or its client left).
    c_.transaction().fail();
    fail(proto::error(sqlstate::kConnectionFailure,
                      "lost the connection to shard " +
                          c_.config().shards[static_cast<std::size_t>(shard)].name));
    co_return false;
  }
  leg.link = link;
  leg.conn = &*link->lease;
  co_return true;
}

awaitable<void> FanOut::send() {
  for (std::size_t i = 0; i < legs_.size(); ++i) {
    auto& leg = legs_[i];
    auto* lease = leg.conn;
    auto& replies = lease->replies;
    std::string batch = c_.sync_prelude(*lease);
    batch += c_.catch_up_settings(*lease, in_txn_);
    leg.own_ready = count_queries(batch);
    if (atomic_) {
      proto::Query{"BEGIN"}.write(batch);
      replies.expect_ready(pool::Replies::Owner::kOwn);
    }
    if (!spread_.per_shard_sql.empty() && simple_) {
      proto::Query{spread_.per_shard_sql[i].second}.write(batch);
      replies.expect_ready(pool::Replies::Owner::kClient);
    } else if (!spread_.per_shard_sql.empty()) {
      // Each shard's part of a split INSERT, in the client's extended batch.
      std::string mine;
      pool::Replies its;
      if (!build_extended(c_, messages_, nullptr, spread_.per_shard_sql[i].second, mine, its,
                          limit_, offset_, max_rows_, out_, names()))
        reply_.end_request(out_, c_.transaction_status());
      replies.append(its);
      batch += mine;
    } else {
      replies.append(expected_);
      batch += request_;
    }
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    lease->count_sent(n);
    if (ec) {
      leg.failed = true;
      leg.problem = "connection lost";
    }
  }
}

CombineOptions FanOut::combine_options(const merge::Collation* collation) const {
  CombineOptions options;
  options.plan = plan_;
  options.collation = collation;
  options.limit = limit_;
  options.offset = offset_;
  options.max_rows = max_rows_;
  options.replicated = spread_.replicated;
  options.partial = partial_;
  options.copy_header = spread_.copy_out_header;
  for (const auto& leg : legs_) {
    options.shard_names.push_back(c_.config().shards[static_cast<std::size_t>(leg.shard)].name);
    options.column_collations.push_back(leg.collations.get());
  }
  for (int shard : spread_.insert_row_shards) {
    auto it =
        std::find_if(legs_.begin(), legs_.end(), [&](const Leg& l) { return l.shard == shard; });
    if (it == legs_.end()) {
      options.row_legs.clear();
      break;
    }
    options.row_legs.push_back(static_cast<int>(it - legs_.begin()));
  }
  if (!options.row_legs.empty()) {
    options.row_keys = spread_.insert_row_keys;
    options.key_column = spread_.insert_key_column;
    options.key_type = spread_.insert_key_type;
  }
  return options;
}

awaitable<void> FanOut::read(const merge::Collation* collation) {
  // A CancelRequest from the client reaches every shard of the statement.
  std::vector<pool::ServerConn*> running;
  for (auto& leg : legs_) running.push_back(leg.conn);
  c_.running_on(std::move(running));
  // A client that leaves stops the statement on every shard (cancelled, servers discarded)
  // instead of having pgshard read every shard to the end for nobody; so does a shard that
  // takes longer than timeouts.shard_statement.
  auto stop_all = [this](bool client_left) {
    for (auto& leg : legs_)
      if (!leg.done && !leg.failed) {
        leg.abandoned = leg.abandoned || client_left;
        leg.timed_out = true;  // cancelled on its shard (stop_leg)
        error_code ignored;
        leg.conn->socket().cancel(ignored);
      }
  };
  auto watch = std::make_shared<ClientWatch>(c_.worker().executor());
  asio::co_spawn(c_.worker().executor(), c_.watch_client(watch, [stop_all] { stop_all(true); }),
                 asio::detached);
  asio::steady_timer deadline(co_await asio::this_coro::executor);
  if (c_.config().timeouts.shard_statement.count() > 0) {
    deadline.expires_after(c_.config().timeouts.shard_statement);
    deadline.async_wait([stop_all](error_code ec) {
      if (!ec) stop_all(false);  // (cancelled: the statement finished in time)
    });
  }
  Combiner combiner(static_cast<int>(legs_.size()), combine_options(collation));
  combiner.out() = std::move(out_);
  out_.clear();
  for (std::size_t i = 0; i < legs_.size(); ++i)
    if (legs_[i].failed) combiner.fail(static_cast<int>(i), legs_[i].problem, false);
  for (int i; (i = combiner.wants()) >= 0;) {
    auto& leg = legs_[static_cast<std::size_t>(i)];
    if (!co_await next_reply(leg, i, combiner)) {
      leg.failed = true;
      stop_leg(leg);
      combiner.fail(
          i, leg.timed_out ? "did not answer within timeouts.shard_statement" : "connection lost",
          leg.timed_out);
      continue;
    }
    if (combiner.out().size() > kClientFlush && !c_.gone()) {
      co_await reply_.write(combiner.out());
      combiner.out().clear();
    }
  }
  deadline.cancel();
  co_await c_.stop_watch(*watch);
  c_.running_on({});
  for (std::size_t i = 0; i < legs_.size(); ++i)
    if (combiner.finished(static_cast<int>(i))) legs_[i].done = true;
  out_ = std::move(combiner.out());
  failure_ = combiner.failure();
  error_sent_ = combiner.error_sent();
  missing_.insert(missing_.end(), combiner.missing().begin(), combiner.missing().end());
  // A statement pgshard failed itself: shards still mid-reply are not worth waiting for.
  for (auto& leg : legs_)
    if (!leg.done && (failure_ || leg.timed_out)) stop_leg(leg);
}

awaitable<bool> FanOut::next_reply(Leg& leg, int i, Combiner& combiner) {
  // Hands the combiner the next reply of the leg that concerns it: replies to pgshard's own
  // messages are hidden by the server's reply queue (except a RowDescription the merge
  // needs). False when the shard is gone.
  auto* conn = leg.conn;
  for (;;) {
    auto d = proto::decode_frame(conn->rbuf.view(), c_.config().listen.max_message_size);
    if (d.status == proto::DecodeStatus::kError) co_return false;
    if (d.status == proto::DecodeStatus::kNeedMore) {
      // The client left while another shard was being read: this socket had no read to
      // cancel then, so do not start one now.
      if (leg.abandoned) co_return false;
      if (std::get<0>(co_await conn->read_some())) co_return false;
      continue;
    }
    const auto& f = d.frame;
    if (f.type == proto::msg::kReadyForQuery) conn->status = f.body.empty() ? 'I' : f.body[0];
    const bool ours = conn->replies.own_front();
    const bool hidden = conn->replies.classify(f, &conn->prepared) == pool::Replies::Verdict::kHide;
    const bool pass = !hidden || (!ours && f.type == proto::msg::kRowDescription);
    std::optional<std::string> instead;
    if (pass && !ours && f.type == proto::msg::kErrorResponse) instead = c_.replace_error(f.body);
    if (instead)
      combiner.add(i, proto::Frame{f.type, std::string_view(*instead).substr(5)}, *instead, hidden);
    else if (pass)
      combiner.add(i, f, std::string_view(conn->rbuf.data(), d.consumed), hidden);
    conn->rbuf.consume(d.consumed);
    if (pass) {
      if (combiner.finished(i)) leg.done = true;
      co_return true;
    }
  }
}

void FanOut::stop_leg(Leg& leg) {
  // A shard left mid-reply is discarded; one that timed out (or whose client left) is
  // cancelled so it stops working for nobody.
  leg.done = true;
  pool::report(*leg.conn, pool::ServerFailure::kAbandoned);
  if (leg.link) c_.fail_transaction();  // the transaction lost this server's part
  if (leg.timed_out && leg.conn->pid()) {
    // (Where the server is: a replica, or the host the shard's primary moved to.)
    const auto& at = leg.conn->target();
    runtime::send_server_cancel(c_.worker().executor(), at.host, at.port, leg.conn->pid(),
                                leg.conn->secret());
  }
}

bool FanOut::gated_read() const {
  // Locking reads (FOR UPDATE) count as writes: they may wait on a prepared transaction's
  // row locks, whose COMMIT PREPARED would wait for this read.
  int live = 0;
  for (const auto& leg : legs_) live += leg.failed ? 0 : 1;
  return c_.config().atomic_visibility && !route_.write && !route_.ddl && !spread_.replicated &&
         live > 1;
}

awaitable<runtime::GateHold> FanOut::enter_gate(runtime::VisibilityGate::Mode mode) {
  std::vector<int> shards;
  for (const auto& leg : legs_)
    if (!leg.failed) shards.push_back(leg.shard);
  co_return co_await c_.worker()
      .visibility_entry(c_.config(), c_.prefix())
      .enter(mode, std::move(shards));
}

awaitable<void> FanOut::await_snapshots() {
  // Replies a server sends only once the statement executes, after its snapshot is taken:
  // in the simple protocol the result's RowDescription and anything after it; in the
  // extended protocol BindComplete (the portal's snapshot is taken at Bind) and after it,
  // not ParseComplete or a statement's Describe. An error or ReadyForQuery ends the wait too.
  // PostgreSQL buffers its first replies until it has 8 kB or the statement ends, so a slow
  // statement shows nothing for a while: the wait is bounded (kSnapshotWait, or
  // timeouts.shard_statement when shorter), then read() goes on with its own deadline and
  // client watch, and the statement is counted as not covered (VisibilityGate::forced).
  const std::string_view after = simple_ ? "TDCEIZHGd" : "2DCEIsZHGd";
  // A CancelRequest from the client reaches every shard already (as in read()).
  std::vector<pool::ServerConn*> running;
  for (auto& leg : legs_) running.push_back(leg.conn);
  c_.running_on(std::move(running));
  auto alive = std::make_shared<bool>(true);
  bool expired = false;
  asio::steady_timer limit(co_await asio::this_coro::executor);
  auto bound = runtime::VisibilityGate::kSnapshotWait;
  if (const auto st = c_.config().timeouts.shard_statement; st.count() > 0 && st < bound)
    bound = std::chrono::duration_cast<std::chrono::milliseconds>(st);
  limit.expires_after(bound);
  limit.async_wait([this, alive, &expired](error_code ec) {
    if (ec || !*alive) return;  // (finished in time; `expired` may be gone)
    expired = true;
    for (auto& leg : legs_) {
      error_code ignored;
      if (!leg.failed) leg.conn->socket().cancel(ignored);
    }
  });
  for (auto& leg : legs_) {
    if (leg.failed) continue;
    for (;;) {
      bool started = false, bad = false;
      int skip = leg.own_ready;
      std::string_view rest = leg.conn->rbuf.view();
      for (;;) {
        auto d = proto::decode_frame(rest, c_.config().listen.max_message_size);
        if (d.status == proto::DecodeStatus::kError) bad = true;
        if (d.status != proto::DecodeStatus::kFrame) break;
        const char type = d.frame.type;
        rest.remove_prefix(d.consumed);
        if (skip > 0) {
          if (type == proto::msg::kReadyForQuery) --skip;
          continue;
        }
        if (after.find(type) != std::string_view::npos) {
          started = true;
          break;
        }
      }
      // (A broken stream or a lost server is found and reported by read().)
      if (started || bad || expired || std::get<0>(co_await leg.conn->read_some())) break;
    }
    if (expired) break;
  }
  *alive = false;
  limit.cancel();
  if (expired) {
    ++c_.worker().shared().visibility.forced;
    spdlog::debug(
        "{}: a shard had not begun the statement within {} ms; the visibility gate "
        "is released without knowing its snapshot",
        c_.prefix(), bound.count());
  }
}

awaitable<void> FanOut::end_write() {
  if (!atomic_) co_return;
  const bool ok = !failure_ && !error_sent_ && missing_.empty();
  // Its COMMITs on several shards are one commit to readers (runtime::VisibilityGate).
  runtime::GateHold gate;
  if (ok && legs_.size() > 1 && c_.config().atomic_visibility)
    gate = co_await enter_gate(runtime::VisibilityGate::Mode::kCommit);
  const char* end_verb = ok ? "COMMIT" : "ROLLBACK";
  std::vector<std::string> committed;
  for (auto& leg : legs_) {
    if (leg.conn->broken || leg.failed) continue;
    const bool done = co_await leg.conn->run_own(end_verb, c_.config().listen.max_message_size) &&
                      leg.conn->replies.tag == end_verb;
    if (!done) pool::report(*leg.conn, pool::ServerFailure::kInTransaction);
    const auto& name = c_.config().shards[static_cast<std::size_t>(leg.shard)].name;
    if (ok && done) committed.push_back(name);
    if (ok && !done && !failure_) {
      std::string note;
      for (auto& c : committed) note += (note.empty() ? "" : ", ") + c;
      failure_ = proto::error(
          sqlstate::kConnectionFailure,
          "COMMIT failed on shard " + name +
              (note.empty() ? std::string() : " after shard(s) " + note + " committed"),
          {}, "the shards may now disagree; check and repair");
    }
  }
  co_await gate.release();
}

// A route's FanOut; a Ddl (run in the client's transaction) or CopyIn (refused unless a
// simple Query) as the plain fan-out of its shards, built in `plain`.
const router::FanOut& spread_of(const router::Route& route, router::FanOut& plain) {
  if (const auto* f = std::get_if<router::FanOut>(&route.action)) return *f;
  if (const auto* d = std::get_if<router::Ddl>(&route.action)) {
    plain.shards = d->shards;
    plain.replicated = d->replicated;
  } else if (const auto* copy = std::get_if<router::CopyIn>(&route.action)) {
    plain.shards = copy->shards;
  }
  return plain;
}

}  // namespace

awaitable<void> fan_out(Client& c, ReplySink& out, const router::Route& route,
                        const Request& request) {
  if (!co_await c.drain()) co_return;
  Waiting waiting(c, "shards (fan-out)");
  router::FanOut plain;
  FanOut statement(c, out, route, spread_of(route, plain), request);
  co_await statement.run();
}

}  // namespace pgshard::executor
