#include "proxy/txn/transaction.hpp"

#include <cctype>
#include <initializer_list>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"

namespace pgshard::txn {

namespace sqlstate = protocol::sqlstate;
namespace status = protocol::txn_status;

State next(State s, Event e) {
  switch (e) {
    case Event::kBegin:
      return s == State::kIdle ? State::kDeferred : s;
    case Event::kBeginSent:
      return s == State::kDeferred ? State::kOpen : s;
    case Event::kShardJoined:
      return s == State::kFailed ? s : State::kOpenMulti;
    case Event::kServerIdle:
      // Only a transaction on one shard ends by its server's word; the others end through
      // pgshard (a prepare-only batch while deferred also leaves its server idle).
      return s == State::kOpen ? State::kIdle : s;
    case Event::kServerInBlock:
      return s == State::kIdle ? State::kOpen : s;
    case Event::kFailed:
    case Event::kLost:
      return s == State::kIdle ? s : State::kFailed;
    case Event::kEnded:
      return State::kIdle;
    case Event::kRolledBackToSavepoint:
      return s == State::kFailed ? State::kOpen : s;
  }
  return s;
}

const char* to_string(State s) {
  switch (s) {
    case State::kIdle:
      return "idle";
    case State::kDeferred:
      return "deferred";
    case State::kOpen:
      return "open";
    case State::kOpenMulti:
      return "open on several shards";
    case State::kFailed:
      return "failed";
  }
  return "?";
}

void Transaction::on(Event e) {
  const State before = state_;
  state_ = next(state_, e);
  if (before == State::kIdle && state_ != State::kIdle) {
    ++serial_;
    began_ = std::chrono::steady_clock::now();
  }
  if (state_ == State::kIdle) {
    snapshots.clear();  // (also when the server's COMMIT ended it)
    lost_code_.clear();
    deferred_.clear();
    savepoints_ = false;
    recoverable_ = false;
    lost_.clear();
    loss_unreported_ = false;
  }
}

char Transaction::status(char server) const {
  switch (state_) {
    case State::kIdle:
      return server;
    case State::kDeferred:
      return status::kInBlock;
    case State::kOpen:
    case State::kOpenMulti:
      return server == status::kFailed ? status::kFailed : status::kInBlock;
    case State::kFailed:
      return status::kFailed;
  }
  return server;
}

void Transaction::defer(std::string begin, std::string modes) {
  modes_.clear();
  begin_modes_ = std::move(modes);
  on(Event::kBegin);
  if (state_ == State::kDeferred) deferred_ = std::move(begin);
}

std::string Transaction::take_deferred() {
  std::string begin = std::move(deferred_);
  deferred_.clear();
  if (auto d = protocol::decode_frame(begin); d.status == protocol::DecodeStatus::kFrame)
    if (auto q = protocol::Query::parse(d.frame.body)) begin_sql = std::string(q->sql);
  on(Event::kBeginSent);
  if (!modes_.empty()) {
    begin.clear();
    protocol::Query{joining_begin()}.write(begin);
  }
  return begin;
}

void Transaction::server_ready(char s) {
  if (s == status::kIdle) {
    modes_.clear();
    begin_modes_.clear();
    begin_sql = "BEGIN";  // (the next transaction's is its own)
  }
  on(s == status::kIdle ? Event::kServerIdle : Event::kServerInBlock);
}

void Transaction::fail() {
  recoverable_ =
      (state_ == State::kOpen && savepoints_) || (state_ == State::kFailed && recoverable_);
  on(Event::kFailed);
}

void Transaction::lose(std::string why, bool told, std::string_view code) {
  recoverable_ = false;
  on(Event::kLost);
  if (state_ != State::kFailed) return;
  lost_ = std::move(why);
  lost_code_ = std::string(code);
  loss_unreported_ = !told;
}

void Transaction::end() {
  on(Event::kEnded);
  modes_.clear();
  begin_modes_.clear();
  begin_sql = "BEGIN";
  hold_cursors_.clear();
  snapshots.clear();
}

bool Transaction::one_snapshot(std::string_view default_isolation) const {
  auto lower = [](std::string_view text) {
    std::string out(text);
    for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  auto keeps = [](const std::string& text) {
    return text.find("repeatable") != std::string::npos ||
           text.find("serializable") != std::string::npos;
  };
  const std::string mine = lower(begin_sql + " " + modes_);
  if (mine.find("isolation") != std::string::npos) return keeps(mine);
  return keeps(lower(default_isolation));
}

namespace {

// The last of `words` (the router's words for transaction modes: "READ ONLY", "ISOLATION
// LEVEL SERIALIZABLE"...) found in `modes`, its index in `words`; -1 when none is.
int last_of(std::string_view modes, std::initializer_list<std::string_view> words) {
  int found = -1;
  std::size_t at = 0;
  int i = 0;
  for (const auto word : words) {
    const auto pos = modes.rfind(word);
    if (pos != std::string_view::npos && (found < 0 || pos >= at)) found = i, at = pos;
    ++i;
  }
  return found;
}

bool setting_on(std::string_view value) {
  return value == "on" || value == "true" || value == "yes" || value == "1";
}

}  // namespace

bool Transaction::read_only(std::string_view default_read_only, std::string_view more) const {
  const std::string modes = begin_modes_ + " " + modes_ + " " + std::string(more);
  const int last = last_of(modes, {"READ ONLY", "READ WRITE"});
  return last < 0 ? setting_on(default_read_only) : last == 0;
}

bool Transaction::serializable(std::string_view default_isolation, std::string_view more) const {
  const std::string modes = begin_modes_ + " " + modes_ + " " + std::string(more);
  if (modes.find("ISOLATION LEVEL ") == std::string::npos) {
    std::string level(default_isolation);
    for (auto& c : level) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return level == "serializable";
  }
  return last_of(modes, {"ISOLATION LEVEL SERIALIZABLE", "ISOLATION LEVEL REPEATABLE READ",
                         "ISOLATION LEVEL READ COMMITTED", "ISOLATION LEVEL READ UNCOMMITTED"}) ==
         0;
}

protocol::ErrorInfo Transaction::refusal() {
  if (loss_unreported_) {
    loss_unreported_ = false;
    return protocol::error(lost_code_.empty() ? sqlstate::kConnectionFailure : lost_code_, lost_);
  }
  return protocol::error(sqlstate::kInFailedSqlTransaction,
                         "current transaction is aborted, commands ignored until end of "
                         "transaction block");
}

}  // namespace pgshard::txn
