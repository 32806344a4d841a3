// Transactions that use several shards: each shard's server holds its part (the client's
// participants and its active server), and COMMIT runs two-phase commit — PREPARE
// TRANSACTION everywhere, the decision fsynced to the log, COMMIT PREPARED everywhere. A
// failure before the decision rolls every participant back; after it, recovery
// (recovery.cpp) finishes the commit.
#include "proxy/txn/distributed.hpp"

#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/server/server.hpp"
#include "proxy/txn/decision_log.hpp"

namespace pgshard::txn {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<void> finish_distributed(executor::Client& c, bool commit, bool simple) {
  if (!co_await c.drain()) co_return;
  // Nothing is handed back while pgshard finishes the transaction.
  std::vector<std::shared_ptr<pool::Link>> parts = c.backends().take_participants();
  auto& shared = c.worker().shared();
  std::string tag = commit ? "COMMIT" : "ROLLBACK";
  std::optional<proto::ErrorInfo> error;
  std::optional<proto::ErrorInfo> warning;
  bool aborted = c.transaction().failed();
  const std::string lost = c.transaction().lost();
  c.transaction().end();
  for (auto& p : parts)
    if (!p->lease || p->lease->broken || p->lease->status == 'E') aborted = true;
  auto rollback_all = [&]() -> awaitable<void> {
    for (auto& p : parts)
      if (p->lease && !p->lease->broken && p->lease->status != 'I')
        co_await c.run_ours(p, "ROLLBACK");
  };
  if (commit && !lost.empty()) {
    // The work of this transaction died with a server: COMMIT must not look like success.
    co_await rollback_all();
    error = proto::error(sqlstate::kConnectionFailure, lost);
  } else if (!commit || aborted) {
    // COMMIT of an aborted transaction rolls back, as PostgreSQL answers it.
    co_await rollback_all();
    tag = "ROLLBACK";
  } else if (!c.config().two_phase_commit) {
    // Best effort: commit one shard after the other; report a shard that failed late.
    std::vector<std::string> committed, failed;
    for (auto& p : parts) {
      const auto& name = c.config().shards[static_cast<std::size_t>(p->shard)].name;
      bool ok = co_await c.run_ours(p, "COMMIT") && p->lease->replies.tag == "COMMIT";
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
    auto part_gid = [&](const std::shared_ptr<pool::Link>& p) {
      return gid + "_" + std::to_string(p->shard);
    };
    std::vector<bool> prepared(parts.size(), false);
    bool ok = true;
    for (std::size_t i = 0; i < parts.size() && ok; ++i) {
      bool ran = co_await c.run_ours(parts[i], "PREPARE TRANSACTION '" + part_gid(parts[i]) + "'");
      prepared[i] = ran && parts[i]->lease->replies.tag == "PREPARE TRANSACTION";
      if (prepared[i]) continue;
      ok = false;
      const auto& name = c.config().shards[static_cast<std::size_t>(parts[i]->shard)].name;
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
          co_await c.run_ours(parts[i], "ROLLBACK PREPARED '" + part_gid(parts[i]) + "'");
        else if (parts[i]->lease && !parts[i]->lease->broken && parts[i]->lease->status != 'I')
          co_await c.run_ours(parts[i], "ROLLBACK");
      }
      tag = "ROLLBACK";
    } else {
      // Decided: every participant commits now, or recovery does it later.
      bool all = true;
      for (auto& p : parts) {
        bool done = co_await c.run_ours(p, "COMMIT PREPARED '" + part_gid(p) + "'") &&
                    p->lease->replies.tag == "COMMIT PREPARED";
        if (!done) {
          all = false;
          spdlog::warn("{}: COMMIT PREPARED of {} on shard {} failed ({}); recovery will finish it",
                       c.prefix(), part_gid(p),
                       c.config().shards[static_cast<std::size_t>(p->shard)].name,
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
      c.release(p);
    } else if (c.session_pooled()) {
      c.backends().keep(p);
    } else {
      c.release(p);
    }
  }
  c.hints().local = {};
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
    c.answer_extended(answer, out);
  }
  co_await c.write_client(out);
}

}  // namespace pgshard::txn
