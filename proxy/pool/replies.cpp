#include "proxy/pool/replies.hpp"

#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/pool/server_conn.hpp"

namespace pgshard::pool {

namespace msg = protocol::msg;

void Replies::push(Entry e) {
  if (e.kind == Kind::kReady) {
    if (answers_client(e.owner)) {
      ++client_owed_;
      if (counters) {
        e.at = Clock::now();
        if (!in_xact_) {
          in_xact_ = true;
          xact_start_ = e.at;
        }
      }
    } else if (e.owner == Owner::kClientHiddenSync) {
      ++own_owed_;
    } else {
      ++own_owed_;
      tag.clear();
      error.clear();
      error_code.clear();
    }
  }
  queue_.push_back(std::move(e));
}

void Replies::expect_parse(Owner owner, Action action, std::string added) {
  push({Kind::kParse, owner, action, std::move(added)});
}

void Replies::expect_close(Owner owner, Action action) {
  push({Kind::kClose, owner, action, {}});
}

void Replies::expect_describe(Owner owner, Action action) {
  push({Kind::kDescribe, owner, action, {}});
}

void Replies::expect_ready(Owner owner, Action action) {
  push({Kind::kReady, owner, action, {}});
}

bool Replies::expect_batch(std::string_view batch, Owner owner, Action ready) {
  bool open = false;
  for (const auto m : protocol::frames(batch)) {
    switch (m.frame.type) {
      case msg::kQuery:
      case msg::kFunctionCall:
      case msg::kSync:
        expect_ready(owner, ready);
        open = false;
        break;
      case msg::kCopyData:
      case msg::kCopyDone:
      case msg::kCopyFail:
        break;
      default:
        open = true;
    }
  }
  return open;
}

void Replies::hide_last_client_ready() {
  for (auto it = queue_.rbegin(); it != queue_.rend(); ++it) {
    if (it->kind == Kind::kReady && it->owner == Owner::kClient) {
      it->owner = Owner::kClientHiddenSync;
      --client_owed_;
      ++own_owed_;
      return;
    }
  }
}

void Replies::append(const Replies& other) {
  for (const auto& e : other.queue_) push(e);
}

void Replies::clear() {
  queue_.clear();
  client_owed_ = own_owed_ = 0;
  ready_ = false;
  in_xact_ = false;
}

void Replies::count_ready(const Entry& e, char status) {
  if (e.at == Clock::time_point{}) return;  // sent before counting began
  const auto now = Clock::now();
  auto micros = [&](Clock::time_point since) {
    return static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - since).count());
  };
  ++counters->queries;
  counters->query_time.add(micros(e.at));
  if (status != 'I') return;
  ++counters->xacts;
  counters->xact_time.add(micros(xact_start_));
  // Requests pipelined behind this one start the next transaction now.
  in_xact_ = client_owed_ > 0;
  xact_start_ = now;
}

void Replies::count_error(std::string_view code) {
  ++counters->errors[std::string(code.substr(0, 2))];
}

Replies::Verdict Replies::by_owner() const {
  return queue_.empty() || !ours(queue_.front().owner) ? Verdict::kForward : Verdict::kHide;
}

Replies::Verdict Replies::complete(Kind kind) {
  // A completion answers the front entry when it is that message; a message nobody pushed
  // an entry for (the relay's fast path leaves unnamed Parse/Close untracked) goes by the
  // owner of the request being answered.
  if (queue_.empty() || queue_.front().kind != kind) return by_owner();
  const Entry& e = queue_.front();
  const auto verdict = e.action == Action::kForward ? by_owner()
                       : e.action == Action::kHide  ? Verdict::kHide
                                                    : Verdict::kAsParseComplete;
  queue_.pop_front();
  return verdict;
}

Replies::Verdict Replies::classify(const protocol::Frame& f, PreparedSet* prepared) {
  if (passes(f.type)) return Verdict::kForward;  // (a plain request's rows and completions)
  ready_ = false;
  owner_ = queue_.empty() ? Owner::kClient : queue_.front().owner;
  switch (f.type) {
    case msg::kReadyForQuery: {
      ready_ = true;
      bool shown = true;
      // Messages before the Sync that got no reply (an error came first) did nothing: a
      // statement they would have prepared is not on the server.
      while (!queue_.empty()) {
        Entry e = std::move(queue_.front());
        queue_.pop_front();
        if (e.kind == Kind::kReady) {
          owner_ = e.owner;
          shown = e.action == Action::kForward;
          if (answers_client(e.owner)) {
            --client_owed_;
            if (counters) count_ready(e, f.body.empty() ? 'I' : f.body[0]);
          } else {
            --own_owed_;
          }
          break;
        }
        if (!e.added.empty() && prepared) prepared->erase(e.added);
      }
      return answers_client(owner_) && shown ? Verdict::kForward : Verdict::kHide;
    }
    case msg::kParameterStatus:
      return owner_ == Owner::kOwnFinishing ? Verdict::kForward : by_owner();
    case msg::kParseComplete:
      return complete(Kind::kParse);
    case msg::kCloseComplete:
      return complete(Kind::kClose);
    case msg::kRowDescription:
    case msg::kNoData:
      // Also the first reply of a simple Query's result: only a Describe entry at the
      // front claims it.
      return complete(Kind::kDescribe);
    case msg::kParameterDescription:
      if (!queue_.empty() && queue_.front().kind == Kind::kDescribe &&
          queue_.front().action == Action::kHide)
        return Verdict::kHide;
      return by_owner();
    case msg::kCommandComplete:
      if (ours(owner_)) tag.assign(f.body.substr(0, f.body.find('\0')));
      if (!queue_.empty() && queue_.front().kind == Kind::kReady &&
          queue_.front().action == Action::kHideCompletion)
        return Verdict::kHide;
      return by_owner();
    case msg::kErrorResponse:
      if (auto e = protocol::ErrorFields::parse(f.body)) {
        if (e->severity() == "FATAL" || e->severity() == "PANIC") {
          fatal.assign(e->message());
          fatal_code.assign(e->code());
          return Verdict::kHide;  // the session reports the lost server its own way
        }
        if (ours(owner_)) {
          error.assign(e->message());
          error_code.assign(e->code());
        } else if (counters) {
          count_error(e->code());
        }
      }
      return by_owner();
    default:
      return by_owner();
  }
}

}  // namespace pgshard::pool
