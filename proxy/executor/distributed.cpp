// Transactions that use several shards: each shard's server holds its part (the client's
// participants and its active server), and COMMIT runs two-phase commit — PREPARE
// TRANSACTION everywhere, the decision fsynced to the log, COMMIT PREPARED everywhere. A
// failure before the decision rolls every participant back; after it, recovery
// (recovery.cpp) finishes the commit.
#include "proxy/executor/distributed.hpp"

#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/pool/server_fate.hpp"
#include "proxy/runtime/cluster_gate.hpp"
#include "proxy/runtime/decision_log.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;
using runtime::DecisionLog;
using runtime::GateHold;
using runtime::VisibilityGate;

namespace {

using Part = std::shared_ptr<pool::Link>;

// COMMIT or ROLLBACK of one coordinated transaction.
class Ending {
 public:
  Ending(executor::Client& c, bool commit) : c_(c), commit_(commit) {}
  awaitable<Ended> run();

 private:
  awaitable<void> rollback_all();
  // two_phase_commit off: one shard after the other, a late failure reported.
  awaitable<void> commit_in_turn();
  // PREPARE TRANSACTION everywhere, the decision logged, COMMIT PREPARED everywhere.
  awaitable<void> commit_two_phase();
  // A transaction that created a WITH HOLD cursor, which PostgreSQL cannot PREPARE: when
  // at most one participant wrote, the others commit first (making nothing visible), then
  // the one that wrote; several that wrote roll back with 0A000.
  awaitable<void> commit_with_hold_cursor();
  awaitable<bool> prepare_all(const std::string& gid, std::vector<bool>& prepared);
  // COMMIT: the parts on replicas first, then the primaries' by the map's rules.
  awaitable<void> commit();
  // A READ ONLY transaction's parts on replicas wrote nothing, and a hot standby refuses
  // PREPARE TRANSACTION: each commits plainly (making nothing visible) and leaves parts_
  // for replica_parts_. False when one failed (every part rolled back, error_ set).
  awaitable<bool> commit_on_replicas();
  bool on_replica(const Part& p) const {
    return p->shard >= static_cast<int>(c_.config().shards.size());
  }
  // The participants go back (or stay, in session pooling).
  void hand_back();
  // The commit side of the visibility gate, for the participants' shards (none when the
  // gate is off).
  awaitable<GateHold> enter_gate();
  const std::string& name(const Part& p) const {
    return c_.config().shards[static_cast<std::size_t>(c_.config().host_of(p->shard).shard)].name;
  }
  static std::string part_gid(const std::string& gid, const Part& p) {
    return gid + "_" + std::to_string(p->shard);
  }

