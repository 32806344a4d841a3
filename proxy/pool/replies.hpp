// The replies a server connection still owes, in order, each saying what to do with it
// (PgBouncer's outstanding-request queue). Whoever writes to a server — the relay, the
// executor, two-phase commit, the pool's reset — pushes what it expects; whoever reads the
// server passes every frame through classify(), which says whether the frame goes to the
// client, is hidden, or is replaced, and keeps the queue in step (an error makes PostgreSQL
// skip to the next Sync: the messages in between get no reply). Synchronous, no I/O.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/pool/counters.hpp"

namespace pgshard::pool {

class PreparedSet;

class Replies {
 public:
  // Whose request a reply answers: the client's (relayed), or pgshard's own statement
  // (hidden; its outcome is kept in tag/error). kOwnReset is pgshard's DISCARD ALL: the
  // server's ParameterStatus replies describe the server's new defaults. kClientHiddenSync
  // is a Sync pgshard added to end a client's batch: the replies before it are the
  // client's, its ReadyForQuery is hidden (also the client's own last ReadyForQuery when
  // pgshard finishes the request). kOwnFinishing is pgshard's statement that finishes the
  // client's request (restoring what a RESET must return to): its results are hidden, its
  // ParameterStatus and ReadyForQuery go to the client as the request's own.
  enum class Owner : uint8_t { kClient, kClientHiddenSync, kOwn, kOwnReset, kOwnFinishing };
  // What to do with a completion message (ParseComplete, CloseComplete, a Describe's
  // RowDescription/NoData and ParameterDescription). For a message answered with
  // ReadyForQuery, what to do with its ReadyForQuery: kHide keeps it from a client whose
  // request it still answers (a part of a pipeline pgshard runs in parts: the client gets one
  // ReadyForQuery at the pipeline's Sync); kHideCompletion hides its CommandComplete too
  // (pgshard's BEGIN/COMMIT of that pipeline: only its errors and notices are the client's).
  enum class Action : uint8_t { kForward, kHide, kAsParseComplete, kHideCompletion };
  enum class Verdict : uint8_t { kForward, kHide, kAsParseComplete };

  // A Parse (`added`: the statement name it puts on the server, forgotten if the Parse gets
  // no reply), Close or Describe whose completion is handled by `action`.
  void expect_parse(Owner owner, Action action, std::string added = {});
  void expect_close(Owner owner, Action action);
  void expect_describe(Owner owner, Action action);
  // A message answered with ReadyForQuery: Sync, Query, FunctionCall.
  void expect_ready(Owner owner, Action action = Action::kForward);
  // Pushes a ReadyForQuery entry for every Query/Sync/FunctionCall of `batch`, owned by
  // `owner`; returns true when the batch leaves extended messages without a Sync after them.
  bool expect_batch(std::string_view batch, Owner owner, Action ready = Action::kForward);
  // pgshard finishes the client's last request with its own statement: the request's
  // ReadyForQuery (the last one pushed for the client) is hidden; push kOwnFinishing next.
  void hide_last_client_ready();
  // Pushes every entry `other` holds, after this queue's.
  void append(const Replies& other);

  // Classifies the server's next frame. `prepared` forgets statements whose Parse was
  // skipped after an error.
  Verdict classify(const protocol::Frame& f, PreparedSet* prepared);
  // classify()'s first step, for a frame it only forwards and that changes nothing here:
  // rows and completions while the front entry is the client's ReadyForQuery (a plain
  // request's replies). False: classify() the frame (the relay skips its own look at a
  // frame that passes).
  bool passes(char type) {
    if (queue_.empty() || queue_.front().kind != Kind::kReady ||
        queue_.front().owner != Owner::kClient)
      return false;
    switch (type) {
      case protocol::msg::kDataRow:
      case protocol::msg::kBindComplete:
      case protocol::msg::kParseComplete:
      case protocol::msg::kCloseComplete:
      case protocol::msg::kRowDescription:
      case protocol::msg::kNoData:
      case protocol::msg::kParameterDescription:
      case protocol::msg::kEmptyQueryResponse:
      case protocol::msg::kPortalSuspended:
        ready_ = false;
        owner_ = Owner::kClient;
        return true;
      default:
        return false;
    }
  }
  // After classify(): the frame was a ReadyForQuery (and which kind), a FATAL error.
  bool ready() const { return ready_; }
  Owner owner() const { return owner_; }

  // ReadyForQuery replies still owed for the client's requests and for pgshard's own.
  int client_owed() const { return client_owed_; }
  int own_owed() const { return own_owed_; }
  bool empty() const { return queue_.empty(); }
  // True while the frames arriving answer pgshard's own statement.
  bool own_front() const { return !queue_.empty() && ours(queue_.front().owner); }
  static bool ours(Owner o) {
    return o == Owner::kOwn || o == Owner::kOwnReset || o == Owner::kOwnFinishing;
  }
  // ReadyForQuery entries that answer a client's request.
  static bool answers_client(Owner o) { return o == Owner::kClient || o == Owner::kOwnFinishing; }
  void clear();

  // Outcome of pgshard's own statements since the last expect_ready(kOwn).
  std::string tag;
  std::string error;
  std::string error_code;
  // A FATAL the server sent before closing (any owner).
  std::string fatal;
  std::string fatal_code;
  // The pool's measurements: the client's requests, transactions and errors are counted
  // as their replies arrive (null: not counted).
  Counters* counters = nullptr;

 private:
  enum class Kind : uint8_t { kParse, kClose, kDescribe, kReady };
  struct Entry {
    Kind kind;
    Owner owner;
    Action action;
    std::string added;
    Clock::time_point at{};  // when a client's request answered by ReadyForQuery was sent
  };
  void count_ready(const Entry& e, char status);
  void count_error(std::string_view code);
  Verdict by_owner() const;
  Verdict complete(Kind kind);
  void push(Entry e);

  std::deque<Entry> queue_;
  int client_owed_ = 0;
  int own_owed_ = 0;
  bool ready_ = false;
  Owner owner_ = Owner::kClient;
  bool in_xact_ = false;  // a client's transaction is open on the server (for its time)
  Clock::time_point xact_start_{};
};

}  // namespace pgshard::pool
