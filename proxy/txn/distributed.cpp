// Transactions that use several shards: each shard's server holds its part (the client's
// backends_.active), and COMMIT runs two-phase commit — PREPARE TRANSACTION everywhere, the
// decision fsynced to the log, COMMIT PREPARED everywhere. A failure before the decision rolls
// every participant back; after it, recovery (recovery.cpp) finishes the commit. Session members.
#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/server/server.hpp"
#include "proxy/session/session.hpp"
#include "proxy/txn/decision_log.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<bool> Session::run_ours(const std::shared_ptr<Link>& link, const std::string& sql) {
  if (link->done || !link->lease || link->lease->broken) co_return false;
  Waiting waiting(*this, "pgshard's own statement (run_ours)");
  auto& replies = link->lease->replies;
  std::string q;
  proto::Query{sql}.write(q);
  replies.expect_ready(pool::Replies::Owner::kOwn);
  if (!co_await write_server(link, q)) co_return false;
  while (!link->done && link->lease && !link->lease->broken && replies.own_owed() > 0)
    co_await drained_.wait();
  co_return !link->done && link->lease && replies.own_owed() == 0;
}

awaitable<void> Session::finish_distributed(bool commit, bool simple) {
  if (!co_await drain()) co_return;
  // Nothing is handed back while pgshard finishes the transaction.
  std::vector<std::shared_ptr<Link>> parts = backends_.take_participants();
  auto& shared = worker_.shared();
  std::string tag = commit ? "COMMIT" : "ROLLBACK";
  std::optional<proto::ErrorInfo> error;
  std::optional<proto::ErrorInfo> warning;
  bool aborted = txn_.failed();
  const std::string lost = txn_.lost();
  txn_.end();
  for (auto& p : parts)
    if (!p->lease || p->lease->broken || p->lease->status == 'E') aborted = true;
  auto rollback_all = [&]() -> awaitable<void> {
    for (auto& p : parts)
      if (p->lease && !p->lease->broken && p->lease->status != 'I')
        co_await run_ours(p, "ROLLBACK");
  };
  if (commit && !lost.empty()) {
    // The work of this transaction died with a server: COMMIT must not look like success.
    co_await rollback_all();
    error = proto::error(sqlstate::kConnectionFailure, lost);
  } else if (!commit || aborted) {
    // COMMIT of an aborted transaction rolls back, as PostgreSQL answers it.
    co_await rollback_all();
    tag = "ROLLBACK";
  } else if (!config_.two_phase_commit) {
    // Best effort: commit one shard after the other; report a shard that failed late.
    std::vector<std::string> committed, failed;
    for (auto& p : parts) {
      const auto& name = config_.shards[static_cast<std::size_t>(p->shard)].name;
      bool ok = co_await run_ours(p, "COMMIT") && p->lease->replies.tag == "COMMIT";
      (ok ? committed : failed).push_back(name);
      if (!ok && committed.empty()) {
        co_await rollback_all();
        error = proto::error(sqlstate::kConnectionFailure, "COMMIT failed on shard " + name +
                                                               "; the transaction was rolled back");
        break;
      }
    }
    if (!error && !failed.empty()) {
      std::string f, c;
      for (auto& n : failed) f += (f.empty() ? "" : ", ") + n;
      for (auto& n : committed) c += (c.empty() ? "" : ", ") + n;
      warning =
          proto::error(sqlstate::kWarning, "COMMIT failed on shard(s) " + f + " after shard(s) " +
                                               c + " committed (two_phase_commit is off)");
      warning->severity = "WARNING";
    }
  } else {
    // Unique across restarts (generation) and instances (prefix); registered as live so
    // the periodic recovery pass never finishes it under this session's feet.
    const std::string gid = shared.decisions.prefix() +
                            std::to_string(shared.decisions.generation()) + "_" +
                            std::to_string(shared.next_gid.fetch_add(1));
    shared.decisions.begin(gid);
    struct EndLive {
      txn::DecisionLog& log;
      const std::string& gid;
      ~EndLive() { log.end(gid); }
    } end_live{shared.decisions, gid};
    auto part_gid = [&](const std::shared_ptr<Link>& p) {
      return gid + "_" + std::to_string(p->shard);
    };
    std::vector<bool> prepared(parts.size(), false);
    bool ok = true;
    for (std::size_t i = 0; i < parts.size() && ok; ++i) {
      bool ran = co_await run_ours(parts[i], "PREPARE TRANSACTION '" + part_gid(parts[i]) + "'");
      prepared[i] = ran && parts[i]->lease->replies.tag == "PREPARE TRANSACTION";
      if (prepared[i]) continue;
      ok = false;
      const auto& name = config_.shards[static_cast<std::size_t>(parts[i]->shard)].name;
      if (!ran)
        error = proto::error(
            sqlstate::kConnectionFailure,
            "lost shard " + name + " while committing; the transaction was rolled back");
      else if (!parts[i]->lease->replies.error.empty())
        error = proto::error(parts[i]->lease->replies.error_code.empty()
                                 ? std::string(sqlstate::kInternalError)
                                 : parts[i]->lease->replies.error_code,
                             parts[i]->lease->replies.error + " (shard " + name + ")");
    }
    if (ok && !shared.decisions.commit(gid)) {
      ok = false;
      error =
          proto::error(sqlstate::kInternalError,
                       "cannot write the two-phase commit log; the transaction was rolled back");
    }
    if (!ok) {
      for (std::size_t i = 0; i < parts.size(); ++i) {
        if (prepared[i])
          co_await run_ours(parts[i], "ROLLBACK PREPARED '" + part_gid(parts[i]) + "'");
        else if (parts[i]->lease && !parts[i]->lease->broken && parts[i]->lease->status != 'I')
          co_await run_ours(parts[i], "ROLLBACK");
      }
      tag = "ROLLBACK";
    } else {
      // Decided: every participant commits now, or recovery does it later.
      bool all = true;
      for (auto& p : parts) {
        bool done = co_await run_ours(p, "COMMIT PREPARED '" + part_gid(p) + "'") &&
                    p->lease->replies.tag == "COMMIT PREPARED";
        if (!done) {
          all = false;
          spdlog::warn("{}: COMMIT PREPARED of {} on shard {} failed ({}); recovery will finish it",
                       prefix(), part_gid(p),
                       config_.shards[static_cast<std::size_t>(p->shard)].name,
                       p->lease ? p->lease->replies.error : std::string("connection lost"));
        }
      }
      if (all) shared.decisions.done(gid);
    }
  }
  // The participants go back (or stay, in session pooling).
  for (auto& p : parts) {
    if (p->done) continue;
    if (!p->lease || p->lease->status != 'I') {
      if (p->lease) p->lease->broken = true;
      release(p);
    } else if (session_pooled()) {
      backends_.keep(p);
    } else {
      release(p);
    }
  }
  hints_.local = {};
  std::string out;
  if (warning) proto::write_notice(out, *warning);
  std::string answer;
  if (error)
    proto::write_error(answer, *error);
  else
    proto::CommandComplete{tag}.write(answer);
  if (simple) {
    out += answer;
    out += proto::ready_for_query('I');
  } else if (error) {
    out += answer;
    out += proto::ready_for_query('I');
  } else {
    answer_extended(answer, out);
  }
  co_await write_client(out);
}

}  // namespace pgshard::session
