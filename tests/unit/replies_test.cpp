// The reply queue of a server connection (pool::Replies), fed hand-built server messages:
// which replies reach the client, which are hidden or replaced, and that the queue stays in
// step when an error makes the server skip to Sync.
#include "proxy/pool/replies.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/pool/server_conn.hpp"
#include "wire.hpp"

using namespace pgshard;
namespace proto = pgshard::protocol;
using Owner = pool::Replies::Owner;
using Action = pool::Replies::Action;
using Verdict = pool::Replies::Verdict;

namespace {

using testing::complete;
using testing::empty;
using testing::ready;
std::string error(std::string_view severity = "ERROR") {
  return testing::error("42P01", severity);
}

// Classifies each wire message in turn; returns one letter per verdict: F(orward), H(ide),
// P (replaced by ParseComplete).
std::string feed(pool::Replies& r, const std::vector<std::string>& wire,
                 pool::PreparedSet* prepared = nullptr) {
  std::string verdicts;
  for (const auto& m : wire) {
    auto d = proto::decode_frame(m);
    REQUIRE(d.status == proto::DecodeStatus::kFrame);
    switch (r.classify(d.frame, prepared)) {
      case Verdict::kForward:
        verdicts += 'F';
        break;
      case Verdict::kHide:
        verdicts += 'H';
        break;
      case Verdict::kAsParseComplete:
        verdicts += 'P';
        break;
    }
  }
  return verdicts;
}

}  // namespace

TEST_CASE("pgshard's own statement ahead of the client's request is hidden", "[replies]") {
  pool::Replies r;
  r.expect_ready(Owner::kOwn);  // settings sync
  std::string batch;
  proto::Query{"select 1"}.write(batch);
  CHECK_FALSE(r.expect_batch(batch, Owner::kClient));
  CHECK(r.own_owed() == 1);
  CHECK(r.client_owed() == 1);
  CHECK(feed(r, {complete("SELECT 1"), ready(), empty(proto::msg::kRowDescription),
                 complete("SELECT 1"), ready()}) == "HHFFF");
  CHECK(r.tag == "SELECT 1");
  CHECK(r.empty());
  CHECK(r.client_owed() == 0);
  CHECK(r.own_owed() == 0);
}

TEST_CASE("pgshard's statement can finish the client's request", "[replies]") {
  // RESET DateStyle, then pgshard's set_config back to the startup value: the client sees
  // both ParameterStatus messages and one ReadyForQuery, pgshard's.
  pool::Replies r;
  std::string batch;
  proto::Query{"reset datestyle"}.write(batch);
  r.expect_batch(batch, Owner::kClient);
  r.hide_last_client_ready();
  r.expect_ready(Owner::kOwnFinishing);
  CHECK(r.client_owed() == 1);
  CHECK(r.own_owed() == 1);
  std::string ps_reset, ps_restored;
  proto::ParameterStatus{"DateStyle", "ISO, MDY"}.write(ps_reset);
  proto::ParameterStatus{"DateStyle", "Postgres, MDY"}.write(ps_restored);
  CHECK(feed(r, {ps_reset, complete("RESET"), ready()}) == "FFH");
  CHECK(r.client_owed() == 1);
  CHECK(feed(r, {empty(proto::msg::kRowDescription), ps_restored, complete("SELECT 1"), ready()}) ==
        "HFHF");
  CHECK(r.owner() == Owner::kOwnFinishing);
  CHECK(r.tag == "SELECT 1");
  CHECK(r.empty());
  CHECK(r.client_owed() == 0);
  CHECK(r.own_owed() == 0);
}

TEST_CASE("the outcome of pgshard's statement is kept; the client's is not", "[replies]") {
  pool::Replies r;
  r.expect_ready(Owner::kOwn);
  CHECK(feed(r, {error(), ready('E')}) == "HH");
  CHECK(r.error_code == "42P01");
  CHECK(r.tag.empty());
  r.expect_ready(Owner::kOwn);  // a new statement clears the last outcome
  CHECK(r.error.empty());
  CHECK(feed(r, {complete("PREPARE TRANSACTION"), ready()}) == "HH");
  CHECK(r.tag == "PREPARE TRANSACTION");
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {error(), ready('I')}) == "FF");
  CHECK(r.error.empty());
}

