// The client's transaction as pgshard sees it: one state, changed only by next() on an
// event, and what ReadyForQuery tells the client. Synchronous, no I/O.
#pragma once

#include <cctype>
#include <chrono>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>

#include "protocol/errors.hpp"
#include "proxy/txn/snapshots.hpp"

namespace pgshard::txn {

enum class State : uint8_t {
  kIdle,       // no transaction
  kDeferred,   // BEGIN answered by pgshard: it reaches a shard with the first statement
  kOpen,       // open on one shard: that server's status ('T' or 'E') is the client's
  kOpenMulti,  // open on several shards: COMMIT runs two-phase commit
  kFailed,     // failed by pgshard (a server lost, a multi-shard statement failed): every
               // statement but COMMIT/ROLLBACK gets an error until the client ends it
};

enum class Event : uint8_t {
  kBegin,                  // the client's BEGIN, answered by pgshard
  kBeginSent,              // the deferred BEGIN went to a shard ahead of a statement
  kShardJoined,            // another shard joined the transaction
  kServerIdle,             // the active server's ReadyForQuery says 'I'
  kServerInBlock,          // ... says 'T' or 'E' (a transaction the server opened itself)
  kFailed,                 // a statement pgshard ran across shards failed inside it
  kLost,                   // a server holding part of it was lost
  kEnded,                  // pgshard finished COMMIT or ROLLBACK
  kRolledBackToSavepoint,  // ROLLBACK TO SAVEPOINT after pgshard's own error, on one shard
};

// The one transition function.
State next(State s, Event e);
const char* to_string(State s);

class Transaction {
 public:
  State state() const { return state_; }
  bool deferred() const { return state_ == State::kDeferred; }
  bool failed() const { return state_ == State::kFailed; }
  // Open on several shards, or failed by pgshard: COMMIT/ROLLBACK is pgshard's to run.
  bool coordinated() const { return state_ == State::kOpenMulti || state_ == State::kFailed; }

  // The status byte of the client's ReadyForQuery, given the active server's ('I' if none).
  char status(char server) const;

  // BEGIN answered by pgshard; `begin` (a Query message) goes out with the first statement.
  // `modes`: its modes as the router words them ("ISOLATION LEVEL SERIALIZABLE READ ONLY").
  void defer(std::string begin, std::string modes = {});
  const std::string& deferred_begin() const { return deferred_; }
  // The deferred BEGIN, for the shard that runs the first statement (begin_sql remembers
  // it for shards that join later), with the modes of a SET TRANSACTION pgshard held
  // meanwhile (add_modes): the transaction opens everywhere as if BEGIN had named them.
  std::string take_deferred();
  // The ReadyForQuery status of the active server after a client request.
  void server_ready(char status);
  void joined() { on(Event::kShardJoined); }
  void fail();
  // After pgshard's own error in a transaction on one shard that has savepoints, ROLLBACK
  // TO SAVEPOINT recovers it as on PostgreSQL (the shard's server never saw the error).
  bool can_roll_back_to_savepoint() const { return state_ == State::kFailed && recoverable_; }
  void rolled_back_to_savepoint() { on(Event::kRolledBackToSavepoint); }
  // A server holding part of the transaction was lost (or its snapshots cannot be one:
  // `code` 40001): why, and whether the client was told already (else its next statement
  // is, and COMMIT answers with `code`).
  void lose(std::string why, bool told,
            std::string_view code = protocol::sqlstate::kConnectionFailure);
  const std::string& lost_code() const { return lost_code_; }
  // Lost, and the client not told yet (refusal() tells it).
  bool loss_unreported() const { return state_ == State::kFailed && loss_unreported_; }
  // COMMIT/ROLLBACK finished (or BEGIN answered locally ended): back to idle.
  void end();
  // Took a savepoint (a savepoint must stay on one shard).
  void savepoint() { savepoints_ = true; }
  bool savepoints() const { return savepoints_; }
  // Created a WITH HOLD cursor (DECLARE ... WITH HOLD in the block) still open: PostgreSQL
  // refuses to PREPARE such a transaction, so it cannot commit in two phases. CLOSE of it
  // (or CLOSE ALL: an empty name) takes it back.
  void declared_hold_cursor(const std::string& name) { hold_cursors_.insert(name); }
  void closed_cursor(const std::string& name) {
    if (name.empty())
      hold_cursors_.clear();
    else
      hold_cursors_.erase(name);
  }
  bool hold_cursor() const { return !hold_cursors_.empty(); }
  // What the work of the transaction died with, "" if nothing was lost.
  const std::string& lost() const { return lost_; }
  // The error for a statement sent while failed: the loss once, then 25P02.
  protocol::ErrorInfo refusal();

  // Whether the transaction is READ ONLY (BEGIN's or SET TRANSACTION's last access mode,
  // else the session's default_transaction_read_only), and whether it is SERIALIZABLE
  // (likewise, else default_transaction_isolation). A hot standby runs a READ ONLY one
  // unless it is SERIALIZABLE ("cannot use serializable mode in a hot standby"). `more`:
  // modes a SET TRANSACTION about to run adds (its words as add_modes takes them).
  bool read_only(std::string_view default_read_only, std::string_view more = {}) const;
  bool serializable(std::string_view default_isolation, std::string_view more = {}) const;

  // Whether each shard's part keeps one snapshot (REPEATABLE READ, SERIALIZABLE), given the
  // session's default_transaction_isolation ("" if not set).
  bool one_snapshot(std::string_view default_isolation) const;
  // Where each shard's snapshot was taken, for those that keep one (see snapshots.hpp).
  Snapshots snapshots;

  std::string begin_sql = "BEGIN";  // how the transaction began, for shards that join
  // SET TRANSACTION in the transaction: its modes, which shards that join later take too.
  void add_modes(const std::string& modes) { modes_ += " " + modes; }
  const std::string& modes() const { return modes_; }
  // What a shard joining the transaction runs: BEGIN as the client's, with its modes.
  std::string joining_begin() const {
    if (modes_.empty()) return begin_sql;
    std::string begin = begin_sql;  // "BEGIN;" as psql sends it: the modes go before the ';'
    while (!begin.empty() &&
           (begin.back() == ';' || std::isspace(static_cast<unsigned char>(begin.back()))))
      begin.pop_back();
    return begin + modes_;
  }

  // Which of the session's transactions this is, and when it began (deadlock victims are
  // the youngest).
  uint64_t serial() const { return serial_; }
  std::chrono::steady_clock::time_point began() const { return began_; }

 private:
  void on(Event e);
  State state_ = State::kIdle;
  uint64_t serial_ = 0;
  std::chrono::steady_clock::time_point began_;
  std::string deferred_;
  std::string modes_;        // see add_modes
  std::string begin_modes_;  // see defer
  bool savepoints_ = false;
  std::set<std::string> hold_cursors_;
  bool recoverable_ = false;  // failed only by pgshard, on one shard, with savepoints
  std::string lost_;
  std::string lost_code_;
  bool loss_unreported_ = false;
};

}  // namespace pgshard::txn
