// SQL PREPARE / EXECUTE / DEALLOCATE, DO blocks and CALL in the router: what the session
// keeps, how an EXECUTE becomes its statement, and what is refused. No sockets.
#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/router/router.hpp"
#include "route_parts.hpp"
#include "shard_map.hpp"

using namespace pgshard;
using namespace pgshard::router;
using testing::error_of;
using Op = Analysis::SqlPrepareOp;

namespace {

std::shared_ptr<const config::Config> map() {
  return testing::three_shards(R"(sharded_tables:
  - { table: accounts, column: id, type: bigint }
reference_tables: [countries]
unsharded: { shard: s0 }
)");
}

std::string executed(std::string_view prepare, std::string_view execute,
                     std::string* code = nullptr) {
  protocol::ErrorInfo error;
  auto sql = sql_executed(prepare, execute, error);
  if (code) *code = sql ? "" : error.code;
  return sql.value_or("");
}

}  // namespace

TEST_CASE("SQL PREPARE of a statement on sharded tables is kept by the session",
          "[router][parser][prepared]") {
  auto cfg = map();
  SessionHints h;
  auto r =
      route_query("PREPARE w AS UPDATE accounts SET balance = balance + 1 WHERE id = $1", h, *cfg);
  CHECK(r.sql_prepare == Op::kPrepare);
  CHECK(r.sql_prepared == "w");
  CHECK(r.sql_prepare_held);
  CHECK(r.sql_prepare_alone);
  CHECK_FALSE(r.pins);  // no server keeps it
  CHECK_FALSE(r.ddl);   // (before: a schema change on every shard)
  // So is one on a reference table (a write must reach every copy).
  r = route_query("prepare c as insert into countries values ($1)", h, *cfg);
  CHECK(r.sql_prepare == Op::kPrepare);
  CHECK(r.sql_prepare_held);
  // Other statements are the server's: they go where their tables are, and pin.
  r = route_query("prepare l as select * from local_t", h, *cfg);  // on s0
  CHECK(r.sql_prepare == Op::kPrepare);
  CHECK_FALSE(r.sql_prepare_held);
  CHECK(r.pins);
  CHECK(testing::forward_shard(r) == 0);
  r = route_query("prepare one as select $1::int + 1", h, *cfg);
  CHECK_FALSE(r.sql_prepare_held);
  CHECK(r.pins);
  r = route_query("EXECUTE W(3)", h, *cfg);
  CHECK(r.sql_prepare == Op::kExecute);
  CHECK(r.sql_prepared == "w");
  CHECK(r.sql_prepare_alone);
  CHECK_FALSE(route_query("explain execute w(3)", h, *cfg).sql_prepare_alone);
  r = route_query("deallocate prepare w", h, *cfg);
  CHECK(r.sql_prepare == Op::kDeallocate);
  CHECK(r.sql_prepared == "w");
  r = route_query("deallocate all", h, *cfg);
  CHECK(r.sql_prepare == Op::kDeallocate);
  CHECK(r.sql_prepared.empty());
  r = route_query("discard all", h, *cfg);
  CHECK(r.sql_prepare == Op::kDeallocate);
  CHECK(route_query("reset all", h, *cfg).sql_prepare == Op::kNone);  // settings only
  // Among other statements: a PREPARE on sharded tables is refused, an EXECUTE noted.
  r = route_query("select 1; prepare w as select * from accounts where id = $1", h, *cfg);
  CHECK(error_of(r).code == "0A000");
  r = route_query("select 1; execute w(3)", h, *cfg);
  CHECK(r.sql_prepare == Op::kExecute);
  CHECK_FALSE(r.sql_prepare_alone);
  // The same text with other arguments is not answered from a cached shape.
  AnalysisCache cache(16, cfg.get());
  Context ctx;
  ctx.cache = &cache;
  CHECK(route_query("execute w(3)", h, *cfg, ctx).sql_prepared == "w");
  CHECK(route_query("execute v(4)", h, *cfg, ctx).sql_prepared == "v");
}