TEST_CASE("an error skips to Sync: unanswered Parses are forgotten", "[replies]") {
  pool::Replies r;
  pool::PreparedSet prepared;
  prepared.add("pgshard_a", 10);
  prepared.add("pgshard_b", 10);
  r.expect_parse(Owner::kClient, Action::kHide, "pgshard_a");     // re-prepare, answered
  r.expect_parse(Owner::kClient, Action::kForward, "pgshard_b");  // errors
  r.expect_close(Owner::kClient, Action::kForward);               // skipped
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {empty(proto::msg::kParseComplete), error(), ready()}, &prepared) == "HFF");
  CHECK(prepared.has("pgshard_a"));
  CHECK_FALSE(prepared.has("pgshard_b"));
  CHECK(r.empty());
}

TEST_CASE("a Parse answered by pgshard becomes ParseComplete", "[replies]") {
  pool::Replies r;
  r.expect_close(Owner::kClient, Action::kAsParseComplete);
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {empty(proto::msg::kCloseComplete), ready()}) == "PF");
}

TEST_CASE("untracked unnamed Parse and Close go by the request's owner", "[replies]") {
  pool::Replies r;
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {empty(proto::msg::kParseComplete), empty(proto::msg::kBindComplete),
                 empty(proto::msg::kCloseComplete), ready()}) == "FFFF");
}

TEST_CASE("a Describe pgshard added is hidden, the client's is not", "[replies]") {
  pool::Replies r;
  r.expect_describe(Owner::kClient, Action::kForward);  // Describe S
  r.expect_describe(Owner::kClient, Action::kHide);     // Describe P before Execute
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {empty(proto::msg::kParameterDescription), empty(proto::msg::kNoData),
                 empty(proto::msg::kBindComplete), empty(proto::msg::kRowDescription),
                 complete("SELECT 0"), ready()}) == "FFFHFF");
}

TEST_CASE("a simple Query's RowDescription is not taken for a Describe", "[replies]") {
  pool::Replies r;
  r.expect_ready(Owner::kOwn);
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {empty(proto::msg::kRowDescription), ready(), empty(proto::msg::kRowDescription),
                 ready()}) == "HHFF");
}

TEST_CASE("a Sync pgshard adds to a client's batch hides only its ReadyForQuery", "[replies]") {
  pool::Replies r;
  r.expect_parse(Owner::kClient, Action::kForward);
  r.expect_ready(Owner::kClientHiddenSync);
  CHECK(r.client_owed() == 0);
  CHECK(r.own_owed() == 1);
  CHECK_FALSE(r.own_front());
  CHECK(feed(r, {empty(proto::msg::kParseComplete), empty(proto::msg::kParameterDescription),
                 empty(proto::msg::kNoData), ready()}) == "FFFH");
  CHECK(r.empty());
}

TEST_CASE("a pipeline part's ReadyForQuery is hidden yet still answers the client", "[replies]") {
  // A part of a pipeline pgshard runs in parts ends with pgshard's Sync: its replies are the
  // client's, its ReadyForQuery is not (the client gets one at the pipeline's Sync), but it
  // still ends a request of the client's (owed, counted, the session follows it).
  pool::Replies r;
  std::string batch;
  proto::Bind{}.write(batch);
  proto::Execute{"", 0}.write(batch);
  proto::write_empty(batch, proto::msg::kSync);
  CHECK_FALSE(r.expect_batch(batch, Owner::kClient, Action::kHide));
  CHECK(r.client_owed() == 1);
  CHECK(feed(r, {empty(proto::msg::kBindComplete), complete("INSERT 0 1"), ready('T')}) == "FFH");
  CHECK(r.ready());
  CHECK(r.owner() == Owner::kClient);
  CHECK(r.client_owed() == 0);
  // The next request's ReadyForQuery is forwarded as usual.
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {complete("SELECT 1"), ready('T')}) == "FF");
}

