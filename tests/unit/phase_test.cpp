// The client's protocol phase (session::PhaseMachine) without a network: every message
// type in every phase, and the sequences a hostile or confused client sends (CopyData
// outside COPY, Sync while skipping, a Flush-ended batch, a Query inside an open batch,
// CopyFail, a refused batch over an open one...).
#include "proxy/session/phase.hpp"

#include <catch2/catch.hpp>
#include <string>

#include "protocol/messages.hpp"

using namespace pgshard;
using session::ClientAction;
using session::ClientPhase;
using session::PhaseMachine;
namespace msg = pgshard::protocol::msg;

namespace {

// A machine in `p` (reached as a session reaches it).
PhaseMachine in_phase(ClientPhase p) {
  PhaseMachine m;
  switch (p) {
    case ClientPhase::kReady:
      break;
    case ClientPhase::kBatchOpen:
      m.request_sent(true);
      break;
    case ClientPhase::kSplitPipeline:
      m.pipeline_begun();
      break;
    case ClientPhase::kCopyIn:
      m.request_sent(false);
      m.copy_started();
      break;
    case ClientPhase::kSkippingToSync:
      m.skip_to_sync();
      break;
    case ClientPhase::kDroppingBatch:
      REQUIRE(m.refuse());
      break;
  }
  REQUIRE(m.phase() == p);
  return m;
}

constexpr ClientPhase kPhases[] = {ClientPhase::kReady,          ClientPhase::kBatchOpen,
                                   ClientPhase::kSplitPipeline,  ClientPhase::kCopyIn,
                                   ClientPhase::kSkippingToSync, ClientPhase::kDroppingBatch};
constexpr char kTypes[] = {
    msg::kParse,    msg::kBind,         msg::kDescribe,  msg::kExecute, msg::kClose,
    msg::kQuery,    msg::kFunctionCall, msg::kSync,      msg::kFlush,   msg::kCopyData,
    msg::kCopyDone, msg::kCopyFail,     msg::kTerminate, 'x',           '\0'};

bool request_message(char t) {
  return t == msg::kParse || t == msg::kBind || t == msg::kDescribe || t == msg::kExecute ||
         t == msg::kClose;
}
bool boundary(char t) {
  return t == msg::kQuery || t == msg::kFunctionCall || t == msg::kSync || t == msg::kFlush;
}
bool copy_message(char t) {
  return t == msg::kCopyData || t == msg::kCopyDone || t == msg::kCopyFail;
}

// What PostgreSQL's rules (and pgshard's limits) say a message in `p` gets.
ClientAction expected(ClientPhase p, char t, bool too_large) {
  if (p == ClientPhase::kDroppingBatch) {
    if (t == msg::kTerminate) return ClientAction::kTerminate;
    return t == msg::kSync ? ClientAction::kAnswerSync : ClientAction::kDrop;
  }
  const bool copy = p == ClientPhase::kCopyIn;
  if (too_large && t != msg::kCopyData && !copy) return ClientAction::kRefuse;
  if (t == msg::kTerminate) return ClientAction::kTerminate;
  if (copy_message(t)) return ClientAction::kCopy;
  if (request_message(t)) return copy ? ClientAction::kViolation : ClientAction::kGather;
  if (t == msg::kQuery || t == msg::kFunctionCall)
    return copy ? ClientAction::kViolation : ClientAction::kBoundary;
  if (boundary(t)) return copy ? ClientAction::kIgnore : ClientAction::kBoundary;
  return ClientAction::kInvalid;
}

// The phase after that message.
ClientPhase expected_after(ClientPhase p, char t, bool too_large) {
  switch (expected(p, t, too_large)) {
    case ClientAction::kAnswerSync:
      return ClientPhase::kReady;  // (a batch refused from kReady)
    case ClientAction::kRefuse:
      return ClientPhase::kDroppingBatch;
    case ClientAction::kCopy:
      return p == ClientPhase::kCopyIn && t != msg::kCopyData ? ClientPhase::kReady : p;
    default:
      return p;
  }
}

}  // namespace

