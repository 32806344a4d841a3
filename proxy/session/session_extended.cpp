// Extended-protocol batches: a pipeline over several shards run as one transaction (the
// SplitPipeline action), a batch that moves shards mid-way, skipping to Sync, and pgshard's
// own replies to a batch.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

bool Session::continues_elsewhere() {
  // Only a Bind says where a statement goes; Execute, Describe, Close follow the batch.
  bool binds = false;
  for (const auto m : proto::frames(pending_)) binds = binds || m.frame.type == proto::msg::kBind;
  if (!binds) return false;
  bool simple = false;
  const router::Route r = route_batch(&simple);
  if (std::holds_alternative<router::Answer>(r.action)) return false;
  const auto* forward = std::get_if<router::Forward>(&r.action);
  return !forward || forward->shard != backends_.active->shard;
}

awaitable<void> Session::abandon_open_batch(char boundary) {
  // The open batch's statements so far ran on one shard, in that server's implicit
  // transaction; this part needs another. Rather than run it on the wrong shard (or commit
  // the first part alone), the pipeline fails as PostgreSQL fails one: the client gets the
  // replies of what ran, then an error; the server is closed (its part rolls back) and the
  // rest up to the Sync is skipped.
  auto link = backends_.active;
  auto& conn = *link->lease;
  // The server is closed, never pooled: its implicit transaction holds the first part until
  // a Sync that will not come (with the batch no longer open, its relay would otherwise
  // hand it back as idle once the replies below are in, and the next client's statements
  // would commit the first part; found from outside).
  pool::report(conn, pool::ServerFailure::kAbandoned);
  phase_.batch_closed();
  // A Parse of an empty statement, hidden: once its reply is in, so is every earlier one.
  std::string probe;
  proto::Parse{"", "", {}}.write(probe);
  proto::write_empty(probe, proto::msg::kFlush);
  conn.replies.expect_parse(pool::Replies::Owner::kClient, pool::Replies::Action::kHide);
  if (co_await write_server(link, probe)) {
    // A server skipping to a Sync after an error never answers it: the wait is bounded
    // (and nobody reads the client meanwhile).
    Waiting waiting(*this, "server replies (pipeline failed)");
    asio::steady_timer timer(worker_.executor());
    // (The relay frees the server once the link is done: `conn` only while it is not.)
    for (int i = 0; i < 100 && !client_gone_ && !link->done && !conn.replies.empty(); ++i) {
      timer.expires_after(std::chrono::milliseconds(10));
      co_await timer.async_wait(use_nothrow);
    }
  }
  release(link);
  spdlog::info("{}: pipeline moved to another shard mid-batch: failed", prefix());
  std::string out;
  proto::write_error(
      out, proto::error(sqlstate::kFeatureNotSupported,
                        "a pipeline sent in parts (Flush) whose later statements "
                        "go to another shard than its first ones",
                        {}, "send the whole pipeline before its Sync, or Sync between shards"));
  pending_.clear();
  if (boundary == proto::msg::kSync)
    end_request(out, transaction_status());
  else
    phase_.skip_to_sync();
  fail_transaction();
  co_await write_client(out);
}

std::optional<std::vector<std::string>> Session::pipeline_groups(bool& synced) {
  // Its statements, each with the messages before it (Parse, Bind, Describe...); messages
  // after the last Execute go with it. A Sync ends the pipeline; a Flush leaves it open for
  // the client's next messages (psycopg 3 reads results as they come).
  std::vector<std::string> units;
  std::string unit;
  synced = false;
  for (const auto m : proto::frames(pending_)) {
    if (m.frame.type == proto::msg::kQuery) return std::nullopt;
    if (m.frame.type == proto::msg::kSync) {
      synced = true;
      break;
    }
    if (m.frame.type == proto::msg::kFlush) continue;
    unit.append(m.raw);
    if (m.frame.type == proto::msg::kExecute) {
      units.push_back(std::move(unit));
      unit.clear();
    }
  }
  if (!unit.empty()) {
    if (units.empty())
      units.push_back(std::move(unit));
    else
      units.back() += unit;
  }
  // Consecutive statements bound for the same one shard go together (one round trip; an
  // error there skips the rest of them as PostgreSQL would).
  std::vector<std::string> groups;
  Statements scratch = statements_;
  std::optional<int> last;
  for (auto& u : units) {
    bool simple = false;
    const auto r =
        session::route_batch(u, scratch, hints_, config_, routing_context(), TxnAt::kNone, &simple);
    // Transaction control inside (JDBC's BEGIN, a COMMIT) would not mean the same.
    if (r.txn != router::TxnControl::kNone && r.txn != router::TxnControl::kSetTransaction)
      return std::nullopt;
    const auto* one = std::get_if<router::Forward>(&r.action);
    if (one && last == one->shard)
      groups.back() += u;
    else
      groups.push_back(std::move(u));
    last = one ? std::optional<int>(one->shard) : std::nullopt;
  }
  spdlog::debug(
      "{}: pipeline part of {} statements in {} groups over several shards: one "
      "transaction",
      prefix(), units.size(), groups.size());
  return groups;
}

