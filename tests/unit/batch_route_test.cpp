// Routing one client request (session::route_batch) from hand-built messages: Binds that must
// agree, a BEGIN pipelined ahead, a Query pipelined after extended messages, statements kept.
#include "proxy/session/batch_route.hpp"

#include <catch2/catch.hpp>

#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "route_parts.hpp"
#include "shard_map.hpp"

using namespace pgshard;
namespace proto = pgshard::protocol;

namespace {

auto map() {
  return testing::three_shards(
      "sharded_tables:\n  - { table: users, column: id, type: bigint }\nunsharded: { shard: s0 "
      "}\n");
}
int shard_of(const char* key) {
  return router::hash_to_index(*router::partition_hash(config::KeyType::kInt8, key), 3);
}
void parse(std::string& out, std::string_view name, std::string_view sql) {
  proto::Parse{name, sql, {}}.write(out);
}
void bind_key(std::string& out, std::string_view statement, const std::string& key) {
  proto::Bind b;
  b.statement = statement;
  b.params.push_back(proto::Value(key));
  b.write(out);
}
void execute_sync(std::string& out) {
  proto::Execute{"", 0}.write(out);
  proto::write_empty(out, proto::msg::kSync);
}
// Two keys that live on different shards.
std::pair<std::string, std::string> keys_apart() {
  for (int k = 2; k < 100; ++k)
    if (shard_of(std::to_string(k).c_str()) != shard_of("1")) return {"1", std::to_string(k)};
  FAIL("no two keys on different shards");
  return {};
}

}  // namespace

TEST_CASE("a Bind routes the batch by its key and the statement is remembered", "[batch]") {
  auto cfg = map();
  session::Statements statements;
  std::string batch;
  parse(batch, "s1", "select * from users where id = $1");
  bind_key(batch, "s1", "42");
  execute_sync(batch);
  bool simple = false;
  auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
  CHECK_FALSE(simple);
  REQUIRE(router::runs_on_shards(r));
  CHECK(testing::forward_shard(r) == shard_of("42"));
  CHECK(statements.text("s1") == "select * from users where id = $1");
  // A later batch binds the stored statement by name alone.
  std::string again;
  bind_key(again, "s1", "7");
  execute_sync(again);
  CHECK(testing::forward_shard(session::route_batch(
            again, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple)) == shard_of("7"));
  std::string close;
  proto::Close{'S', "s1"}.write(close);
  proto::write_empty(close, proto::msg::kSync);
  session::route_batch(close, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
  CHECK(statements.text("s1").empty());
}

TEST_CASE("Binds of one batch that need different shards are refused", "[batch]") {
  auto cfg = map();
  session::Statements statements;
  auto [a, b] = keys_apart();
  std::string batch;
  parse(batch, "", "select * from users where id = $1");
  bind_key(batch, "", a);
  proto::Execute{"", 0}.write(batch);
  bind_key(batch, "", b);
  execute_sync(batch);
  bool simple = false;
  auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
  // (Refused, unless the session runs the pipeline statement by statement.)
  REQUIRE(std::holds_alternative<router::SplitPipeline>(r.action));
  CHECK(testing::error_of(r).code == "0A000");
}

TEST_CASE("a BEGIN pipelined ahead of the first statement goes where it goes", "[batch]") {
  auto cfg = map();
  session::Statements statements;
  std::string batch;
  parse(batch, "", "BEGIN");
  bind_key(batch, "", "unused");
  proto::Execute{"", 0}.write(batch);
  parse(batch, "", "update users set name = 'x' where id = $1");
  bind_key(batch, "", "42");
  execute_sync(batch);
  bool simple = false;
  auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
  REQUIRE(router::runs_on_shards(r));
  CHECK(testing::forward_shard(r) == shard_of("42"));
}

TEST_CASE("a COMMIT or ROLLBACK after a BEGIN of the batch goes where its statements go",
          "[batch]") {
  // Before: placed on the first shard (it names no table), so the batch was refused unless
  // its key lived there (psycopg 3's pipeline of BEGIN; UPDATE ...; ROLLBACK).
  auto cfg = map();
  const auto [near, far] = keys_apart();
  const std::string key = shard_of(near.c_str()) != 0 ? near : far;
  REQUIRE(shard_of(key.c_str()) != 0);
  for (const char* end : {"ROLLBACK", "COMMIT"}) {
    INFO(end);
    session::Statements statements;
    std::string batch;
    parse(batch, "", "BEGIN");
    bind_key(batch, "", "unused");
    proto::Execute{"", 0}.write(batch);
    if (std::string_view(end) == "ROLLBACK") {
      // (psycopg 3 puts DEALLOCATE ALL first after a ROLLBACK when it had prepared statements)
      parse(batch, "", "DEALLOCATE ALL");
      bind_key(batch, "", "unused");
      proto::Execute{"", 0}.write(batch);
    }
    parse(batch, "", "update users set name = 'x' where id = $1");
    bind_key(batch, "", key);
    proto::Execute{"", 0}.write(batch);
    parse(batch, "", end);
    bind_key(batch, "", "unused");
    execute_sync(batch);
    bool simple = false;
    auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
    REQUIRE(router::runs_on_shards(r));
    CHECK(testing::forward_shard(r) == shard_of(key.c_str()));
    CHECK(r.sql_prepare == (std::string_view(end) == "ROLLBACK"
                                ? router::Analysis::SqlPrepareOp::kDeallocate
                                : router::Analysis::SqlPrepareOp::kNone));
    // Inside a transaction of the client's it would end more than the batch began: not so.
    for (const auto at : {session::TxnAt::kServer, session::TxnAt::kManaged}) {
      auto inside = session::route_batch(batch, statements, {}, *cfg, {}, at, &simple);
      CHECK(std::holds_alternative<router::SplitPipeline>(inside.action));
    }
  }
}

TEST_CASE("a Query pipelined after extended messages must join them", "[batch]") {
  auto cfg = map();
  session::Statements statements;
  auto [a, b] = keys_apart();
  std::string batch;
  parse(batch, "", "select * from users where id = $1");
  bind_key(batch, "", a);
  proto::Execute{"", 0}.write(batch);
  bool simple = false;
  SECTION("on the same shard it goes as sent") {
    proto::Query{"select * from users where id = " + a}.write(batch);
    auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
    CHECK(simple);
    REQUIRE(router::runs_on_shards(r));
    CHECK(testing::forward_shard(r) == shard_of(a.c_str()));
  }
  SECTION("elsewhere it is refused") {
    proto::Query{"select * from users where id = " + b}.write(batch);
    auto r = session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
    REQUIRE(testing::refused(r));
    CHECK(testing::error_of(r).message.find("shard of the statements before it") !=
          std::string::npos);
  }
  SECTION("it may not end a transaction pgshard runs") {
    proto::Query{"commit"}.write(batch);
    auto r =
        session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kManaged, &simple);
    REQUIRE(testing::refused(r));
    CHECK(testing::error_of(r).code == "0A000");
  }
}

