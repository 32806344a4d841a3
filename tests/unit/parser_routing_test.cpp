// Parser-based routing, table-driven: statement -> shard(s) or refusal, no sockets.
#include <catch2/catch.hpp>
#include <set>

#include "config/config.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/router.hpp"
#include "route_parts.hpp"
#include "shard_map.hpp"

using namespace pgshard;
using namespace pgshard::router;
using testing::error_of;
using testing::fan_out_of;
using testing::forward_shard;
using testing::spread_shards;

namespace {
std::shared_ptr<const config::Config> map(const char* unsharded = "reject") {
  return testing::three_shards(std::string(R"(sharded_tables:
  - { table: users, column: id, type: bigint }
  - { table: orders, column: user_id, type: bigint }
  - { table: order_items, column: user_id, type: bigint }
  - { table: sessions, column: token, type: text }
  - { table: devices, column: uuid, type: uuid }
  - { table: app.tenants, column: tenant_id, type: integer }
reference_tables: [countries, public.currencies]
unsharded: )") + unsharded + "\n");
}

int shard_of(const char* key) {
  return hash_to_index(*partition_hash(config::KeyType::kInt8, key), 3);
}

// "s1" for one shard, "all" for every shard, "s0,s2" for a set, "error" for a refusal.
std::string where(const Route& r) {
  if (testing::refused(r)) return "error";
  const auto shards = spread_shards(r);
  if (shards.size() == 3) return "all";
  if (!shards.empty()) {
    std::string s;
    for (int i : shards) s += (s.empty() ? "s" : ",s") + std::to_string(i);
    return s;
  }
  return "s" + std::to_string(forward_shard(r));
}

std::string s(int i) {
  return "s" + std::to_string(i);
}
}  // namespace

TEST_CASE("keys in WHERE pick the shard PostgreSQL's hash partitioning would", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  struct Case {
    std::string sql;
    std::string want;
  };
  const std::string k1 = s(shard_of("1")), k2 = s(shard_of("2")), k3 = s(shard_of("3")),
                    k42 = s(shard_of("42")), km7 = s(shard_of("-7"));
  std::vector<Case> cases = {
      {"select * from users where id = 1", k1},
      {"SELECT * FROM users WHERE id = 2", k2},
      {"select * from users where id = 3", k3},
      {"select * from users where id = 42", k42},
      {"select * from users where id = -7", km7},
      {"select * from users where 42 = id", k42},
      {"select * from users where id = '42'", k42},
      {"select * from users where id = '42'::bigint", k42},
      {"select * from users where id = 42::int8", k42},
      {"select * from users where id = CAST(42 AS bigint)", k42},
      {"select * from public.users where id = 42", k42},
      {"select * from users u where u.id = 42", k42},
      {"select * from users as u where u.id = 42 and u.name = 'x'", k42},
      {"select * from users where name = 'x' and id = 42", k42},
      {"select * from users where id = 42 and (name = 'a' or name = 'b')", k42},
      {"select * from users where users.id = 42", k42},
      {"select name from users where id = 42 for update", k42},
      {"select count(*) from users where id = 42", k42},
      {"select * from users where id = 42 order by name limit 5", k42},
      {"select * from users where id in (42)", k42},
      {"select * from users where id = any(array[42])", k42},
      {"select * from orders where user_id = 42", k42},
      {"select * from orders o where o.user_id = 42 and o.amount > 10", k42},
      {"select * from users u join orders o on o.user_id = u.id where u.id = 42", k42},
      {"select * from users u join orders o on u.id = o.user_id where o.user_id = 42", k42},
      {"select * from users u, orders o where u.id = o.user_id and u.id = 42", k42},
      {"select * from orders o join order_items i on i.user_id = o.user_id where o.user_id = 42",
       k42},
      {"select * from users u left join orders o on o.user_id = u.id where u.id = 42", k42},
      {"update users set name = 'x' where id = 42", k42},
      {"update users set name = 'x' where id = 42 returning *", k42},
      {"delete from users where id = 42", k42},
      {"delete from orders where user_id = 42 and id = 7", k42},
      {"insert into users (id, name) values (42, 'x')", k42},
      {"insert into users (name, id) values ('x', 42)", k42},
      {"insert into users (id, name) values (42, 'x') returning id", k42},
      {"insert into users (id, name) values (42, 'x') on conflict (id) do update set name = "
       "excluded.name",
       k42},
      {"insert into users (id, name) values (42, 'a'), (42, 'b')", k42},
      {"insert into orders (id, user_id, amount) values (1, 42, 9.5)", k42},
      {"with x as (select * from users where id = 42) select * from x", k42},
      {"select * from users where id = 42; select * from orders where user_id = 42", k42},
      {"select (select count(*) from countries), name from users where id = 42", k42},
      {"select * from users u join countries c on c.code = u.country where u.id = 42", k42},
      {"SELECT * FROM Users WHERE Id = 42", k42},
      {"select * from \"users\" where \"id\" = 42", k42},
      {"select u.* from users u where u.id = 42 and exists (select 1 from countries)", k42},
      {"select * from users where id = 42 and name in ('a', 'b')", k42},
      {"select * from users where (id = 42)", k42},
      {"select * from users where id = 42 and id = 42", k42},
      {"select * from users where id = 42 or id = 42", k42},
      {"select * from users where id in (42, 42, 42)", k42},
      {"select * from users where id = 42::smallint", k42},
      {"select * from users where id = '42'::text::bigint", k42},
      {"select name from users where id = 42 limit 1", k42},
      {"select name from users where id = 42 group by name", k42},
      {"select distinct name from users where id = 42", k42},
      {"select * from users where id = 42 for share", k42},
      {"delete from users where id = 42 returning id, name", k42},
      {"update users set name = upper(name) where id = 42 and name is not null", k42},
      {"update orders set amount = amount * 2 where user_id = 42 returning *", k42},
      {"insert into orders (user_id, id, amount) values (42, 1, 1), (42, 2, 2)", k42},
      {"insert into users (id, name) values ('42', 'x')", k42},
      {"insert into users (id, name) values (42::bigint, 'x')", k42},
      {"explain select * from users where id = 42", k42},
      {"select count(*) from orders where user_id = -7", km7},
      {"select * from users where id = 1 and name = 'one'", k1},
      {"select * from users where id = 3 order by name", k3},
  };
  for (const auto& c : cases) {
    INFO(c.sql);
    CHECK(where(route_query(c.sql, h, *cfg)) == c.want);
  }
  CHECK(cases.size() >= 65);
}

TEST_CASE("keys of every supported type", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto text = s(hash_to_index(*partition_hash(config::KeyType::kText, "abc"), 3));
  CHECK(where(route_query("select * from sessions where token = 'abc'", h, *cfg)) == text);
  CHECK(where(route_query("select * from sessions where token = 'abc'::text", h, *cfg)) == text);
  CHECK(where(route_query("delete from sessions where token = 'abc'", h, *cfg)) == text);
  auto u = s(hash_to_index(
      *partition_hash(config::KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 3));
  CHECK(
      where(route_query("select * from devices where uuid = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
                        h, *cfg)) == u);
  CHECK(where(route_query(
            "select * from devices where uuid = '{a0eebc999c0b4ef8bb6d6bb9bd380a11}'::uuid", h,
            *cfg)) == u);
  auto t = s(hash_to_index(*partition_hash(config::KeyType::kInt4, "7"), 3));
  CHECK(where(route_query("select * from app.tenants where tenant_id = 7", h, *cfg)) == t);
  CHECK(where(route_query("select * from tenants where tenant_id = 7", h, *cfg)) == t);
  // int4 and int8 hash alike, as in PostgreSQL.
  CHECK(t == s(shard_of("7")));
}

TEST_CASE("IN lists, ANY arrays and ORs give the union of shards", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  std::set<int> want{shard_of("1"), shard_of("2"), shard_of("3")};
  auto set_of = [](const Route& r) {
    const auto shards = spread_shards(r);
    if (shards.empty()) return std::set<int>{forward_shard(r)};
    return std::set<int>(shards.begin(), shards.end());
  };
  for (const char* sql : {"select * from users where id in (1, 2, 3)",
                          "select * from users where id = 1 or id = 2 or id = 3",
                          "select * from users where id = any(array[1, 2, 3])",
                          "select * from users where (id = 1 or id in (2, 3)) and name <> ''",
                          "select * from users where id = any('{1,2,3}'::bigint[])"}) {
    INFO(sql);
    auto r = route_query(sql, h, *cfg);
    if (std::string(sql).find("'{1,2,3}'") != std::string::npos) {
      CHECK(where(r) == "all");  // an array literal in a string is not looked into
      continue;
    }
    CHECK(set_of(r) == want);
  }
  CHECK(where(route_query("select * from users where id = 1 or name = 'x'", h, *cfg)) == "all");
}

TEST_CASE("statements without a usable key go to every shard or are refused", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  struct Case {
    const char* sql;
    const char* want;
  };
  Case cases[] = {
      {"select * from users", "all"},
      {"select * from users where name = 'x'", "all"},
      {"select * from users where id > 42", "all"},
      {"select * from users where id <> 42", "all"},
      {"select * from users where id between 1 and 3", "all"},
      {"select * from users where id = 42 or name = 'x'", "all"},
      {"select * from users where not (id = 42)", "all"},
      {"select * from users where id = other_id", "all"},
      {"select * from users u join orders o on o.id = u.id where u.id = 42", "all"},
      {"select * from users u, orders o where u.id = 42", "all"},
      {"select * from users union select * from users", "all"},
      {"update users set name = 'x'", "all"},
      {"delete from users", "all"},
      {"delete from orders where amount < 0", "all"},
      {"update users u set name = 'x' from orders o where o.amount > 5", "error"},
      {"create index on users (name)", "all"},
      {"alter table users add column age int", "all"},
      {"drop table orders", "all"},
      {"truncate users", "all"},
      {"insert into users (id, name) values (random()::bigint, 'x')", "error"},
      {"insert into users (id, name) values ($1, 'a'), (2, 'b'), (3, 'c')", "error"},
      {"update users set id = 43 where id = 42", shard_of("43") == shard_of("42") ? "ok" : "error"},
      {"update users set id = id + 1 where id = 42", "error"},
      {"select * from users join some_local_table t on true where users.id = 42", "error"},
  };
  for (const auto& c : cases) {
    INFO(c.sql);
    auto w = where(route_query(c.sql, h, *cfg));
    if (std::string(c.want) == "ok")
      CHECK(w != "error");
    else
      CHECK(w == c.want);
  }
}

TEST_CASE("a WITH that writes a sharded table runs where its own keys say, or is refused",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  // An INSERT inside WITH would insert its rows on every shard: refused.
  CHECK(where(route_query("with x as (insert into users (id, name) values (7, 'a') returning *) "
                          "select * from x",
                          h, *cfg)) == "error");
  CHECK(where(route_query("with recursive x as (insert into users values (7, 'a') returning id) "
                          "select count(*) from x",
                          h, *cfg)) == "error");
  // A keyed UPDATE or DELETE inside WITH: its key's shard only.
  CHECK(where(route_query("with u as (update users set name = 'b' where id = 42 returning *) "
                          "select * from u",
                          h, *cfg)) == s(shard_of("42")));
  CHECK(where(route_query("with d as (delete from users where id = 42 returning id) "
                          "select id from d",
                          h, *cfg)) == s(shard_of("42")));
  // Without a key: every shard, each changing and returning its own rows.
  CHECK(where(route_query("with d as (delete from users where name = 'x' returning id) "
                          "select id from d",
                          h, *cfg)) == "all");
}

TEST_CASE("a cast that may make two keys equal is no key restriction", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  const std::string k42 = s(shard_of("42"));
  // Casts that keep keys apart still name the key's shard.
  for (const char* sql :
       {"select * from users where id::bigint = 42",
        "select * from users where id::numeric = 42::numeric",
        "select * from users where id::text = '42'", "select * from users where id = '42'::int8",
        "select * from users where id = $1::bigint"}) {
    INFO(sql);
    if (std::string_view(sql).find("$1") == std::string_view::npos)
      CHECK(where(route_query(sql, h, *cfg)) == k42);
  }
  // Lossy ones (attacker: 16777217::real = 16777216::real) read every shard.
  for (const char* sql : {"select * from users where id::real = 16777217::real",
                          "select * from users where id = 16777217::real",
                          "select * from users where id::numeric(3,-5) = 50000000",
                          "select * from users where id::bit(8) = b'00101010'",
                          "select * from sessions where token::varchar(3) = 'key'",
                          "select * from sessions where token::char(3) = 'key'",
                          "select * from users u join orders o on u.id::real = o.user_id::real "
                          "where u.id = 42"}) {
    INFO(sql);
    CHECK(where(route_query(sql, h, *cfg)) == "all");
  }
  // A write through such a cast is not placed on one shard either.
  CHECK(where(route_query("update users set name = 'x' where id::real = 16777217::real", h,
                          *cfg)) == "all");
  CHECK(where(route_query("insert into users (id, name) values (16777217::real, 'x')", h, *cfg)) ==
        "error");
}

TEST_CASE("FOR UPDATE OF a keyed table, or of its alias, stays on the key's shard",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  for (const char* sql : {"select * from users where id = 42 for update of users",
                          "select * from users where id = 42 for share of \"users\" nowait",
                          "select * from users u where u.id = 42 for update of u",
                          "select * from users u join orders o on o.user_id = u.id where u.id = 42 "
                          "for update of u, o"}) {
    INFO(sql);
    CHECK(where(route_query(sql, h, *cfg)) == s(shard_of("42")));
  }
}

TEST_CASE("multi-row INSERT across shards is split by the deparser", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query(
      "insert into users (id, name) values (1, 'a'), (2, 'b'), (3, 'c'), (42, 'd') "
      "on conflict (id) do nothing returning id",
      h, *cfg);
  REQUIRE(runs_on_shards(r));
  std::set<int> want{shard_of("1"), shard_of("2"), shard_of("3"), shard_of("42")};
  REQUIRE(fan_out_of(r).per_shard_sql.size() == want.size());
  int rows = 0;
  for (const auto& [shard, sql] : fan_out_of(r).per_shard_sql) {
    INFO(sql);
    CHECK(want.contains(shard));
    CHECK_THAT(sql, Catch::Contains("ON CONFLICT"));
    CHECK_THAT(sql, Catch::Contains("RETURNING"));
    // Each part routes, on its own, to its shard.
    auto again = route_query(sql, h, *cfg);
    CHECK(forward_shard(again) == shard);  // (one shard: nothing split)
    for (const char* k : {"(1,", "(2,", "(3,", "(42,"})
      if (sql.find(k) != std::string::npos) ++rows;
  }
  CHECK(rows == 4);
  // Keys as parameters: the Bind's values place the rows, each shard gets its rows (before:
  // refused, although README said such an INSERT is split).
  protocol::Bind b;
  std::string one = "1", two = "2";
  b.params = {std::string_view(one), std::string_view(two)};
  Context ctx;
  ctx.bind = &b;
  if (shard_of("1") != shard_of("2")) {
    auto r =
        route_extended("insert into users (id, name) values ($1, 'a'), ($2, 'b')", h, *cfg, ctx);
    CHECK(runs_on_shards(r));
    REQUIRE(fan_out_of(r).per_shard_sql.size() == 2);
    CHECK(fan_out_of(r).insert_row_shards == std::vector<int>{shard_of("1"), shard_of("2")});
    for (const auto& [shard, part] : fan_out_of(r).per_shard_sql)
      CHECK(part.find(shard == shard_of("1") ? "$1" : "$2") != std::string::npos);
  }
  // Without the Bind's values (a Parse described before any Bind) nothing is split.
  Context no_bind;
  auto unsplit =
      route_extended("insert into users (id, name) values ($1, 'a'), ($2, 'b')", h, *cfg, no_bind);
  CHECK(!std::holds_alternative<FanOut>(unsplit.action));
}

TEST_CASE("UPDATE that keeps the key on its shard is allowed", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  CHECK(where(route_query("update users set id = 42 where id = 42", h, *cfg)) == s(shard_of("42")));
  auto r = route_query("update users set id = 1 where id = 2", h, *cfg);
  if (shard_of("1") != shard_of("2")) {
    CHECK(testing::refused(r));
    CHECK(error_of(r).code == "0A000");
    CHECK_THAT(error_of(r).message, Catch::Contains("move"));
  }
}

TEST_CASE("reference tables: reads spread, writes everywhere", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  uint64_t rr = 0;
  Context ctx;
  ctx.round_robin = &rr;
  std::set<int> seen;
  for (int i = 0; i < 6; ++i)
    seen.insert(forward_shard(route_query("select * from countries", h, *cfg, ctx)));
  CHECK(seen.size() == 3);
  CHECK(where(route_query("select * from currencies c where c.code = 'EUR'", h, *cfg)) != "error");
  CHECK(where(route_query("insert into countries values ('FR')", h, *cfg)) == "all");
  CHECK(where(route_query("update public.currencies set rate = 1", h, *cfg)) == "all");
  CHECK(where(route_query("delete from countries", h, *cfg)) == "all");
  // Being on a shard already, a reference read stays there.
  ctx.attached = 2;
  CHECK(forward_shard(route_query("select * from countries", h, *cfg, ctx)) == 2);
}

TEST_CASE("no-table statements go to the client's shard or the first", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  for (const char* sql : {"select 1", "select now()", "show timezone", "begin", "commit",
                          "set timezone = 'UTC'", "select pg_sleep(0)", "listen x", ""}) {
    INFO(sql);
    auto r = route_query(sql, h, *cfg);
    CHECK(runs_on_shards(r));
    CHECK(forward_shard(r) == 0);
    CHECK(spread_shards(r).empty());
    Context ctx;
    ctx.attached = 1;
    CHECK(forward_shard(route_query(sql, h, *cfg, ctx)) == 1);
  }
}

TEST_CASE("the unsharded policy decides for tables outside the map", "[router][parser]") {
  SessionHints h;
  auto r = route_query("select * from accounts", h, *map("reject"));
  CHECK(testing::refused(r));
  CHECK(error_of(r).code == "0A000");
  CHECK_THAT(error_of(r).message, Catch::Contains("not in pgshard's shard map"));
  // all: every shard keeps a copy, as of a reference table: reads one, writes every one.
  {
    auto all = map("all");
    uint64_t turn = 0;
    Context ctx;
    ctx.round_robin = &turn;
    std::set<int> seen;
    for (int i = 0; i < 3; ++i) {
      auto read = route_query("select count(*) from accounts", h, *all, ctx);
      CHECK(spread_shards(read).empty());
      seen.insert(forward_shard(read));
    }
    CHECK(seen.size() == 3);
    CHECK(spread_shards(route_query("copy accounts to stdout", h, *all)).empty());
    for (const char* write : {"insert into accounts values (1), (2)", "update accounts set a = 1",
                              "delete from accounts", "select * from accounts for update",
                              "with x as (insert into accounts values (1) returning *) "
                              "select * from x"}) {
      INFO(write);
      auto r = route_query(write, h, *all);
      CHECK(where(r) == "all");
      CHECK(fan_out_of(r).replicated);
      CHECK(std::string(to_string(action(r))) == "fan-out");
    }
    auto copy = route_query("copy accounts from stdin (format binary)", h, *all);
    CHECK(std::string(to_string(action(copy))) == "COPY in");
    CHECK(where(copy) == "all");
    CHECK(testing::copy_in_of(copy).split.replicate);
    CHECK(testing::copy_in_of(copy).table == -1);
    // Another policy never splits or copies a COPY.
    CHECK(where(route_query("copy accounts from stdin", h, *map("{ shard: s1 }"))) == "s1");
    CHECK(!std::holds_alternative<CopyIn>(
        route_query("copy accounts from stdin", h, *map("{ shard: s1 }")).action));
  }
  CHECK(where(route_query("select * from accounts", h, *map("{ shard: s2 }"))) == "s2");
  CHECK(where(route_query("insert into accounts values (1)", h, *map("{ shard: s1 }"))) == "s1");
  // A hint overrides the policy.
  CHECK(where(route_query("/* pgshard: shard=s1 */ select * from accounts", h, *map("reject"))) ==
        "s1");
  // Statements that do not parse reach PostgreSQL, which reports the syntax error.
  CHECK(runs_on_shards(route_query("selec * from users", h, *map("reject"))));
}

TEST_CASE("hints beat the parser", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  int other = (shard_of("42") + 1) % 3;
  CHECK(forward_shard(route_query(
            "/* pgshard: shard=" + s(other) + " */ select * from users where id = 42", h, *cfg)) ==
        other);
  h.session.shard = s(other);
  CHECK(forward_shard(route_query("select * from users where id = 42", h, *cfg)) == other);
  h = {};
  h.session.sharding_key = "42";
  CHECK(forward_shard(route_query("select * from users", h, *cfg)) == shard_of("42"));
  CHECK(spread_shards(route_query("select * from users", h, *cfg)).empty());
}

TEST_CASE("a session's remembered statement routes each Bind by its own key", "[router][parser]") {
  // StatementMemo keeps the analysis of the text routed last, never its route: each Bind
  // of the same text goes where its own key says, and a text with pgshard words is not
  // remembered (its hints apply on every Bind).
  auto cfg = map();
  SessionHints h;
  StatementMemo memo;
  Context ctx;
  ctx.memo = &memo;
  protocol::Bind b;
  ctx.bind = &b;
  const std::string sql = "select * from users where id = $1";
  for (const char* key : {"1", "2", "3", "42", "1"}) {
    b.params = {std::string_view(key)};
    CHECK(forward_shard(route_extended(sql, h, *cfg, ctx)) == shard_of(key));
    CHECK(memo.sql == sql);
  }
  // A session hint still places a remembered statement.
  const int other = (shard_of("42") + 1) % 3;
  h.session.shard = s(other);
  b.params = {std::string_view("42")};
  CHECK(forward_shard(route_extended(sql, h, *cfg, ctx)) == other);
  h = {};
  // A comment hint: not remembered, and the hint holds on every Bind.
  const std::string hinted = "/* pgshard: shard=" + s(other) + " */ " + sql;
  for (int i = 0; i < 2; ++i) {
    CHECK(forward_shard(route_extended(hinted, h, *cfg, ctx)) == other);
    CHECK(memo.sql == sql);
  }
  // A SET pgshard.* text is applied each time it is bound.
  auto r = route_extended("set pgshard.sharding_key = '42'", h, *cfg, ctx);
  CHECK(r.hints.session.sharding_key == "42");
  CHECK(memo.sql == sql);
  // Another configuration (a reload) analyses the text again under its own map.
  auto one = map();
  b.params = {std::string_view("42")};
  CHECK(forward_shard(route_extended(sql, h, *one, ctx)) == shard_of("42"));
  CHECK(memo.cfg == one.get());
}

TEST_CASE("Bind parameters carry the key, text and binary", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  Context ctx;
  protocol::Bind b;
  std::string v = "42";
  b.params = {std::string_view(v)};
  ctx.bind = &b;
  CHECK(forward_shard(route_extended("select * from users where id = $1", h, *cfg, ctx)) ==
        shard_of("42"));
  CHECK(forward_shard(route_extended("select * from users where id = $1::bigint", h, *cfg, ctx)) ==
        shard_of("42"));
  CHECK(forward_shard(route_extended("insert into users (id, name) values ($1, 'x')", h, *cfg,
                                     ctx)) == shard_of("42"));
  // Binary int8, int4, int2.
  std::string i8("\0\0\0\0\0\0\0\x2a", 8), i4("\0\0\0\x2a", 4), i2("\0\x2a", 2);
  for (const auto* raw : {&i8, &i4, &i2}) {
    b.params = {std::string_view(*raw)};
    b.param_formats = {1};
    CHECK(forward_shard(route_extended("select * from users where id = $1", h, *cfg, ctx)) ==
          shard_of("42"));
  }
  // Negative binary int8.
  std::string neg("\xff\xff\xff\xff\xff\xff\xff\xf9", 8);
  b.params = {std::string_view(neg)};
  CHECK(forward_shard(route_extended("select * from users where id = $1", h, *cfg, ctx)) ==
        shard_of("-7"));
  // Binary uuid.
  std::string u("\xa0\xee\xbc\x99\x9c\x0b\x4e\xf8\xbb\x6d\x6b\xb9\xbd\x38\x0a\x11", 16);
  b.params = {std::string_view(u)};
  CHECK(forward_shard(route_extended("select * from devices where uuid = $1", h, *cfg, ctx)) ==
        hash_to_index(
            *partition_hash(config::KeyType::kUuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"), 3));
  // Text keys.
  b.param_formats = {};
  std::string tok = "abc";
  b.params = {std::string_view(tok)};
  CHECK(forward_shard(route_extended("select * from sessions where token = $1", h, *cfg, ctx)) ==
        hash_to_index(*partition_hash(config::KeyType::kText, "abc"), 3));
  // Second parameter is the key.
  std::string name = "x";
  b.params = {std::string_view(name), std::string_view(v)};
  CHECK(forward_shard(route_extended("select * from users where name = $1 and id = $2", h, *cfg,
                                     ctx)) == shard_of("42"));
  // Array parameter, text form.
  std::string arr = "{1,2,3}";
  b.params = {std::string_view(arr)};
  auto r = route_extended("select * from users where id = any($1)", h, *cfg, ctx);
  const auto shards = spread_shards(r);
  std::set<int> got(shards.begin(), shards.end());
  if (got.empty()) got.insert(forward_shard(r));
  CHECK(got == std::set<int>{shard_of("1"), shard_of("2"), shard_of("3")});
  // Without a Bind (Describe only) any shard describes it.
  CHECK(runs_on_shards(route_extended("select * from users where id = $1", h, *cfg)));
}

TEST_CASE("binary array parameters decode", "[router][parser]") {
  protocol::Bind b;
  // ndim 1, no nulls, int8 oid 20, dim 2 lbound 1, elements 5 and 6.
  std::string a(
      "\0\0\0\x01\0\0\0\0\0\0\0\x14\0\0\0\x02\0\0\0\x01"
      "\0\0\0\x08\0\0\0\0\0\0\0\x05\0\0\0\x08\0\0\0\0\0\0\0\x06",
      44);
  b.params = {std::string_view(a)};
  b.param_formats = {1};
  auto v = array_param(b, 1, config::KeyType::kInt8);
  REQUIRE(v);
  CHECK(*v == std::vector<std::string>{"5", "6"});
  std::string t = R"({"7", 8 ,NULL})";
  b.params = {std::string_view(t)};
  b.param_formats = {};
  v = array_param(b, 1, config::KeyType::kInt8);
  REQUIRE(v);
  CHECK(*v == std::vector<std::string>{"7", "8"});
}

TEST_CASE("multi-shard reads say whether rows can simply be concatenated", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  CHECK(fan_out_of(route_query("select * from users", h, *cfg)).concat_safe);
  CHECK(fan_out_of(route_query("select id from users where name like 'a%'", h, *cfg)).concat_safe);
  // Merged by pgshard: a plan, no blocker.
  for (const char* sql :
       {"select * from users order by id", "select * from users limit 3",
        "select count(*) from users", "select name, max(id) from users group by name",
        "select distinct name from users"}) {
    INFO(sql);
    const auto route = route_query(sql, h, *cfg);
    const auto& r = fan_out_of(route);
    CHECK_FALSE(r.concat_safe);
    CHECK(r.merge_blocker.empty());
    REQUIRE(r.merge);
    CHECK(r.merge->needs_merge());
  }
  // Refused across shards, with the construct named.
  for (const char* sql :
       {"select sum(id) over () from users", "select * from users union select * from users",
        "select * from orders o join users u using (id) where o.user_id = 42 and u.id = 42",
        "select * from users where id in (select user_id from orders where amount > 5)",
        "select * from users u, orders o", "select count(distinct name) from users",
        "select sum(id) * 2 from users", "select * from users order by random()",
        "select string_agg(name, ',') from users", "select * from users limit 1 + 1",
        "select name, count(*) from users group by rollup (name)"}) {
    INFO(sql);
    const auto route = route_query(sql, h, *cfg);
    const auto& r = fan_out_of(route);
    CHECK_FALSE(r.concat_safe);
    CHECK_FALSE(r.merge_blocker.empty());
  }
}

TEST_CASE("joins not on both shard keys are refused whatever would merge them",
          "[router][parser]") {
  // Aggregates, ORDER BY or DISTINCT on top must not turn a per-shard join into an answer.
  auto cfg = map();
  SessionHints h;
  for (const char* sql :
       {"select count(*) from orders o join users u on u.id = o.id",
        "select count(*) from users u1 join users u2 on u1.name = u2.name",
        "select count(*) from orders o where o.id in (select id from users)",
        "select count(*) from users u where exists (select 1 from orders o where o.id = u.id)",
        "select count(*) from orders o, users u where u.id = o.id",
        "select distinct o.id from orders o join users u on u.id = o.id order by 1"}) {
    INFO(sql);
    const auto route = route_query(sql, h, *cfg);
    const auto& r = fan_out_of(route);
    CHECK(r.merge == nullptr);
    CHECK_FALSE(r.concat_safe);
    CHECK_THAT(r.merge_blocker, Catch::StartsWith("joining sharded tables (") &&
                                    Catch::Contains("users") &&
                                    Catch::Contains("other than on their shard keys"));
  }
  // Co-located: merged.
  const auto route =
      route_query("select count(*) from orders o join users u on u.id = o.user_id", h, *cfg);
  const auto& r = fan_out_of(route);
  CHECK(r.merge_blocker.empty());
  CHECK(r.merge);
}

TEST_CASE("merge plans rewrite what each shard computes", "[router][merge]") {
  auto cfg = map();
  auto plan = [&](const char* sql) {
    auto a = analyze_statement(sql, *cfg);
    REQUIRE(a.merge);
    return a.merge;
  };
  SECTION("ORDER BY keys outside the select list become hidden columns") {
    auto p = plan("select name from users order by id desc nulls last, 1");
    CHECK(p->shard_sql == "SELECT name, id FROM users ORDER BY id DESC NULLS LAST, 1");
    CHECK(p->hidden == 1);
    REQUIRE(p->order.size() == 2);
    CHECK(p->order[0].column == -1);
    CHECK(p->order[0].descending);
    CHECK_FALSE(p->order[0].nulls_first);
    CHECK(p->order[1].column == 0);
    CHECK_FALSE(p->order[1].descending);
  }
  SECTION("DESC puts NULLs first unless told otherwise") {
    auto p = plan("select id, name from users order by name desc");
    CHECK(p->shard_sql.empty());
    CHECK(p->order.at(0).column == 1);
    CHECK(p->order.at(0).nulls_first);
  }
  SECTION("LIMIT and OFFSET: shards return LIMIT + OFFSET rows") {
    auto p = plan("select * from users order by id limit 10 offset 5");
    CHECK(p->shard_sql == "SELECT *, id FROM users ORDER BY id LIMIT 15");
    CHECK(p->limit.value == 10);
    CHECK(p->offset.value == 5);
    auto q = plan("select * from users limit $1 offset $2");
    CHECK(q->shard_sql == "SELECT * FROM users LIMIT ($1::bigint + $2::bigint)");
    CHECK(q->limit.param == 1);
    CHECK(q->offset.param == 2);
  }
  SECTION("avg becomes sum and count; HAVING and ORDER BY move to pgshard") {
    auto p = plan(
        "select name, avg(id) as a, count(*) from users group by name having sum(id) > 10 "
        "order by 2 desc limit 3");
    CHECK(p->shard_sql ==
          "SELECT name, sum(id) AS a, count(*), count(id), sum(id) FROM users GROUP BY name");
    CHECK(p->aggregate);
    CHECK(p->hidden == 2);
    CHECK(p->group_columns == std::vector<int>{0});
    REQUIRE(p->aggregates.size() == 3);
    CHECK(p->aggregates[0].kind == pgshard::merge::Aggregate::Kind::kAvg);
    CHECK(p->aggregates[0].count_column == 3);
    CHECK(p->having);
    CHECK(p->limit.value == 3);
  }
  SECTION("count(DISTINCT shard key) adds up per shard") {
    auto p = plan("select count(distinct id) from users");
    CHECK(p->unsupported.empty());
  }
  SECTION("GROUP BY expressions not selected are hidden group keys") {
    auto p = plan("select count(*) from users group by name");
    CHECK(p->shard_sql == "SELECT count(*), name FROM users GROUP BY name");
    CHECK(p->group_columns == std::vector<int>{1});
  }
}

TEST_CASE("the analysis cache returns the same analysis and stays bounded", "[router][parser]") {
  auto cfg = map();
  AnalysisCache cache(2, cfg.get());
  auto a = cache.get("select * from users where id = 1", *cfg);
  auto b = cache.get("select * from users where id = 1", *cfg);
  CHECK(a == b);
  CHECK(cache.hits() == 1);
  cache.get("select 2 as a", *cfg);
  cache.get("select 3 as b", *cfg);
  CHECK(cache.size() == 2);
  auto c = cache.get("select * from users where id = 1", *cfg);
  CHECK(c != a);  // evicted and analysed again
}

TEST_CASE("statements without sharded tables share a cache entry across literals",
          "[router][parser]") {
  auto cfg = map("{ shard: s1 }");
  AnalysisCache cache(100, cfg.get());
  auto a = cache.get("select abalance from accounts where aid = 5", *cfg);
  auto b = cache.get("select abalance from accounts where aid = 123456", *cfg);
  CHECK(a == b);
  auto c = cache.get("select abalance from accounts where note = 'it''s'", *cfg);
  auto d = cache.get("select abalance from accounts where note = 'x'", *cfg);
  CHECK(c == d);
  CHECK(cache.size() == 2);
  // Keys of sharded tables are literals that matter: never shared.
  auto e = cache.get("select * from users where id = 1", *cfg);
  auto f = cache.get("select * from users where id = 2", *cfg);
  CHECK(e != f);
  CHECK(e->keys[0].literal == "1");
  CHECK(f->keys[0].literal == "2");
  // Identifiers with digits are not literals.
  auto g = cache.get("select * from t1", *cfg);
  auto h = cache.get("select * from t2", *cfg);
  CHECK(g != h);
  SessionHints hints;
  Context ctx;
  ctx.cache = &cache;
  CHECK(forward_shard(
            route_query("select abalance from accounts where aid = 77", hints, *cfg, ctx)) == 1);
}

TEST_CASE("statements of one shape share its analysis with their own literals",
          "[router][parser]") {
  auto cfg = map();
  // Each pair is one shape with two sets of literals: the second is answered from the
  // shape the first taught the cache, and must analyse exactly as on its own.
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"select * from users where id = 1", "select * from users where id = 2"},
      {"select * from users where id = '12'", "select * from users where id = '34'"},
      {"select * from users where id = 5.0", "select * from users where id = 7.0"},
      {"select * from users where id = -5", "select * from users where id = -6"},
      {"select * from users where id in (1, 2, 3)", "select * from users where id in (4, 5, 6)"},
      {"select * from users where id in (1, 2) order by 1",
       "select * from users where id in "
       "(4, 5) order by 1"},
      {"select * from users where id = 1 limit 1", "select * from users where id = 2 limit 9"},
      {"select * from users where id = 1 and name = 'it''s'",
       "select * from users where id = 2 and name = 'x'"},
      {"select \"1x\" from users where id = 4 -- 5\n",
       "select \"1x\" from users where id = 6 -- 7\n"},
      {"/* pgshard: shard=s1 */ select * from users where id = 8",
       "/* pgshard: shard=s1 */ select * from users where id = 9"},
      {"select * from sessions where token = 'abc'", "select * from sessions where token = 'a''b'"},
      {"insert into users (id, name) values (1, 'a'), (2, 'b')",
       "insert into users (id, name) values (3, 'c'), (4, 'd')"},
      {"update users set name = 'x' where id = 3", "update users set name = 'y' where id = 4"},
      {"update users set id = 5 where id = 3", "update users set id = 6 where id = 4"},
      {"delete from orders where user_id = 10", "delete from orders where user_id = 11"},
      {"select count(*) from orders where user_id = 1 group by 1",
       "select count(*) from orders where user_id = 2 group by 1"},
      {"select * from users u join orders o on o.user_id = u.id where u.id = 1",
       "select * from users u join orders o on o.user_id = u.id where u.id = 2"},
      {"select * from users where id = 1; select * from users where id = 2",
       "select * from users where id = 3; select * from users where id = 4"},
      {"select date '2020-01-01', * from users where id = 1",
       "select date '2021-01-01', * from users where id = 2"},
      {"select 1::numeric(10, 2) from users where id = 1",
       "select 1::numeric(10, 2) from users where id = 2"},
      {"select * from users where id = 1 or id = 2", "select * from users where id = 3 or id = 4"},
      {"select * from users where id = 1e3", "select * from users where id = 2e3"},
      {"select * from users where id in (1, 2, 3) order by id limit 2",
       "select * from users where id in (4, 5, 6) order by id limit 5 offset 1"},
      {"select * from users where id in (1, 2) limit 1 offset 2",
       "select * from users where id in (3, 4) limit 2 offset 0"},
      {"select name, count(*) from users where id in (1, 2) group by name having count(*) > 1",
       "select name, count(*) from users where id in (3, 4) group by name having count(*) > 7"},
      // A sharded table's name only inside a literal: the shape is learned as one naming
      // it, and must still answer a statement of that shape that does not.
      {"select 'users'", "select 'x'"},
      {"select 1, 'orders' from pg_class", "select 2, 'y' from pg_class"},
      {"set application_name = 'users'", "set application_name = 'z'"},
      {"select set_config('application_name', 'users', false)",
       "select set_config('application_name', 'z', false)"},
  };
  for (const auto& [first, second] : pairs) {
    INFO(first << " | " << second);
    AnalysisCache cache(100, cfg.get());
    cache.get(first, *cfg);
    auto got = cache.get(second, *cfg);
    auto own = analyze_statement(second, *cfg);
    CHECK(got->target == own.target);
    CHECK(got->keys == own.keys);
    CHECK(got->new_key == own.new_key);
    CHECK(got->insert == own.insert);
    CHECK(got->statements == own.statements);
    CHECK(got->concat_safe == own.concat_safe);
    CHECK(got->merge_blocker == own.merge_blocker);
    CHECK(got->error == own.error);
    REQUIRE(got->settings.size() == own.settings.size());
    for (std::size_t i = 0; i < own.settings.size(); ++i) {
      CHECK(got->settings[i].name == own.settings[i].name);
      CHECK(got->settings[i].value == own.settings[i].value);
    }
    CHECK(got->pins == own.pins);
    CHECK(got->user_functions == own.user_functions);
    CHECK(bool(got->merge) == bool(own.merge));
    if (got->merge && own.merge) CHECK(got->merge->describe() == own.merge->describe());
    if (got->merge && own.merge) CHECK(got->merge->shard_sql == own.merge->shard_sql);
  }
  // The shape is analysed once, then shared: no parse for the second, third... statement.
  AnalysisCache cache(100, cfg.get());
  cache.get("select abalance from users where id = 1", *cfg);
  const auto misses = cache.misses();
  for (int i = 2; i < 50; ++i)
    CHECK(cache.get("select abalance from users where id = " + std::to_string(i), *cfg)
              ->keys[0]
              .literal == std::to_string(i));
  CHECK(cache.misses() == misses);
  // LIMIT and OFFSET literals too: each statement gets its own bounds.
  cache.get("select id, name from users where id in (1, 2) order by id limit 1", *cfg);
  const auto limit_misses = cache.misses();
  for (int i = 2; i < 20; ++i) {
    auto a = cache.get(
        "select id, name from users where id in (1, 2) order by id limit " + std::to_string(i),
        *cfg);
    REQUIRE(a->merge);
    CHECK(a->merge->limit.value == std::optional<int64_t>(i));
  }
  CHECK(cache.misses() == limit_misses);
  // Text it does not rewrite is still analysed correctly, one statement at a time.
  for (const char* sql : {"select * from users where id = 1 and name = E'a\\'b'",
                          "select * from users where id = $$1$$::bigint"}) {
    INFO(sql);
    CHECK(cache.get(sql, *cfg)->target == analyze_statement(sql, *cfg).target);
  }
}

TEST_CASE("a shape's literals are found wherever they fall in the text", "[router][parser]") {
  // The scan for where literals may start reads sixteen bytes at a time: literals, quotes
  // and characters near them in the byte order ( ( ) * + , # and bytes above 0x7f) are put
  // at every position of a block.
  auto cfg = map();
  for (std::size_t pad = 0; pad < 40; ++pad) {
    const std::string head = "select id" + std::string(pad, ' ') +
                             ", (1+2)*3 as \"\xc3\xa9#(x)\", 'a''b' from users where id = ";
    for (const std::string tail : {"", " and name <> 'x\\y'", " -- 9\n"}) {
      INFO("pad " << pad << " tail " << tail);
      AnalysisCache cache(100, cfg.get());
      cache.get(head + "41" + tail, *cfg);
      const auto misses = cache.misses();
      const auto got = cache.get(head + "42" + tail, *cfg);
      CHECK(cache.misses() == misses);  // the shape's analysis, not a parse
      const auto own = analyze_statement(head + "42" + tail, *cfg);
      CHECK(got->target == own.target);
      CHECK(got->keys == own.keys);
      REQUIRE(own.keys.size() == 1);
      CHECK(own.keys[0].literal == "42");
    }
  }
}

TEST_CASE("a repeated shape refills its last analysis only when nobody holds it",
          "[router][parser]") {
  auto cfg = map();
  // Each template is one shape; its statements differ in their literals only.
  const std::vector<std::string> templates = {
      "select * from users where id = #1",
      "select * from users where id in (#1, #2) and name = 'n#1'",
      "update users set id = #2 where id = #1",
      "insert into users (id, name) values (#1, 'a'), (#2, 'b')",
      "insert into users values (#1, 'a')",
      "select id from users where id in (#1, #2) order by id limit #2",
  };
  auto text = [](std::string t, int i) {
    for (auto [mark, v] : {std::pair{"#1", i}, {"#2", i + 1}})
      for (auto at = t.find(mark); at != std::string::npos; at = t.find(mark))
        t.replace(at, 2, std::to_string(v));
    return t;
  };
  for (const auto& t : templates) {
    INFO(t);
    AnalysisCache cache(100, cfg.get());
    cache.get(text(t, 1), *cfg);               // learns the shape
    auto held = cache.get(text(t, 10), *cfg);  // kept by its caller across the others
    const auto held_keys = held->keys;
    std::weak_ptr<const Analysis> last;
    const bool own_plan = t.find("limit") != std::string::npos;  // LIMIT literals: built anew
    for (int i = 20; i < 30; ++i) {
      const auto sql = text(t, i);
      // Dropped after routing, the last statement's analysis is kept to be filled again.
      const auto* before = last.lock().get();
      if (i > 20 && !own_plan) CHECK(before);
      auto got = cache.get(sql, *cfg);
      if (before && !own_plan) CHECK(got.get() == before);
      auto own = analyze_statement(sql, *cfg);
      CHECK(got->target == own.target);
      CHECK(got->keys == own.keys);
      CHECK(got->new_key == own.new_key);
      CHECK(got->positional == own.positional);
      CHECK(bool(got->merge) == bool(own.merge));
      if (got->merge && own.merge) CHECK(got->merge->describe() == own.merge->describe());
      CHECK(got != held);
      last = got;
    }
    CHECK(held->keys == held_keys);  // never changed under its holder
  }
}

TEST_CASE("router.parse: false routes by hints only", "[router][parser]") {
  auto cfg = config::load_string(R"(users: [{name: app, password: x}]
shards: [{ name: s0, primary: "postgres://h:1/app" }, { name: s1, primary: "postgres://h:2/app" }]
sharded_tables: [{ table: users, column: id }]
router: { parse: false }
)",
                                 "t.yaml");
  SessionHints h;
  CHECK(forward_shard(route_query("select * from users where id = 3", h, *cfg)) == 0);
  CHECK(spread_shards(route_query("select * from users", h, *cfg)).empty());
  CHECK(forward_shard(route_query("/* pgshard: shard=s1 */ select * from users", h, *cfg)) == 1);
}

TEST_CASE("keys that cannot be read are never guessed", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  Context ctx;
  protocol::Bind b;
  ctx.bind = &b;
  b.param_formats = {1};
  // Binary numeric 42 (ndigits 1, weight 0, sign +, dscale 0, digit 42) routes like 42.
  std::string num42("\0\x01\0\0\0\0\0\0\0\x2a", 10);
  b.params = {std::string_view(num42)};
  CHECK(forward_shard(route_extended("select * from users where id = $1", h, *cfg, ctx)) ==
        shard_of("42"));
  // Binary numeric 10000 (weight 1, digits 1, 0 -> stored as ndigits 1 weight 1 digit 1).
  std::string num10k("\0\x01\0\x01\0\0\0\0\0\x01", 10);
  b.params = {std::string_view(num10k)};
  CHECK(forward_shard(route_extended("select * from users where id = $1", h, *cfg, ctx)) ==
        shard_of("10000"));
  // An unreadable binary key: reads go everywhere, writes are refused.
  std::string odd("\x01\x02\x03", 3);
  b.params = {std::string_view(odd)};
  CHECK(where(route_extended("select * from users where id = $1", h, *cfg, ctx)) == "all");
  auto w = route_extended("delete from users where id = $1", h, *cfg, ctx);
  CHECK(testing::refused(w));
  CHECK_THAT(error_of(w).message, Catch::Contains("parameter $1"));
  // NULL matches nothing: any one shard answers.
  b.params = {std::nullopt};
  CHECK(spread_shards(route_extended("select * from users where id = $1", h, *cfg, ctx)).empty());
  // 42.0 equals 42 for an integer key.
  CHECK(forward_shard(route_query("select * from users where id = 42.0", h, *cfg)) ==
        shard_of("42"));
  CHECK(forward_shard(route_query("select * from users where id = '42'", h, *cfg)) ==
        shard_of("42"));
}

TEST_CASE("COPY into a reference table copies every row to every shard", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  for (const char* sql : {"copy countries from stdin",
                          "copy public.currencies (code) from stdin "
                          "with (format csv, header)",
                          "copy countries from stdin with binary"}) {
    INFO(sql);
    auto r = route_query(sql, h, *cfg);
    CHECK(std::string(to_string(action(r))) == "COPY in");
    CHECK(where(r) == "all");
    CHECK(testing::copy_in_of(r).split.replicate);
  }
  // A server-side file: every shard reads its own, as any write to a reference table.
  auto file = route_query("copy countries from '/tmp/c.csv'", h, *cfg);
  CHECK(where(file) == "all");
  CHECK(fan_out_of(file).replicated);  // (not a CopyIn)
  // Reading a reference table: one shard.
  CHECK(spread_shards(route_query("copy countries to stdout", h, *cfg)).empty());
}

TEST_CASE("COPY TO over several shards knows whether it has a header line", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  for (const char* sql :
       {"copy users to stdout (format csv, header)", "copy users to stdout with csv header",
        "copy users to stdout (format csv, header true)", "copy users to stdout (header on)",
        "copy users to stdout (format csv, HEADER 1)", "copy users to stdout (header 'TRUE')",
        "copy (select * from users) to stdout with (format csv, header)",
        "copy (select id from users) to stdout csv header delimiter ';'"}) {
    INFO(sql);
    auto r = route_query(sql, h, *cfg);
    CHECK(where(r) == "all");
    CHECK(fan_out_of(r).copy_out_header);
  }
  for (const char* sql :
       {"copy users to stdout", "copy users to stdout (format csv)",
        "copy users to stdout (format csv, header false)",
        "copy users to stdout (format csv, header 0)", "copy users to stdout (header off)",
        "copy users to stdout with binary"}) {
    INFO(sql);
    CHECK_FALSE(fan_out_of(route_query(sql, h, *cfg)).copy_out_header);
  }
}

TEST_CASE("every route is one action of a closed set", "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto act = [&](const char* sql) { return to_string(action(route_query(sql, h, *cfg))); };
  CHECK(std::string(act("select * from users where id = 42")) == "forward");
  CHECK(std::string(act("select * from users")) == "fan-out");
  CHECK(std::string(act("update users set name = 'x'")) == "fan-out");
  CHECK(std::string(act("create index on users (name)")) == "DDL");
  CHECK(std::string(act("copy users from stdin")) == "COPY in");
  CHECK(std::string(act("show pgshard.shard")) == "answer");
  CHECK(std::string(act("select * from nowhere_known")) == "refuse");
  Route lookup;
  lookup.action = Lookup{};
  CHECK(std::string(to_string(action(lookup))) == "lookup");
}

TEST_CASE("INSERT without a column list takes the key from the table's column order",
          "[router][parser]") {
  // Before: refused ("needs a column list").
  auto cfg = map();
  SessionHints h;
  std::atomic<uint64_t> catalog_generation{0};
  ColumnCache columns(catalog_generation);
  Context ctx;
  ctx.columns = &columns;
  // The order is not known yet: the session is asked to read it from the catalog.
  auto r = route_query("insert into users values (42, 'x')", h, *cfg, ctx);
  CHECK(testing::lookup_of(r).columns == std::vector<int>{0});
  columns.put("users", 0);
  CHECK(where(route_query("insert into users values (42, 'x')", h, *cfg, ctx)) ==
        s(shard_of("42")));
  CHECK(where(route_query("INSERT INTO users VALUES (7, 'y') RETURNING *", h, *cfg, ctx)) ==
        s(shard_of("7")));
  // The key is wherever the catalog says (here the second column).
  columns.put("users", 1);
  CHECK(where(route_query("insert into users values ('x', 42)", h, *cfg, ctx)) ==
        s(shard_of("42")));
  CHECK(where(route_query("insert into users values ('x', 42), ('y', 42)", h, *cfg, ctx)) ==
        s(shard_of("42")));
  // Extended protocol: the key from its Bind parameter.
  protocol::Bind b;
  std::string v = "42";
  b.params = {std::string_view("name"), std::string_view(v)};
  Context with_bind = ctx;
  with_bind.bind = &b;
  CHECK(where(route_extended("insert into users values ($1, $2)", h, *cfg, with_bind)) ==
        s(shard_of("42")));
  // Rows for several shards are split, one INSERT per shard.
  auto split =
      route_query("insert into users values ('a', 1), ('b', 2), ('c', 3), ('d', 42)", h, *cfg, ctx);
  REQUIRE(runs_on_shards(split));
  std::set<int> want = {shard_of("1"), shard_of("2"), shard_of("3"), shard_of("42")};
  const auto split_shards = spread_shards(split);
  CHECK(std::set<int>(split_shards.begin(), split_shards.end()) == want);
  // A row without the key, or a key that is an expression: refused, never guessed.
  CHECK(where(route_query("insert into users values ('x')", h, *cfg, ctx)) == "error");
  CHECK(where(route_query("insert into users values ('x', random()::bigint)", h, *cfg, ctx)) ==
        "error");
  // No such table: any shard, where PostgreSQL reports it.
  columns.put("orders", -1);
  CHECK(runs_on_shards(route_query("insert into orders values (1, 2)", h, *cfg, ctx)));
  // A schema change through pgshard forgets every position.
  catalog_generation++;
  CHECK(std::holds_alternative<Lookup>(
      route_query("insert into users values ('x', 42)", h, *cfg, ctx).action));
}

TEST_CASE("INSERT leaving the key to its default asks for generated keys", "[router][parser]") {
  // Before: refused ("must set its shard key").
  auto cfg = map();
  SessionHints h;
  auto r = route_query("insert into users (name) values ('x'), ('y') returning id", h, *cfg);
  CHECK(testing::generate_of(r).table == 0);
  CHECK(testing::generate_of(r).count == 2);
  r = route_query("insert into users (id, name) values (default, 'x'), (5, 'y')", h, *cfg);
  CHECK(testing::generate_of(r).count == 1);
  // Only described (a driver preparing): nothing runs, no key is generated.
  Context describe;
  describe.describe_only = true;
  CHECK(runs_on_shards(route_extended("insert into users (name) values ($1)", h, *cfg, describe)));
  CHECK(where(route_query("update users set id = default where id = 1", h, *cfg)) == "error");
  // nextval and friends go to the sequences' home (the first shard), wherever the client is.
  Context attached;
  attached.attached = 2;
  CHECK(where(route_query("select nextval('users_id_seq')", h, *cfg, attached)) == "s0");
  CHECK(where(route_query("select setval('users_id_seq', 10)", h, *cfg, attached)) == "s0");
  CHECK(where(route_query("select 1", h, *cfg, attached)) == "s2");

  // The keys put in: a column added with a value in every row, or DEFAULT replaced.
  auto sql = with_generated_keys("insert into users (name) values ('x'), ('y') returning id", "id",
                                 -1, {"7", "8"});
  REQUIRE(sql);
  CHECK_THAT(*sql, Catch::Contains("(name, id)"));
  CHECK_THAT(*sql, Catch::Contains("('x', '7'), ('y', '8')"));
  CHECK_THAT(*sql, Catch::Contains("RETURNING id"));
  auto split = route_query(*sql, h, *cfg);
  REQUIRE(runs_on_shards(split));
  if (shard_of("7") == shard_of("8"))
    CHECK(where(split) == s(shard_of("7")));
  else
    CHECK(spread_shards(split).size() == 2);
  sql = with_generated_keys("insert into users (id, name) values (default, 'x'), (5, 'y')", "id",
                            -1, {"9"});
  REQUIRE(sql);
  CHECK_THAT(*sql, Catch::Contains("('9', 'x'), (5, 'y')"));
  sql = with_generated_keys("insert into users values (default, 'x')", "id", 0, {"10"});
  REQUIRE(sql);
  CHECK_THAT(*sql, Catch::Contains("VALUES ('10', 'x')"));
  // Values that do not match the rows, or no column list without the key's place: nothing.
  CHECK_FALSE(with_generated_keys("insert into users (name) values ('x')", "id", -1, {"1", "2"}));
  CHECK_FALSE(with_generated_keys("insert into users values (default, 'x')", "id", -1, {"1"}));
  CHECK_FALSE(with_generated_keys("select 1", "id", -1, {"1"}));
}

TEST_CASE("pgshard.unique_id() calls are routed after pgshard puts its ids in",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  // Run: a lookup (the session puts ids in, then routes again); described only: any shard.
  auto r = route_query("insert into users (id, name) values (pgshard.unique_id(), 'x')", h, *cfg);
  CHECK(std::holds_alternative<UniqueIds>(r.action));
  Context describe;
  describe.describe_only = true;
  r = route_extended("insert into users (id, name) values (pgshard.unique_id(), $1)", h, *cfg,
                     describe);
  CHECK(runs_on_shards(r));
  CHECK(r.names_unique_id);
  // A column default in a schema change stays a call; the shards need it declared.
  r = route_query("create table items (id bigint default pgshard.unique_id())", h, *cfg);
  CHECK(runs_on_shards(r));
  CHECK(r.names_unique_id);
  CHECK_FALSE(std::holds_alternative<UniqueIds>(r.action));
  // Where one call could serve several rows (one id put in would repeat): refused.
  for (const char* many : {"select pgshard.unique_id() from generate_series(1, 3)",
                           "select pgshard.unique_id(), generate_series(1, 3)",
                           "update users set name = pgshard.unique_id()::text where id = 1",
                           "select pgshard.unique_id() union all select 1",
                           "insert into users (id) values (1) returning pgshard.unique_id()",
                           "insert into users (id) select pgshard.unique_id() from users"}) {
    INFO(many);
    auto refused = route_query(many, h, *cfg);
    CHECK(testing::refused(refused));
    CHECK_THAT(error_of(refused).message, Catch::Contains("share one id"));
  }
  CHECK(std::holds_alternative<UniqueIds>(
      route_query("select pgshard.unique_id() as a, pgshard.unique_id_53() where true", h, *cfg)
          .action));
  // Another schema's unique_id, or one with arguments, is not pgshard's.
  CHECK(runs_on_shards(route_query("select other.unique_id()", h, *cfg)));
  CHECK_FALSE(std::holds_alternative<UniqueIds>(
      route_query("select pgshard.unique_id(1)", h, *cfg).action));
  int n = 0;
  std::vector<bool> variants;
  auto next = [&](bool js) -> std::optional<int64_t> {
    variants.push_back(js);
    return 1000 + n++;
  };
  auto sql = with_unique_ids(
      "insert into users (id, name) values (pgshard.unique_id(), 'x'), (PGSHARD.UNIQUE_ID_53(), "
      "'y') returning id",
      next);
  REQUIRE(sql);
  CHECK_THAT(*sql, Catch::Contains("('1000'::bigint, 'x'), ('1001'::bigint, 'y')"));
  CHECK(variants == std::vector<bool>{false, true});
  r = route_query(*sql, h, *cfg);
  CHECK(runs_on_shards(r));
  if (shard_of("1000") != shard_of("1001")) CHECK(spread_shards(r).size() == 2);
  CHECK_FALSE(with_unique_ids("select 1", next));
  CHECK_FALSE(with_unique_ids("select pgshard.unique_id()",
                              [](bool) -> std::optional<int64_t> { return std::nullopt; }));
}

TEST_CASE("INSERT ... SELECT: the SELECT runs first, its rows go in as VALUES",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("insert into users (id, name) select id, name from users", h, *cfg);
  CHECK(std::holds_alternative<InsertSelect>(r.action));
  // The SELECT of it, as its own statement, with parameters put in as literals.
  auto select = insert_select_sql(
      "insert into users (id, name) select id + 1, $1 from users where id = $2 "
      "on conflict do nothing returning id");
  REQUIRE(select);
  CHECK(*select == "SELECT id + 1, $1 FROM users WHERE id = $2");
  auto bound = with_parameter_values(
      *select, {sql_literal(std::string("it's"), 25), sql_literal(std::string("5"), 0)});
  REQUIRE(bound);
  CHECK(*bound == "SELECT id + 1, 'it''s'::pg_catalog.text FROM users WHERE id = '5'");
  CHECK_FALSE(with_parameter_values("select $3", {"1"}));
  CHECK_FALSE(insert_select_sql("select 1"));
  // Its rows put in, typed as the SELECT's columns; ON CONFLICT and RETURNING kept.
  auto values = with_select_rows(
      "insert into users (id, name) select id, name from users on conflict do nothing "
      "returning id",
      {20, 25}, {{std::string("7"), std::string("a'b")}, {std::string("8"), std::nullopt}});
  REQUIRE(values);
  CHECK(*values ==
        "INSERT INTO users (id, name) VALUES ('7'::bigint, 'a''b'::pg_catalog.text), "
        "('8'::bigint, NULL::pg_catalog.text) ON CONFLICT DO NOTHING RETURNING id");
  auto routed = route_query(*values, h, *cfg);
  CHECK(runs_on_shards(routed));
  // No rows: typed NULLs WHERE false, which inserts nothing and goes to one shard.
  auto none =
      with_select_rows("insert into users (id, name) select id, name from users", {20, 25}, {});
  REQUIRE(none);
  CHECK(*none ==
        "INSERT INTO users (id, name) SELECT NULL::bigint, NULL::pg_catalog.text WHERE false");
  routed = route_query(*none, h, *cfg);
  CHECK(runs_on_shards(routed));
  CHECK(spread_shards(routed).empty());
  // A WITH around the INSERT is not taken apart.
  CHECK(where(route_query("with x as (select 1 as id) insert into users (id) select id from x", h,
                          *cfg)) == "error");
}

TEST_CASE("a foreign key must hold on each shard, or CREATE/ALTER is refused", "[router][parser]") {
  // Before: any foreign key was sent to every shard, where it could only hold for rows that
  // happened to share a shard.
  auto cfg = map();
  SessionHints h;
  std::string msg;
  auto refused = [&](const char* sql) {
    auto r = route_query(sql, h, *cfg);
    if (!testing::refused(r)) return false;
    msg = error_of(r).message;
    return error_of(r).code == "0A000";
  };
  CHECK(where(route_query("alter table orders add foreign key (user_id) references users (id)", h,
                          *cfg)) == "all");
  CHECK(where(route_query(
            "alter table orders add constraint f foreign key (user_id) references users", h,
            *cfg)) == "all");
  CHECK(where(route_query("create table order_items (user_id bigint references users (id), n int)",
                          h, *cfg)) == "all");
  CHECK(where(route_query(
            "alter table orders add foreign key (user_id) references countries (code)", h, *cfg)) ==
        "all");
  CHECK(refused("alter table orders add foreign key (id) references users (id)"));
  CHECK_THAT(msg, Catch::Contains("must map orders.user_id"));
  CHECK(refused("alter table sessions add foreign key (token) references users (id)"));
  CHECK_THAT(msg, Catch::Contains("not sharded alike"));
  CHECK(refused("create table order_items (user_id bigint, item bigint references orders (id))"));
}

TEST_CASE("a DO block of schema changes goes to every shard", "[router][parser]") {
  // drizzle-kit wraps foreign keys in DO $$ BEGIN ... EXCEPTION ... END $$. Before: one shard.
  auto cfg = map("{ shard: s0 }");
  SessionHints h;
  CHECK(where(route_query(
            "DO $$ BEGIN\n ALTER TABLE \"orders\" ADD CONSTRAINT \"f\" FOREIGN KEY (\"user_id\") "
            "REFERENCES \"public\".\"users\"(\"id\");\nEXCEPTION\n WHEN duplicate_object THEN "
            "null;\nEND $$;",
            h, *cfg)) == "all");
  CHECK(where(route_query("DO $$ BEGIN CREATE TYPE mood AS ENUM ('a'); EXCEPTION WHEN "
                          "duplicate_object THEN null; END $$",
                          h, *cfg)) == "all");
  // A foreign key that cannot hold across shards is refused here too.
  CHECK(where(route_query("DO $$ BEGIN ALTER TABLE orders ADD FOREIGN KEY (id) REFERENCES "
                          "users (id); END $$",
                          h, *cfg)) == "error");
  // Anything else in the block (data, control flow, dynamic SQL) keeps it an ordinary DO.
  CHECK(where(route_query("DO $$ BEGIN INSERT INTO accounts VALUES (1); END $$", h, *cfg)) !=
        "all");
  CHECK(where(route_query("DO $$ BEGIN IF true THEN CREATE TYPE t2 AS ENUM ('a'); END IF; END $$",
                          h, *cfg)) != "all");
  CHECK(where(route_query("DO $$ BEGIN EXECUTE 'CREATE TYPE t3 AS ENUM (''a'')'; END $$", h,
                          *cfg)) != "all");
}

TEST_CASE("INSERT leaving a generated column that is not the key asks for its values",
          "[router][parser][serial]") {
  // Before: each shard's own sequence filled such columns (ids repeated across shards).
  auto cfg = map();
  SessionHints h;
  std::atomic<uint64_t> catalog_generation{0};
  ColumnCache columns(catalog_generation);
  Context ctx;
  ctx.columns = &columns;
  // The table's generated columns are not known yet: read from the catalog first.
  auto r = route_query("insert into orders (user_id, amount) values (1, 2)", h, *cfg, ctx);
  CHECK(testing::lookup_of(r).columns == std::vector<int>{1});
  columns.put("orders", 1, {{"id", 0, false}, {"gid", 3, true}});
  // Left out: every row; DEFAULT: those rows; given: none.
  r = route_query("insert into orders (user_id, amount) values (1, 2), (2, 3) returning id", h,
                  *cfg, ctx);
  CHECK(testing::generate_of(r).count == 0);
  REQUIRE(testing::generate_of(r).columns.size() == 2);
  CHECK(testing::generate_of(r).columns[0].column.name == "id");
  CHECK(testing::generate_of(r).columns[0].count == 2);
  CHECK(testing::generate_of(r).columns[1].column.always);
  r = route_query(
      "insert into orders (id, gid, user_id) values (default, 7, 1), (5, 8, 2), (default, 9, 3)", h,
      *cfg, ctx);
  REQUIRE(testing::generate_of(r).columns.size() == 1);
  CHECK(testing::generate_of(r).columns[0].count == 2);
  CHECK(where(route_query("insert into orders (id, gid, user_id) values (5, 6, 42)", h, *cfg,
                          ctx)) == s(shard_of("42")));
  // Without a column list: DEFAULT in the column's place, or a row stopping before it.
  r = route_query("insert into orders values (default, 42, 1)", h, *cfg, ctx);
  REQUIRE(testing::generate_of(r).columns.size() == 2);
  CHECK(testing::generate_of(r).columns[0].positional);
  CHECK(testing::generate_of(r).columns[1].count == 1);
  // The values put in: a column added to the list, DEFAULT replaced, rows padded.
  CHECK(
      with_generated_keys("insert into orders (user_id) values (1), (2)", "id", -1, {"10", "11"}) ==
      "INSERT INTO orders (user_id, id) VALUES (1, '10'), (2, '11')");
  CHECK(with_generated_keys("insert into orders values (1, 42)", "gid", 3, {"10"}, true) ==
        "INSERT INTO orders OVERRIDING SYSTEM VALUE VALUES (1, 42, DEFAULT, '10')");
  // A Query string of several statements is sent as it is (not rewritten).
  CHECK(where(route_query("insert into orders (user_id) values (42); select 1", h, *cfg, ctx)) ==
        s(shard_of("42")));
  // Only described: runs nowhere, any shard describes it.
  Context describe = ctx;
  describe.describe_only = true;
  CHECK(runs_on_shards(
      route_extended("insert into orders (user_id) values ($1)", h, *cfg, describe)));
}

TEST_CASE("cursors: DECLARE goes where its query goes; several shards are refused",
          "[router][parser][cursor]") {
  // Before: DECLARE ran as DDL on every shard, FETCH on one shard.
  auto cfg = map();
  SessionHints h;
  auto r = route_query("declare c cursor for select * from orders where user_id = 42", h, *cfg);
  CHECK(where(r) == s(shard_of("42")));
  CHECK(r.cursor_op == Analysis::CursorOp::kDeclare);
  CHECK(r.cursor == "c");
  CHECK_FALSE(r.ddl);
  r = route_query("DECLARE \"c_1\" CURSOR WITHOUT HOLD FOR SELECT id FROM users WHERE id = 7", h,
                  *cfg);
  CHECK(where(r) == s(shard_of("7")));
  CHECK(r.cursor == "c_1");
  r = route_query("declare h cursor with hold for select * from users where id = 7", h, *cfg);
  CHECK(r.cursor_hold);
  CHECK(r.pins);
  r = route_query("declare m cursor for select count(*) from orders", h, *cfg);
  CHECK(where(r) == "error");
  CHECK(error_of(r).code == "0A000");
  // FETCH, MOVE and CLOSE name the cursor (the session sends them to its shard).
  r = route_query("fetch 2 from c", h, *cfg);
  CHECK(r.cursor_op == Analysis::CursorOp::kFetch);
  CHECK(r.cursor == "c");
  CHECK(route_query("move forward 3 in c", h, *cfg).cursor_op == Analysis::CursorOp::kFetch);
  CHECK(route_query("close c", h, *cfg).cursor_op == Analysis::CursorOp::kClose);
  r = route_query("close all", h, *cfg);
  CHECK(r.cursor_op == Analysis::CursorOp::kClose);
  CHECK(r.cursor.empty());
}

TEST_CASE("pg_terminate_backend / pg_cancel_backend alone are seen, with their pid",
          "[router][parser]") {
  auto cfg = map();
  SessionHints h;
  auto r = route_query("select pg_terminate_backend(15)", h, *cfg);
  REQUIRE(r.signal_call);
  CHECK(r.signal_call->terminate);
  CHECK(r.signal_call->pid == 15);
  r = route_query("SELECT pg_catalog.pg_cancel_backend($1::int)", h, *cfg);
  REQUIRE(r.signal_call);
  CHECK_FALSE(r.signal_call->terminate);
  CHECK(r.signal_call->param == 1);
  // The same shape with another pid is not answered from the first one's analysis, in the
  // worker's cache either (statements without sharded tables share an entry per shape).
  CHECK(route_query("select pg_terminate_backend(16)", h, *cfg).signal_call->pid == 16);
  AnalysisCache cache(100, cfg.get());
  CHECK(cache.get("select pg_terminate_backend(15)", *cfg)->signal_call->pid == 15);
  CHECK(cache.get("select pg_terminate_backend(35)", *cfg)->signal_call->pid == 35);
  CHECK(cache.get("select pg_terminate_backend(15)", *cfg)->signal_call->pid == 15);
  // Anything more is a statement for the server.
  for (const char* sql :
       {"select pg_terminate_backend(pid) from pg_stat_activity", "select pg_cancel_backend(1), 2",
        "select pg_terminate_backend(1) where false", "select 1"}) {
    INFO(sql);
    CHECK_FALSE(route_query(sql, h, *cfg).signal_call);
  }
}
