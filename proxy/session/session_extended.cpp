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

std::string Session::filter_out(std::string_view bytes) {
  auto& f = *out_filter_;
  std::string kept;
  while (!bytes.empty()) {
    if (f.remaining == 0 && f.have < 5) {
      f.header[f.have++] = bytes.front();
      bytes.remove_prefix(1);
      if (f.have < 5) continue;
      const auto* h = reinterpret_cast<const unsigned char*>(f.header);
      const uint32_t length =
          (uint32_t{h[1]} << 24) | (uint32_t{h[2]} << 16) | (uint32_t{h[3]} << 8) | uint32_t{h[4]};
      f.remaining = length >= 4 ? length - 4 : 0;
      f.dropping = f.drop == "*" || f.drop.find(f.header[0]) != std::string::npos;
      if (!f.dropping) kept.append(f.header, 5);
      if (f.remaining == 0) f.have = 0;
      continue;
    }
    const auto n = std::min<std::size_t>(f.remaining, bytes.size());
    if (!f.dropping) kept.append(bytes.substr(0, n));
    bytes.remove_prefix(n);
    f.remaining -= static_cast<uint32_t>(n);
    if (f.remaining == 0) f.have = 0;
  }
  return kept;
}

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
  conn.broken = true;
  open_extended_ = false;
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
    out += proto::ready_for_query(transaction_status());
  else
    discard_until_sync_ = true;
  fail_transaction();
  co_await write_client(out);
}

awaitable<bool> Session::run_split_pipeline() {
  // Its statements, each with the messages before it (Parse, Bind, Describe...); messages
  // after the last Execute go with it. A Sync ends the pipeline; a Flush leaves it open for
  // the client's next messages (psycopg 3 reads results as they come).
  std::vector<std::string> units;
  std::string unit;
  bool synced = false;
  for (const auto m : proto::frames(pending_)) {
    if (m.frame.type == proto::msg::kQuery) co_return false;
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
  {
    Statements scratch = statements_;
    std::optional<int> last;
    for (auto& u : units) {
      bool simple = false;
      const auto r =
          session::route_batch(u, scratch, hints_, config_, routing_context(), false, &simple);
      // Transaction control inside (JDBC's BEGIN, a COMMIT) would not mean the same.
      if (r.txn != router::TxnControl::kNone) co_return false;
      const auto* one = std::get_if<router::Forward>(&r.action);
      if (one && last == one->shard)
        groups.back() += u;
      else
        groups.push_back(std::move(u));
      last = one ? std::optional<int>(one->shard) : std::nullopt;
    }
  }
  spdlog::debug(
      "{}: pipeline part of {} statements in {} groups over several shards: one "
      "transaction",
      prefix(), units.size(), groups.size());
  pending_.clear();
  // A part after the pipeline failed is skipped, as PostgreSQL skips to the Sync.
  bool skipping = pipeline_txn_ && transaction_status() == proto::txn_status::kFailed;
  std::string q;
  if (!pipeline_txn_ && transaction_status() == proto::txn_status::kIdle) {
    proto::Query{"BEGIN"}.write(q);
    co_await run_filtered(std::move(q), proto::msg::kQuery, "*");
    pipeline_txn_ = true;
  }
  std::string sync;
  proto::write_empty(sync, proto::msg::kSync);
  for (auto& u : groups) {
    if (client_gone_ || skipping) break;
    co_await run_filtered(u + sync, proto::msg::kSync, "Z");
    // After an error PostgreSQL skips the rest of the pipeline up to its Sync.
    skipping = transaction_status() == proto::txn_status::kFailed;
  }
  if (!synced || client_gone_) co_return true;
  if (std::exchange(pipeline_txn_, false)) {
    // The Sync ends the implicit transaction: committed, or rolled back after an error. A
    // failed COMMIT's error reaches the client.
    q.clear();
    proto::Query{transaction_status() == proto::txn_status::kFailed ? "ROLLBACK" : "COMMIT"}.write(
        q);
    co_await run_filtered(std::move(q), proto::msg::kQuery, "CZ");
  }
  co_await write_client(proto::ready_for_query(transaction_status()));
  co_return true;
}

awaitable<void> Session::run_pipeline_split(const Request& req, const router::Route& route) {
  // Statements of one pipeline for several shards run one by one in one transaction; a
  // pipeline that cannot (a Query or transaction control in it, or pgshard's own request
  // being run) is refused.
  bool ran = false;  // (no co_await in the condition: GCC 12 miscompiles it here)
  if (!out_filter_) ran = co_await run_split_pipeline();
  if (!ran) co_await answer_locally(route, req);
}

awaitable<void> Session::run_filtered(std::string request, char boundary, std::string drop) {
  pending_ = std::move(request);
  out_filter_.emplace();
  out_filter_->drop = std::move(drop);
  co_await handle_request(boundary);
  co_await drain();
  out_filter_.reset();
}

awaitable<bool> Session::skip_failed_batch(char boundary) {
  // After pgshard itself failed an extended request, skip to Sync as PostgreSQL does.
  if (boundary == proto::msg::kSync) {
    discard_until_sync_ = false;
    pending_.clear();
    co_await write_client(proto::ready_for_query(transaction_status()));
  } else if (boundary != proto::msg::kFlush) {
    discard_until_sync_ = false;  // a simple Query ends the skipping
  } else {
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
        out += proto::ready_for_query(transaction_status());
        break;
      default:
        break;
    }
  }
}

}  // namespace pgshard::session