TEST_CASE("every message type in every phase gets PostgreSQL's treatment", "[phase]") {
  for (const ClientPhase p : kPhases) {
    for (const char t : kTypes) {
      for (const bool too_large : {false, true}) {
        PhaseMachine m = in_phase(p);
        INFO("phase " << to_string(p) << ", message '" << t << "'"
                      << (too_large ? " (too large)" : ""));
        CHECK(m.on_message(t, too_large) == expected(p, t, too_large));
        CHECK(m.phase() == expected_after(p, t, too_large));
      }
    }
  }
}

TEST_CASE("CopyData, CopyDone and CopyFail outside COPY change nothing", "[phase]") {
  // PostgreSQL ignores them outside COPY: they go on to the server, which does.
  for (const ClientPhase p : {ClientPhase::kReady, ClientPhase::kBatchOpen}) {
    PhaseMachine m = in_phase(p);
    for (const char t : {msg::kCopyData, msg::kCopyDone, msg::kCopyFail})
      CHECK(m.on_message(t, false) == ClientAction::kCopy);
    CHECK(m.phase() == p);
  }
}

TEST_CASE("COPY ends at CopyDone, CopyFail or the ReadyForQuery, back where it began", "[phase]") {
  PhaseMachine m;
  m.request_sent(false);  // Query "COPY t FROM STDIN"
  m.copy_started();
  CHECK(m.copy_in());
  CHECK(m.on_message(msg::kCopyData, true) == ClientAction::kCopy);  // never refused: streams
  CHECK(m.on_message(msg::kSync, false) == ClientAction::kIgnore);
  CHECK(m.on_message(msg::kFlush, false) == ClientAction::kIgnore);
  CHECK(m.on_message(msg::kCopyFail, false) == ClientAction::kCopy);
  CHECK(m.phase() == ClientPhase::kReady);
  // A COPY an Execute began in a batch left open by Flush: CopyDone returns to the batch,
  // which waits for its Sync.
  m.request_sent(true);
  m.copy_started();
  CHECK(m.copy_in());
  CHECK(m.batch_open());  // (the server still holds the batch)
  CHECK(m.on_message(msg::kCopyDone, false) == ClientAction::kCopy);
  CHECK(m.phase() == ClientPhase::kBatchOpen);
  // The server's error ends a COPY too (the client's ReadyForQuery).
  m.request_sent(false);
  m.copy_started();
  m.ready();
  CHECK(m.phase() == ClientPhase::kReady);
  m.ready();  // (a ReadyForQuery outside COPY changes nothing)
  CHECK(m.phase() == ClientPhase::kReady);
}

TEST_CASE("a request message or Query during COPY breaks the protocol", "[phase]") {
  for (const char t : {msg::kParse, msg::kBind, msg::kExecute, msg::kQuery, msg::kFunctionCall}) {
    PhaseMachine m = in_phase(ClientPhase::kCopyIn);
    CHECK(m.on_message(t, false) == ClientAction::kViolation);
  }
}

TEST_CASE("skipping to Sync: Flush goes on skipping, Sync or a Query ends it", "[phase]") {
  PhaseMachine m = in_phase(ClientPhase::kSkippingToSync);
  CHECK(m.on_message(msg::kBind, false) == ClientAction::kGather);  // (gathered, then skipped)
  CHECK(m.on_message(msg::kFlush, false) == ClientAction::kBoundary);
  m.skipped(msg::kFlush);
  CHECK(m.skipping_to_sync());
  CHECK(m.on_message(msg::kSync, false) == ClientAction::kBoundary);
  m.skipped(msg::kSync);
  CHECK(m.phase() == ClientPhase::kReady);
  // A simple Query ends the skipping and runs.
  m.skip_to_sync();
  m.skipped(msg::kQuery);
  CHECK(m.phase() == ClientPhase::kReady);
  // Sync while skipping, twice: the second is an ordinary (empty) request.
  m.skip_to_sync();
  m.skipped(msg::kSync);
  m.skipped(msg::kSync);
  CHECK(m.phase() == ClientPhase::kReady);
}