awaitable<bool> Session::run_split_pipeline() {
  bool synced = false;
  auto split = pipeline_groups(synced);
  if (!split) co_return false;
  auto& groups = *split;
  pending_.clear();
  // A part after the pipeline failed is skipped, as PostgreSQL skips to the Sync.
  bool skipping = phase_.split_pipeline() && transaction_status() == proto::txn_status::kFailed;
  // A loss the client is told, sent with the Sync's ReadyForQuery (psycopg 3 that reads the
  // error alone leaves its pipeline with the ReadyForQuery unread: "cannot exit pipeline
  // mode while busy").
  std::string told;
  if (skipping) note_pipeline_loss(told);
  std::string q;
  if (!phase_.split_pipeline() && transaction_status() == proto::txn_status::kIdle) {
    proto::Query{"BEGIN"}.write(q);
    co_await run_pipeline_step(PipelineStep::kControl, std::move(q), proto::msg::kQuery);
    phase_.pipeline_begun();
  }
  std::string sync;
  proto::write_empty(sync, proto::msg::kSync);
  for (auto& u : groups) {
    if (client_gone_ || skipping) break;
    co_await run_pipeline_step(PipelineStep::kPart, u + sync, proto::msg::kSync);
    // After an error PostgreSQL skips the rest of the pipeline up to its Sync.
    skipping = transaction_status() == proto::txn_status::kFailed;
    if (skipping) note_pipeline_loss(told);
  }
  if (!synced || client_gone_) {
    if (!told.empty() && !client_gone_) co_await write_client(told);
    co_return true;
  }
  if (phase_.split_pipeline()) {
    phase_.pipeline_ended();
    // The Sync ends the implicit transaction: committed, or rolled back after an error. A
    // failed COMMIT's error reaches the client.
    q.clear();
    proto::Query{transaction_status() == proto::txn_status::kFailed ? "ROLLBACK" : "COMMIT"}.write(
        q);
    co_await run_pipeline_step(PipelineStep::kControl, std::move(q), proto::msg::kQuery);
  }
  told += proto::ready_for_query(transaction_status());
  co_await write_client(told);
  co_return true;
}

awaitable<void> Session::run_pipeline_split(const Request& req, const router::Route& route) {
  // Statements of one pipeline for several shards run one by one in one transaction; a
  // pipeline that cannot (a Query or transaction control in it, or pgshard's own request
  // being run) is refused.
  bool ran = false;  // (no co_await in the condition: GCC 12 miscompiles it here)
  if (pipeline_step_ == PipelineStep::kNone) ran = co_await run_split_pipeline();
  if (!ran) co_await answer_locally(route, req);
}

awaitable<void> Session::run_pipeline_step(PipelineStep step, std::string request, char boundary) {
  pending_ = std::move(request);
  pipeline_step_ = step;
  co_await handle_request(boundary);
  // (What the relay still brings of it was marked in the server's reply queue.)
  co_await drain();
  pipeline_step_ = PipelineStep::kNone;
}

void Session::note_pipeline_loss(std::string& out) {
  if (txn_.loss_unreported()) proto::write_error(out, txn_.refusal());
}

void Session::end_request(std::string& out, char status) {
  if (pipeline_step_ == PipelineStep::kNone) out += proto::ready_for_query(status);
}

awaitable<bool> Session::skip_failed_batch(char boundary) {
  // After pgshard itself failed an extended request, skip to Sync as PostgreSQL does. No
  // server has anything of the failed batch open (pgshard closes one it abandons), so
  // pgshard answers the Sync, with the status its failure left, even when a server is
  // attached (in a transaction: before, the messages were sent to it and run, and the
  // skipping went on until the server was released, when it skipped a later request).
  phase_.skipped(boundary);  // a simple Query ends the skipping, and runs
  if (boundary == proto::msg::kSync) {
    pending_.clear();
    std::string out;
    end_request(out, transaction_status());
    if (!out.empty()) co_await write_client(out);
  } else if (boundary == proto::msg::kFlush) {
    pending_.clear();
  }
  co_return pending_.empty();
}

void Session::answer_extended(std::string_view answer, std::string& out) {
  // pgshard answers an extended-protocol batch itself (EXPLAIN (ROUTE)): every message
  // gets the reply PostgreSQL would send. `answer` is RowDescription, rows, CommandComplete.
  auto first = proto::decode_frame(answer);
  std::string_view desc =
      first.status == proto::DecodeStatus::kFrame && first.frame.type == proto::msg::kRowDescription
          ? answer.substr(0, first.consumed)
          : std::string_view();
  std::string_view rows = answer.substr(desc.size());
  std::vector<int32_t> param_types;
  for (const auto m : proto::frames(pending_)) {
    const auto& f = m.frame;
    switch (f.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body)) param_types = p->param_types;
        proto::write_empty(out, proto::msg::kParseComplete);
        break;
      case proto::msg::kBind:
        proto::write_empty(out, proto::msg::kBindComplete);
        break;
      case proto::msg::kDescribe:
        if (auto dsc = proto::Describe::parse(f.body); dsc && dsc->kind == 'S')
          proto::ParameterDescription{param_types}.write(out);
        if (desc.empty())
          proto::write_empty(out, proto::msg::kNoData);
        else
          out.append(desc);
        break;
      case proto::msg::kExecute:
        out.append(rows);
        break;
      case proto::msg::kClose:
        proto::write_empty(out, proto::msg::kCloseComplete);
        break;
      case proto::msg::kSync:
        end_request(out, transaction_status());
        break;
      default:
        break;
    }
  }
}

}  // namespace pgshard::session
