// The client's transaction state (txn::Transaction): every transition of next(), and the
// status byte and errors the client gets in each state.
#include "proxy/txn/transaction.hpp"

#include <catch2/catch.hpp>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"

using namespace pgshard;
using txn::Event;
using txn::State;

TEST_CASE("the transition function, state by state", "[txn]") {
  SECTION("idle") {
    CHECK(txn::next(State::kIdle, Event::kBegin) == State::kDeferred);
    CHECK(txn::next(State::kIdle, Event::kServerInBlock) == State::kOpen);
    CHECK(txn::next(State::kIdle, Event::kServerIdle) == State::kIdle);
    CHECK(txn::next(State::kIdle, Event::kFailed) == State::kIdle);  // autocommit: no txn
    CHECK(txn::next(State::kIdle, Event::kLost) == State::kIdle);
    CHECK(txn::next(State::kIdle, Event::kBeginSent) == State::kIdle);
  }
  SECTION("deferred") {
    CHECK(txn::next(State::kDeferred, Event::kBeginSent) == State::kOpen);
    CHECK(txn::next(State::kDeferred, Event::kServerIdle) == State::kDeferred);  // a prepare
    CHECK(txn::next(State::kDeferred, Event::kShardJoined) == State::kOpenMulti);
    CHECK(txn::next(State::kDeferred, Event::kEnded) == State::kIdle);
    CHECK(txn::next(State::kDeferred, Event::kBegin) == State::kDeferred);
  }
  SECTION("open on one shard") {
    CHECK(txn::next(State::kOpen, Event::kServerIdle) == State::kIdle);  // COMMIT relayed
    CHECK(txn::next(State::kOpen, Event::kServerInBlock) == State::kOpen);
    CHECK(txn::next(State::kOpen, Event::kShardJoined) == State::kOpenMulti);
    CHECK(txn::next(State::kOpen, Event::kLost) == State::kFailed);
    CHECK(txn::next(State::kOpen, Event::kFailed) == State::kFailed);
  }
  SECTION("open on several shards ends only through pgshard") {
    CHECK(txn::next(State::kOpenMulti, Event::kServerIdle) == State::kOpenMulti);
    CHECK(txn::next(State::kOpenMulti, Event::kShardJoined) == State::kOpenMulti);
    CHECK(txn::next(State::kOpenMulti, Event::kFailed) == State::kFailed);
    CHECK(txn::next(State::kOpenMulti, Event::kEnded) == State::kIdle);
  }
  SECTION("failed stays failed until the client ends it") {
    for (auto e : {Event::kBegin, Event::kBeginSent, Event::kShardJoined, Event::kServerIdle,
                   Event::kServerInBlock, Event::kFailed, Event::kLost})
      CHECK(txn::next(State::kFailed, e) == State::kFailed);
    CHECK(txn::next(State::kFailed, Event::kEnded) == State::kIdle);
  }
}

TEST_CASE("what ReadyForQuery tells the client", "[txn]") {
  namespace st = protocol::txn_status;
  txn::Transaction t;
  CHECK(t.status(st::kIdle) == st::kIdle);
  std::string begin;
  protocol::Query{"BEGIN ISOLATION LEVEL REPEATABLE READ"}.write(begin);
  t.defer(begin);
  CHECK(t.deferred());
  CHECK(t.status(st::kIdle) == st::kInBlock);  // no server has it yet
  CHECK(t.take_deferred() == begin);
  CHECK(t.begin_sql == "BEGIN ISOLATION LEVEL REPEATABLE READ");
  CHECK(t.state() == State::kOpen);
  t.server_ready(st::kFailed);
  CHECK(t.status(st::kFailed) == st::kFailed);
  t.server_ready(st::kIdle);  // ROLLBACK relayed
  CHECK(t.state() == State::kIdle);
  CHECK(t.status(st::kIdle) == st::kIdle);
}