TEST_CASE("EXECUTE of a kept statement is its statement with the arguments put in",
          "[router][parser][prepared]") {
  const char* w = "prepare w as update accounts set balance = balance + $2 where id = $1";
  CHECK(executed(w, "execute w(3, 10)") ==
        "UPDATE accounts SET balance = balance + 10 WHERE id = 3");
  // Declared types: each argument cast to its type, as PostgreSQL coerces it.
  const char* r = "prepare r(bigint) as select balance from accounts where id = $1";
  CHECK(executed(r, "execute r('7')") == "SELECT balance FROM accounts WHERE id = '7'::bigint");
  CHECK(executed(r, "execute r(-8)") == "SELECT balance FROM accounts WHERE id = (-8)::bigint");
  std::string code;
  CHECK(executed(r, "execute r(1, 2)", &code).empty());
  CHECK(code == "42601");
  CHECK(executed(r, "execute r", &code).empty());
  CHECK(code == "42601");
  // More declared types than the statement uses: PostgreSQL counts the declared ones.
  CHECK(
      executed("prepare x(int, int) as select * from accounts where id = $1", "execute x(1)", &code)
          .empty());
  CHECK(code == "42601");
  // A function or a subquery would run once per place of the parameter: refused.
  CHECK(executed(r, "execute r(random()::int)", &code).empty());
  CHECK(code == "0A000");
  CHECK(executed(r, "execute r((select 1))", &code).empty());
  CHECK(code == "0A000");
  // The routed result: the key is the argument.
  auto cfg = map();
  const auto sql = executed(r, "execute r(7)");
  auto one = route_query(sql, {}, *cfg);
  CHECK(testing::forward_shard(one) >= 0);
}

TEST_CASE("DO blocks and CALL on sharded tables are refused unless a hint places them",
          "[router][parser][prepared]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("DO $$ BEGIN UPDATE accounts SET balance = 0 WHERE id = 3; END $$", h, *cfg);
  CHECK(error_of(r).code == "0A000");
  CHECK_THAT(error_of(r).message, Catch::Contains("\"accounts\""));
  CHECK_THAT(error_of(r).hint, Catch::Contains("pgshard: sharding_key="));
  // Expressions count: a table read in an IF condition.
  r = route_query(
      "DO $$ BEGIN IF (SELECT count(*) FROM accounts) > 0 THEN RAISE NOTICE 'x'; END IF; END $$", h,
      *cfg);
  CHECK(error_of(r).code == "0A000");
  // Reference tables: each shard's copy would change alone.
  r = route_query("do $$ begin insert into countries values ('FR'); end $$", h, *cfg);
  CHECK(error_of(r).code == "0A000");
  r = route_query("do $$ begin execute 'select 1'; end $$", h, *cfg);
  CHECK_THAT(error_of(r).message, Catch::Contains("dynamic SQL"));
  r = route_query("do language plperl $$ 1; $$", h, *cfg);
  CHECK(error_of(r).code == "0A000");
  r = route_query("call bump(3)", h, *cfg);
  CHECK(error_of(r).code == "0A000");
  // A hint places them; a block on no table of the map runs as before.
  CHECK_FALSE(testing::refused(route_query(
      "/* pgshard: sharding_key=3 */ do $$ begin update accounts set balance = 0; end $$", h,
      *cfg)));
  SessionHints on_shard;
  on_shard.session.shard = "s1";
  CHECK(testing::forward_shard(route_query("call bump(3)", on_shard, *cfg)) == 1);
  for (const char* block : {"do $$ begin perform 1; end $$",
                            "do $$ begin update local_t set x = 1; end $$"}) {  // on s0
    r = route_query(block, h, *cfg);
    INFO(block << ": " << (testing::refused(r) ? error_of(r).message : ""));
    CHECK_FALSE(testing::refused(r));
  }
  // A block of schema changes still runs on every shard.
  r = route_query("do $$ begin alter table accounts add column note text; end $$", h, *cfg);
  CHECK(r.ddl);
}