  executor::Client& c_;
  const bool commit_;
  std::vector<Part> parts_;
  std::vector<Part> replica_parts_;  // committed by commit_on_replicas
  bool hold_cursor_ = false;
  std::string tag_;
  std::optional<proto::ErrorInfo> error_;
  std::optional<proto::ErrorInfo> warning_;
};

awaitable<Ended> Ending::run() {
  // Nothing is handed back while pgshard finishes the transaction.
  parts_ = c_.backends().take_participants();
  tag_ = commit_ ? "COMMIT" : "ROLLBACK";
  bool aborted = c_.transaction().failed();
  const std::string lost = c_.transaction().lost();
  const std::string lost_code = c_.transaction().lost_code();
  hold_cursor_ = c_.transaction().hold_cursor();
  c_.transaction().end();
  for (auto& p : parts_)
    if (!p->lease || p->lease->broken || p->lease->status == proto::txn_status::kFailed)
      aborted = true;
  if (commit_ && !lost.empty()) {
    // The work of this transaction died with a server: COMMIT must not look like success.
    co_await rollback_all();
    error_ = proto::error(lost_code.empty() ? sqlstate::kConnectionFailure : lost_code, lost);
  } else if (!commit_ || aborted) {
    // COMMIT of an aborted transaction rolls back, as PostgreSQL answers it.
    co_await rollback_all();
    tag_ = "ROLLBACK";
  } else {
    co_await commit();
  }
  hand_back();
  c_.hints().local = {};
  co_return Ended{tag_, error_, warning_};
}

awaitable<void> Ending::commit() {
  const bool replicas_committed = co_await commit_on_replicas();
  if (!replicas_committed || parts_.empty()) co_return;
  // (One part left on a primary: nothing to make atomic across shards.)
  if (!c_.config().two_phase_commit || parts_.size() < 2)
    co_await commit_in_turn();
  else if (hold_cursor_)
    co_await commit_with_hold_cursor();
  else
    co_await commit_two_phase();
}

awaitable<bool> Ending::commit_on_replicas() {
  std::vector<Part> primaries;
  for (auto& p : parts_) {
    if (!on_replica(p)) {
      primaries.push_back(p);
      continue;
    }
    const bool ok = co_await c_.run_ours(p, "COMMIT") && p->lease->replies.tag == "COMMIT";
    if (!ok) {
      co_await rollback_all();  // (the parts committed already are idle: left alone)
      error_ = proto::error(
          sqlstate::kConnectionFailure,
          "lost shard " + name(p) + "'s replica while committing; the transaction was rolled back");
      co_return false;
    }
  }
  for (auto& p : parts_)
    if (on_replica(p)) replica_parts_.push_back(p);
  parts_ = std::move(primaries);
  co_return true;
}

awaitable<void> Ending::rollback_all() {
  for (auto& p : parts_)
    if (p->lease && !p->lease->broken && p->lease->status != proto::txn_status::kIdle)
      co_await c_.run_ours(p, "ROLLBACK");
}

awaitable<void> Ending::commit_in_turn() {
  auto gate = co_await enter_gate();
  std::vector<std::string> committed, failed;
  for (auto& p : parts_) {
    const bool ok = co_await c_.run_ours(p, "COMMIT") && p->lease->replies.tag == "COMMIT";
    (ok ? committed : failed).push_back(name(p));
    if (!ok && committed.empty()) {
      co_await gate.release();
      co_await rollback_all();
      error_ = proto::error(sqlstate::kConnectionFailure, "COMMIT failed on shard " + name(p) +
                                                              "; the transaction was rolled back");
      co_return;
    }
  }
  co_await gate.release();
  if (failed.empty()) co_return;
  std::string f, c;
  for (auto& n : failed) f += (f.empty() ? "" : ", ") + n;
  for (auto& n : committed) c += (c.empty() ? "" : ", ") + n;
  warning_ =
      proto::error(sqlstate::kWarning, "COMMIT failed on shard(s) " + f + " after shard(s) " + c +
                                           " committed (two_phase_commit is off)");
  warning_->severity = "WARNING";
}

awaitable<void> Ending::commit_with_hold_cursor() {
  // pg_current_xact_id_if_assigned(): a transaction id is assigned at the first write.
  std::vector<Part> wrote, read_only;
  for (auto& p : parts_) {
    if (!co_await c_.run_ours(p,
                              "SELECT 1 WHERE pg_catalog.pg_current_xact_id_if_assigned() "
                              "IS NOT NULL")) {
      co_await rollback_all();
      error_ =
          proto::error(sqlstate::kConnectionFailure, "lost shard " + name(p) +
                                                         " while committing; the transaction was "
                                                         "rolled back");
      co_return;
    }
    (p->lease->replies.tag == "SELECT 1" ? wrote : read_only).push_back(p);
  }
  if (wrote.size() > 1) {
    co_await rollback_all();
    error_ = proto::error(
        sqlstate::kFeatureNotSupported,
        "cannot commit a transaction that wrote on several shards and created a WITH HOLD "
        "cursor; the transaction was rolled back",
        "PostgreSQL cannot PREPARE TRANSACTION (two-phase commit) for a transaction that "
        "created a WITH HOLD cursor.",
        "Declare the cursor WITHOUT HOLD, or in a transaction of its own.");
    co_return;
  }
  // A COMMIT can fail on a part that only read (a WITH HOLD cursor's query runs to the end
  // at COMMIT: division by zero): as on PostgreSQL the whole transaction then fails, so the
  // part that wrote commits last, and not at all after a failure.
  auto failed = [&](const Part& p) {
    const bool answered = p->lease && !p->lease->replies.error.empty();
    error_ = proto::error(answered && !p->lease->replies.error_code.empty()
                              ? p->lease->replies.error_code
                              : std::string(sqlstate::kConnectionFailure),
                          (answered ? p->lease->replies.error : "connection lost") +
                              " (COMMIT on shard " + name(p) + ")");
  };
  for (auto& p : read_only)
    if (!co_await c_.run_ours(p, "COMMIT") || p->lease->replies.tag != "COMMIT") {
      failed(p);
      co_await rollback_all();
      co_return;
    }
  for (auto& p : wrote)
    if (!co_await c_.run_ours(p, "COMMIT") || p->lease->replies.tag != "COMMIT") failed(p);
}

awaitable<bool> Ending::prepare_all(const std::string& gid, std::vector<bool>& prepared) {
  for (std::size_t i = 0; i < parts_.size(); ++i) {
    const auto& p = parts_[i];
    // A participant on a host its shard's writes moved away from must not prepare there.
    if (auto moved = c_.worker().demoted_primary(*p->lease); !moved.empty()) {
      error_ =
          proto::error(sqlstate::kConnectionFailure, moved + "; the transaction was rolled back");
      co_return false;
    }
    const bool ran = co_await c_.run_ours(p, "PREPARE TRANSACTION '" + part_gid(gid, p) + "'");
    prepared[i] = ran && p->lease->replies.tag == "PREPARE TRANSACTION";
    if (prepared[i]) continue;
    if (!ran)
      error_ = proto::error(
          sqlstate::kConnectionFailure,
          "lost shard " + name(p) + " while committing; the transaction was rolled back");
    else if (!p->lease->replies.error.empty())
      error_ =
          proto::error(p->lease->replies.error_code.empty() ? std::string(sqlstate::kInternalError)
                                                            : p->lease->replies.error_code,
                       p->lease->replies.error + " (shard " + name(p) + ")");
    co_return false;
  }
  co_return true;
}

awaitable<void> Ending::commit_two_phase() {
  auto& decisions = c_.worker().shared().decisions;
  // Unique across restarts (generation) and instances (prefix); registered as live so the
  // periodic recovery pass never finishes it under this session's feet.
  const std::string gid = decisions.prefix() + std::to_string(decisions.generation()) + "_" +
                          std::to_string(c_.worker().shared().next_gid.fetch_add(1));
  decisions.begin(gid);
  struct EndLive {
    DecisionLog& log;
    const std::string& gid;
    ~EndLive() { log.end(gid); }
  } end_live{decisions, gid};
  std::vector<bool> prepared(parts_.size(), false);
  bool ok = co_await prepare_all(gid, prepared);
  if (ok && !decisions.commit(gid)) {
    ok = false;
    error_ = proto::error(sqlstate::kInternalError,
                          "cannot write the two-phase commit log; the transaction was rolled back");
  }
  if (!ok) {
    for (std::size_t i = 0; i < parts_.size(); ++i) {
      const auto& p = parts_[i];
      if (prepared[i])
        co_await c_.run_ours(p, "ROLLBACK PREPARED '" + part_gid(gid, p) + "'");
      else if (p->lease && !p->lease->broken && p->lease->status != proto::txn_status::kIdle)
        co_await c_.run_ours(p, "ROLLBACK");
    }
    tag_ = "ROLLBACK";
    ++c_.worker().shared().rolled_back_2pc;
    co_return;
  }
  ++c_.worker().shared().committed_2pc;
  // Decided: every participant commits now, or recovery does it later. The COMMIT PREPAREDs
  // become visible one shard after the other: multi-shard reads on these shards do not take
  // their snapshots meanwhile (VisibilityGate).
  auto gate = co_await enter_gate();
  bool all = true;
  for (auto& p : parts_) {
    const bool done = co_await c_.run_ours(p, "COMMIT PREPARED '" + part_gid(gid, p) + "'") &&
                      p->lease->replies.tag == "COMMIT PREPARED";
    if (done) continue;
    all = false;
    spdlog::warn("{}: COMMIT PREPARED of {} on shard {} failed ({}); recovery will finish it",
                 c_.prefix(), part_gid(gid, p), name(p),
                 p->lease ? p->lease->replies.error : std::string("connection lost"));
  }
  co_await gate.release();
  if (all) decisions.done(gid);
}

awaitable<GateHold> Ending::enter_gate() {
  if (!c_.config().atomic_visibility) co_return GateHold{};
  std::vector<int> shards;
  for (const auto& p : parts_) shards.push_back(p->shard);
  co_return co_await c_.worker()
      .visibility_entry(c_.config(), c_.prefix())
      .enter(VisibilityGate::Mode::kCommit, std::move(shards));
}

void Ending::hand_back() {
  parts_.insert(parts_.end(), replica_parts_.begin(), replica_parts_.end());
  replica_parts_.clear();
  for (auto& p : parts_) {
    if (p->done) continue;
    if (!p->lease || p->lease->status != proto::txn_status::kIdle) {
      if (p->lease) pool::report(*p->lease, pool::ServerFailure::kInTransaction);
      c_.release(p);
    } else if (c_.session_pooled()) {
      c_.backends().keep(p);
    } else {
      c_.release(p);
    }
  }
}

}  // namespace

awaitable<std::optional<Ended>> end_distributed(executor::Client& c, bool commit) {
  if (!co_await c.drain()) co_return std::nullopt;
  Ending ending(c, commit);
  co_return co_await ending.run();
}

awaitable<bool> finish_distributed(executor::Client& c, ReplySink& reply, bool commit,
                                   bool simple) {
  const auto ended = co_await end_distributed(c, commit);
  if (!ended) co_return false;
  std::string out;
  if (ended->warning) proto::write_notice(out, *ended->warning);
  std::string answer;
  if (ended->error)
    proto::write_error(answer, *ended->error);
  else
    proto::CommandComplete{ended->tag}.write(answer);
  if (simple || ended->error) {
    out += answer;
    reply.end_request(out, proto::txn_status::kIdle);
  } else {
    c.answer_extended(answer, out);
  }
  co_await reply.write(out);
  co_return ended->committed();
}

}  // namespace pgshard::executor