TEST_CASE("a lost server fails the transaction and is told once", "[txn]") {
  txn::Transaction t;
  t.server_ready(protocol::txn_status::kInBlock);
  t.savepoint();
  t.lose("server connection to shard s1 was lost; the transaction was rolled back", false);
  CHECK(t.failed());
  CHECK(t.coordinated());
  CHECK(t.status(protocol::txn_status::kIdle) == protocol::txn_status::kFailed);
  CHECK(t.refusal().code == "08006");
  CHECK(t.refusal().code == "25P02");
  CHECK_FALSE(t.lost().empty());
  t.end();
  CHECK(t.state() == State::kIdle);
  CHECK(t.lost().empty());
  CHECK_FALSE(t.savepoints());
}

TEST_CASE("a loss outside a transaction changes nothing", "[txn]") {
  txn::Transaction t;
  t.lose("gone", false);
  CHECK(t.state() == State::kIdle);
  CHECK(t.lost().empty());
}

TEST_CASE("a loss told with the failing statement is not told again", "[txn]") {
  txn::Transaction t;
  t.server_ready(protocol::txn_status::kInBlock);
  t.lose("gone", true);
  CHECK(t.refusal().code == "25P02");
}

TEST_CASE("ROLLBACK TO SAVEPOINT recovers only from pgshard's own error on one shard",
          "[transaction]") {
  txn::Transaction t;
  t.server_ready('T');  // open on one shard
  t.fail();             // a refusal, before any savepoint
  CHECK_FALSE(t.can_roll_back_to_savepoint());
  t.end();
  t.server_ready('T');
  t.savepoint();
  t.fail();
  CHECK(t.failed());
  CHECK(t.can_roll_back_to_savepoint());
  t.fail();  // a second refusal keeps it recoverable
  CHECK(t.can_roll_back_to_savepoint());
  t.rolled_back_to_savepoint();
  CHECK(t.state() == State::kOpen);
  // A lost server is not recoverable.
  t.fail();
  t.lose("shard s1 lost", true);
  CHECK_FALSE(t.can_roll_back_to_savepoint());
  t.end();
  // Nor a transaction on several shards.
  t.server_ready('T');
  t.savepoint();
  t.joined();
  t.fail();
  CHECK_FALSE(t.can_roll_back_to_savepoint());
}

TEST_CASE("a transaction is READ ONLY / SERIALIZABLE by its last mode, else the defaults",
          "[txn]") {
  txn::Transaction t;
  t.defer("BEGIN", "");
  CHECK_FALSE(t.read_only(""));
  CHECK(t.read_only("on"));
  CHECK_FALSE(t.serializable(""));
  CHECK(t.serializable("SERIALIZABLE"));
  CHECK(t.read_only("", "READ ONLY"));  // a SET TRANSACTION about to run
  t.add_modes("READ ONLY");
  CHECK(t.read_only("off"));
  t.add_modes("READ WRITE");
  CHECK_FALSE(t.read_only("on"));
  t.end();
  t.defer("BEGIN", "ISOLATION LEVEL REPEATABLE READ READ ONLY");
  CHECK(t.read_only(""));
  CHECK_FALSE(t.serializable("serializable"));  // BEGIN's level wins over the default
  CHECK(t.serializable("", "ISOLATION LEVEL SERIALIZABLE"));
  t.end();
  CHECK_FALSE(t.read_only(""));  // (the modes end with the transaction)
  t.defer("BEGIN", "READ WRITE");
  CHECK_FALSE(t.read_only("on"));
}

TEST_CASE("a SET TRANSACTION held with the deferred BEGIN opens every shard with its modes",
          "[txn]") {
  txn::Transaction t;
  std::string begin;
  protocol::Query{"BEGIN;"}.write(begin);
  t.defer(begin, "");
  t.add_modes("READ ONLY");
  CHECK(t.read_only(""));
  const auto sent = t.take_deferred();
  const auto frame = protocol::decode_frame(sent);
  REQUIRE(frame.status == protocol::DecodeStatus::kFrame);
  CHECK(protocol::Query::parse(frame.frame.body)->sql == "BEGIN READ ONLY");
  CHECK(t.joining_begin() == "BEGIN READ ONLY");
  t.end();
  // Without one, the client's BEGIN goes as it was sent.
  t.defer(begin, "ISOLATION LEVEL REPEATABLE READ");
  CHECK(t.take_deferred() == begin);
}