TEST_CASE("pgshard's BEGIN/COMMIT of a split pipeline shows only errors and notices", "[replies]") {
  pool::Replies r;
  std::string commit;
  proto::Query{"COMMIT"}.write(commit);
  r.expect_batch(commit, Owner::kClient, Action::kHideCompletion);
  std::string notice;
  proto::write_notice(notice, proto::error("01000", "careful"));
  CHECK(feed(r, {notice, error(), complete("ROLLBACK"), ready('I')}) == "FFHH");
  CHECK(r.owner() == Owner::kClient);
  CHECK(r.client_owed() == 0);
  CHECK(r.tag.empty());  // the client's statement: no outcome kept for pgshard
}

TEST_CASE("a FATAL is hidden and recorded whoever owns the request", "[replies]") {
  pool::Replies r;
  r.expect_ready(Owner::kClient);
  CHECK(feed(r, {error("FATAL")}) == "H");
  CHECK(r.fatal == "relation \"nope\" does not exist");
  CHECK(r.fatal_code == "42P01");
}

TEST_CASE("batches report whether extended messages are left open", "[replies]") {
  pool::Replies r;
  std::string batch;
  proto::Parse{"", "select 1", {}}.write(batch);
  CHECK(r.expect_batch(batch, Owner::kClient));
  CHECK(r.empty());
  proto::write_empty(batch, proto::msg::kSync);
  CHECK_FALSE(r.expect_batch(batch, Owner::kClient));
  CHECK(r.client_owed() == 1);
  pool::Replies copy;
  copy.append(r);
  CHECK(copy.client_owed() == 1);
  r.clear();
  CHECK(r.empty());
  CHECK(r.client_owed() == 0);
}

TEST_CASE("notices between requests are the client's", "[replies]") {
  pool::Replies r;
  std::string notice;
  proto::write_notice(notice, proto::error("01000", "hello"));
  CHECK(feed(r, {notice}) == "F");
  r.expect_ready(Owner::kOwn);
  CHECK(feed(r, {notice, ready()}) == "HH");
}

TEST_CASE("a frame passes unclassified only where classify would just forward it", "[replies]") {
  // passes() is the relay's shortcut: wherever it says yes, classify() must forward the
  // frame and leave the queue as it was; it must say no to what classify() acts on.
  std::string row;
  proto::DataRow{{std::string_view("1")}}.write(row);
  const std::vector<std::string> frames = {row,
                                           empty(proto::msg::kBindComplete),
                                           empty(proto::msg::kParseComplete),
                                           empty(proto::msg::kCloseComplete),
                                           empty(proto::msg::kNoData),
                                           complete("SELECT 1"),
                                           complete("ROLLBACK"),
                                           error(),
                                           ready('I')};
  int passed = 0;
  for (const auto owner : {Owner::kClient, Owner::kClientHiddenSync, Owner::kOwn, Owner::kOwnReset,
                           Owner::kOwnFinishing}) {
    for (const auto front : {0, 1, 2}) {  // front entry: ReadyForQuery, Parse, Describe
      pool::Replies r;
      if (front == 1) r.expect_parse(owner, Action::kHide);
      if (front == 2) r.expect_describe(owner, Action::kHide);
      r.expect_ready(owner);
      for (const auto& m : frames) {
        auto d = proto::decode_frame(m);
        REQUIRE(d.status == proto::DecodeStatus::kFrame);
        pool::Replies shortcut = r;
        if (!shortcut.passes(d.frame.type)) continue;
        ++passed;
        INFO("owner " << int(owner) << " front " << front << " type " << d.frame.type);
        CHECK(owner == Owner::kClient);
        CHECK(front == 0);
        CHECK(d.frame.type != proto::msg::kCommandComplete);
        CHECK(d.frame.type != proto::msg::kErrorResponse);
        CHECK(d.frame.type != proto::msg::kReadyForQuery);
        pool::Replies classified = r;
        CHECK(classified.classify(d.frame, nullptr) == Verdict::kForward);
        CHECK(classified.owner() == shortcut.owner());
        CHECK(classified.ready() == shortcut.ready());
        CHECK(classified.client_owed() == shortcut.client_owed());
        CHECK(classified.own_owed() == shortcut.own_owed());
        CHECK(classified.empty() == shortcut.empty());
      }
    }
  }
  CHECK(passed == 5);  // rows, three completions and NoData of the client's request
}
