// The client's protocol phase and its transitions: see phase.hpp.
#include "proxy/session/phase.hpp"

#include "protocol/messages.hpp"

namespace pgshard::session {

namespace msg = protocol::msg;

const char* to_string(ClientPhase p) {
  switch (p) {
    case ClientPhase::kReady:
      return "ready";
    case ClientPhase::kBatchOpen:
      return "batch open";
    case ClientPhase::kSplitPipeline:
      return "split pipeline";
    case ClientPhase::kCopyIn:
      return "copy in";
    case ClientPhase::kSkippingToSync:
      return "skipping to sync";
    case ClientPhase::kDroppingBatch:
      return "dropping batch";
  }
  return "?";
}

const char* to_string(ClientAction a) {
  switch (a) {
    case ClientAction::kGather:
      return "gather";
    case ClientAction::kBoundary:
      return "boundary";
    case ClientAction::kCopy:
      return "copy";
    case ClientAction::kIgnore:
      return "ignore";
    case ClientAction::kViolation:
      return "violation";
    case ClientAction::kDrop:
      return "drop";
    case ClientAction::kAnswerSync:
      return "answer sync";
    case ClientAction::kRefuse:
      return "refuse";
    case ClientAction::kTerminate:
      return "terminate";
    case ClientAction::kInvalid:
      return "invalid";
  }
  return "?";
}

void PhaseMachine::nest(ClientPhase p) {
  if (nested()) return;  // (neither nests in the other: see copy_started and on_message)
  resume_ = phase_;
  phase_ = p;
}

void PhaseMachine::set_base(ClientPhase p) {
  base() = p;
}

ClientAction PhaseMachine::on_message(char type, bool too_large) {
  if (phase_ == ClientPhase::kDroppingBatch) {
    // A refused batch: the rest of it, up to its Sync, is dropped unread.
    if (type == msg::kTerminate) return ClientAction::kTerminate;
    if (type != msg::kSync) return ClientAction::kDrop;
    // The Sync a skipping waited for is this one too (before, the skipping went on and
    // took the client's next request for the rest of the failed batch).
    phase_ = std::exchange(resume_, ClientPhase::kReady);
    if (phase_ == ClientPhase::kSkippingToSync) phase_ = ClientPhase::kReady;
    return ClientAction::kAnswerSync;
  }
  // Memory per client is bounded: a batch growing past the limit is refused, as one
  // oversized message would be (COPY data streams through and is never held).
  if (too_large && type != msg::kCopyData && phase_ != ClientPhase::kCopyIn) {
    nest(ClientPhase::kDroppingBatch);
    return ClientAction::kRefuse;
  }
  const bool copy = phase_ == ClientPhase::kCopyIn;
  switch (type) {
    case msg::kTerminate:
      return ClientAction::kTerminate;
    case msg::kCopyDone:
    case msg::kCopyFail:
      // The end of the COPY (the server answers it); outside COPY the server ignores it.
      if (copy) phase_ = std::exchange(resume_, ClientPhase::kReady);
      return ClientAction::kCopy;
    case msg::kCopyData:
      return ClientAction::kCopy;
    case msg::kParse:
    case msg::kBind:
    case msg::kDescribe:
    case msg::kExecute:
    case msg::kClose:
      return copy ? ClientAction::kViolation : ClientAction::kGather;
    case msg::kQuery:
    case msg::kFunctionCall:
      return copy ? ClientAction::kViolation : ClientAction::kBoundary;
    case msg::kSync:
    case msg::kFlush:
      // Sync and Flush are ignored during COPY FROM STDIN, as PostgreSQL does.
      return copy ? ClientAction::kIgnore : ClientAction::kBoundary;
    default:
      return ClientAction::kInvalid;
  }
}

void PhaseMachine::request_sent(bool open) {
  // A pipeline pgshard splits runs its parts (each up to a Sync) in its own transaction,
  // which stays the phase until the pipeline's Sync.
  if (base() == ClientPhase::kSplitPipeline) return;
  set_base(open ? ClientPhase::kBatchOpen : ClientPhase::kReady);
}

void PhaseMachine::batch_closed() {
  if (base() == ClientPhase::kBatchOpen) set_base(ClientPhase::kReady);
}

void PhaseMachine::copy_started() {
  if (phase_ == ClientPhase::kCopyIn) return;
  // (A COPY answering a request sent before a batch was refused begins once the refused
  // batch's Sync has been dropped.)
  if (phase_ == ClientPhase::kDroppingBatch) {
    resume_ = ClientPhase::kCopyIn;
    return;
  }
  nest(ClientPhase::kCopyIn);
}

void PhaseMachine::ready() {
  if (phase_ == ClientPhase::kCopyIn)
    phase_ = std::exchange(resume_, ClientPhase::kReady);
  else if (phase_ == ClientPhase::kDroppingBatch && resume_ == ClientPhase::kCopyIn)
    resume_ = ClientPhase::kReady;
}

void PhaseMachine::skip_to_sync() {
  set_base(ClientPhase::kSkippingToSync);
}

void PhaseMachine::skipped(char boundary) {
  if (boundary != msg::kFlush && base() == ClientPhase::kSkippingToSync)
    set_base(ClientPhase::kReady);
}

bool PhaseMachine::refuse() {
  if (phase_ == ClientPhase::kDroppingBatch) return false;
  nest(ClientPhase::kDroppingBatch);
  return true;
}

void PhaseMachine::pipeline_begun() {
  set_base(ClientPhase::kSplitPipeline);
}

void PhaseMachine::pipeline_ended() {
  if (base() == ClientPhase::kSplitPipeline) set_base(ClientPhase::kReady);
}

}  // namespace pgshard::session