TEST_CASE("a rewritten statement is pgshard's own unnamed Parse; the client's stays", "[batch]") {
  auto cfg = map();
  session::Statements statements;
  auto upper = [](std::string_view sql, const proto::Bind*) -> std::optional<std::string> {
    if (sql.empty()) return std::nullopt;
    return "/* rewritten */ " + std::string(sql);
  };
  auto types = [](const std::string& batch) {
    std::string out;
    for (const auto m : proto::frames(batch)) out += m.frame.type;
    return out;
  };
  // A named statement parsed in an earlier batch: a Parse of the rewritten text goes ahead
  // of the Bind, which now binds the unnamed statement.
  statements.parsed("ins", "insert into users (name) values ($1)", {25});
  std::string batch;
  bind_key(batch, "ins", "x");
  execute_sync(batch);
  REQUIRE(session::rewrite_statement(batch, statements, upper));
  CHECK(types(batch) == "PBES");
  auto frames = proto::frames(batch);
  auto p = proto::Parse::parse((*frames.begin()).frame.body);
  REQUIRE(p);
  CHECK(p->name.empty());
  CHECK(p->query == "/* rewritten */ insert into users (name) values ($1)");
  CHECK(p->param_types == std::vector<int32_t>{25});
  CHECK(statements.injected(p->query));
  // Routing it again does not make that text the client's unnamed statement.
  bool simple = false;
  session::route_batch(batch, statements, {}, *cfg, {}, session::TxnAt::kNone, &simple);
  CHECK(statements.unnamed().empty());
  CHECK(statements.text("ins") == "insert into users (name) values ($1)");

  // The statement of the last Bind is the one rewritten (a BEGIN pipelined ahead stays).
  statements.clear_injected();
  batch.clear();
  parse(batch, "", "begin");
  bind_key(batch, "", "unused");
  proto::Execute{"", 0}.write(batch);
  parse(batch, "s2", "insert into users (name) values ($1)");
  bind_key(batch, "s2", "y");
  execute_sync(batch);
  REQUIRE(session::rewrite_statement(batch, statements, upper));
  CHECK(types(batch) == "PBEPPBES");
  // A simple Query is rewritten in place; nothing to bind, nothing rewritten: false.
  batch.clear();
  proto::Query{"select 1"}.write(batch);
  REQUIRE(session::rewrite_statement(batch, statements, upper));
  CHECK(proto::Query::parse(proto::decode_frame(batch).frame.body)->sql ==
        "/* rewritten */ select 1");
  batch.clear();
  proto::write_empty(batch, proto::msg::kSync);
  CHECK_FALSE(session::rewrite_statement(batch, statements, upper));
}