TEST_CASE("a Flush-ended batch stays open on its server until a Sync reaches it", "[phase]") {
  PhaseMachine m;
  m.request_sent(true);  // Parse/Bind/Execute/Flush
  CHECK(m.batch_open());
  // A Query inside the open batch joins it (PostgreSQL runs them as one unit).
  CHECK(m.on_message(msg::kQuery, false) == ClientAction::kBoundary);
  m.request_sent(false);
  CHECK(m.phase() == ClientPhase::kReady);
  // The batch's server is lost: nothing is open any more.
  m.request_sent(true);
  m.batch_closed();
  CHECK(m.phase() == ClientPhase::kReady);
  // pgshard abandons a batch that moves shards mid-way: closed, then skipped to its Sync.
  m.request_sent(true);
  m.batch_closed();
  m.skip_to_sync();
  CHECK(m.phase() == ClientPhase::kSkippingToSync);
  CHECK_FALSE(m.batch_open());
}

TEST_CASE("a batch refused over an open one returns to it after its Sync", "[phase]") {
  PhaseMachine m;
  m.request_sent(true);
  CHECK(m.on_message(msg::kBind, true) == ClientAction::kRefuse);
  CHECK(m.dropping_batch());
  CHECK(m.batch_open());    // the server still holds the first part
  CHECK_FALSE(m.refuse());  // refused already (no second error)
  CHECK(m.on_message(msg::kExecute, false) == ClientAction::kDrop);
  CHECK(m.on_message(msg::kQuery, false) == ClientAction::kDrop);
  CHECK(m.on_message(msg::kCopyData, false) == ClientAction::kDrop);
  CHECK(m.on_message(msg::kSync, false) == ClientAction::kAnswerSync);
  CHECK(m.phase() == ClientPhase::kBatchOpen);
  // Refused while skipping: both wait for the same Sync, which ends both (before, the
  // skipping went on and ate the client's next request).
  PhaseMachine s = in_phase(ClientPhase::kSkippingToSync);
  CHECK(s.refuse());
  CHECK(s.skipping_to_sync());
  CHECK(s.on_message(msg::kSync, false) == ClientAction::kAnswerSync);
  CHECK(s.phase() == ClientPhase::kReady);
}

TEST_CASE("a COPY that begins while a refused batch is dropped follows its Sync", "[phase]") {
  // The COPY answers a request sent before the refusal.
  PhaseMachine m;
  m.request_sent(true);
  REQUIRE(m.refuse());
  m.copy_started();
  CHECK(m.dropping_batch());
  CHECK(m.on_message(msg::kCopyData, false) == ClientAction::kDrop);
  CHECK(m.on_message(msg::kSync, false) == ClientAction::kAnswerSync);
  CHECK(m.phase() == ClientPhase::kCopyIn);
  CHECK(m.on_message(msg::kCopyDone, false) == ClientAction::kCopy);
  CHECK(m.phase() == ClientPhase::kReady);
}

TEST_CASE("a split pipeline stays open across its parts until its Sync", "[phase]") {
  PhaseMachine m;
  m.request_sent(false);  // pgshard's BEGIN
  m.pipeline_begun();
  for (int part = 0; part < 3; ++part) m.request_sent(false);  // each group up to a Sync
  CHECK(m.split_pipeline());
  m.request_sent(true);  // (a part sent as the client's own batch keeps the pipeline)
  CHECK(m.split_pipeline());
  m.pipeline_ended();
  m.request_sent(false);  // pgshard's COMMIT
  CHECK(m.phase() == ClientPhase::kReady);
  // A COPY inside a part returns to the pipeline.
  m.pipeline_begun();
  m.copy_started();
  CHECK(m.split_pipeline());
  m.ready();
  CHECK(m.phase() == ClientPhase::kSplitPipeline);
}

TEST_CASE("phases and actions print their names", "[phase]") {
  for (const ClientPhase p : kPhases) CHECK(std::string(to_string(p)) != "?");
  CHECK(std::string(to_string(ClientAction::kAnswerSync)) == "answer sync");
}
