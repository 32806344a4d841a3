// Where the client is in the protocol (one enum, changed only here): between requests, in
// an extended batch left open by a Flush, in a pipeline pgshard splits over shards, in
// COPY FROM STDIN, skipping to a Sync after a failure, or dropping a refused batch. Sans
// I/O: the session tells it what happened and asks it what a client message means.
#pragma once

#include <cstdint>
#include <utility>

namespace pgshard::session {

enum class ClientPhase : uint8_t {
  kReady,           // nothing of the client's is open: its next message starts a request
  kBatchOpen,       // extended messages went to a server up to a Flush: the batch stays there
                    // until its Sync (the server's implicit transaction is open)
  kSplitPipeline,   // a pipeline over several shards runs in pgshard's transaction until its
                    // Sync (parts ended by Flush leave it open)
  kCopyIn,          // the server is in COPY FROM STDIN: only CopyData/CopyDone/CopyFail
  kSkippingToSync,  // pgshard failed an extended batch: the rest of it, up to its Sync, is
                    // skipped as PostgreSQL skips after an error (53.2.3)
  kDroppingBatch,   // the batch was refused (too large, no buffer room): the rest of it is
                    // dropped unread up to its Sync
};
const char* to_string(ClientPhase p);

// What the session does with one client message (the first decision of on_message).
enum class ClientAction : uint8_t {
  kGather,      // Parse, Bind, Describe, Execute, Close: joins the request being gathered
  kBoundary,    // Query, FunctionCall, Sync, Flush: ends the request, which then runs
  kCopy,        // CopyData/CopyDone/CopyFail: to the COPY (outside one the server ignores it)
  kIgnore,      // Sync or Flush during COPY: ignored, as PostgreSQL does
  kViolation,   // a request message during COPY: ERROR, then FATAL (08P01)
  kDrop,        // part of a refused batch: dropped unread
  kAnswerSync,  // the refused batch's Sync: dropped, pgshard answers ReadyForQuery
  kRefuse,      // the batch grew past max_message_size: refused (53400), then dropped
  kTerminate,   // the client says goodbye
  kInvalid,     // not a frontend message type: 08P01
};
const char* to_string(ClientAction a);

class PhaseMachine {
 public:
  ClientPhase phase() const { return phase_; }
  // What COPY or a refused batch returns to when it ends (the phase it interrupted).
  ClientPhase resume() const { return resume_; }

  // A whole client message of `type` arrived; `too_large`: gathering it would take the
  // request past max_message_size. What to do with it; the phase moves on.
  ClientAction on_message(char type, bool too_large);

  // ---- what the session tells it ----
  // A request of the client's went to a server; `open`: it ended without Sync (a Flush).
  void request_sent(bool open);
  // The server holding the open batch is gone, or answered its end (the batch is closed).
  void batch_closed();
  // The server began COPY FROM STDIN (its CopyInResponse reached the client).
  void copy_started();
  // The client's request got its ReadyForQuery: any COPY of it is over.
  void ready();
  // pgshard failed a request ending in Flush: skip to the Sync.
  void skip_to_sync();
  // The request being skipped ended in `boundary` with no server to take it: Sync and
  // Query end the skipping (a Query ran as the next request), a Flush goes on skipping.
  // With a server, the request went to it, which answers the Sync itself (also ends it).
  void skipped(char boundary);
  // The batch arriving is refused (no buffer room): dropped to its Sync. False when it was
  // refused already.
  bool refuse();
  // pgshard's transaction for a pipeline over several shards began / ended at its Sync.
  void pipeline_begun();
  void pipeline_ended();

  // ---- what the session asks ----
  bool copy_in() const { return phase_ == ClientPhase::kCopyIn; }
  bool dropping_batch() const { return phase_ == ClientPhase::kDroppingBatch; }
  // Extended messages sent after the last Sync (a COPY or a refused batch inside it too).
  bool batch_open() const { return in(ClientPhase::kBatchOpen); }
  bool skipping_to_sync() const { return in(ClientPhase::kSkippingToSync); }
  bool split_pipeline() const { return in(ClientPhase::kSplitPipeline); }

 private:
  // The phase now, or the one a nested phase (COPY, a refused batch) returns to.
  bool in(ClientPhase p) const { return phase_ == p || (nested() && resume_ == p); }
  bool nested() const {
    return phase_ == ClientPhase::kCopyIn || phase_ == ClientPhase::kDroppingBatch;
  }
  // Enters a nested phase, remembering the one it interrupts.
  void nest(ClientPhase p);
  // Sets the phase a request leaves (for a nested phase: the one it returns to).
  void set_base(ClientPhase p);
  ClientPhase& base() { return nested() ? resume_ : phase_; }

  ClientPhase phase_ = ClientPhase::kReady;
  ClientPhase resume_ = ClientPhase::kReady;
};

}  // namespace pgshard::session
