// Statements run per shard only when that provably gives PostgreSQL's answer (issue 30):
// rows every shard holds whole on the kept side of outer joins or around semi/anti joins,
// group keys whose equality pgshard does not reproduce, casts over aggregates, and binary
// parameters read as PostgreSQL reads them. No sockets.
#include <catch2/catch.hpp>

#include "config/config.hpp"
#include "protocol/messages.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/router.hpp"
#include "route_parts.hpp"
#include "shard_map.hpp"

using namespace pgshard;
using namespace pgshard::router;
namespace proto = pgshard::protocol;

namespace {

std::shared_ptr<const config::Config> map() {
  return testing::three_shards(R"(sharded_tables:
  - { table: users, column: id, type: bigint }
  - { table: orders, column: user_id, type: bigint }
  - { table: order_items, column: user_id, type: bigint }
reference_tables: [countries, products]
)");
}

// "per shard": runs on several shards (concatenated or merged); "one shard"; "refused".
std::string verdict(const Route& r) {
  if (testing::refused(r)) return "refused";
  if (shards_of(r).size() <= 1) return "one shard";
  const auto* f = std::get_if<FanOut>(&r.action);
  if (!f) return "per shard";  // (a schema change or COPY on each shard)
  if (f->concat_safe || (f->merge && f->merge_blocker.empty())) return "per shard";
  return f->merge_blocker.empty() ? "refused (no reason)" : "refused";
}

std::string verdict_of(const std::string& sql) {
  static auto cfg = map();
  return verdict(route_query(sql, SessionHints{}, *cfg));
}

std::string blocker_of(const std::string& sql) {
  static auto cfg = map();
  return testing::fan_out_of(route_query(sql, SessionHints{}, *cfg)).merge_blocker;
}

std::shared_ptr<const merge::MergePlan> plan_of(const std::string& sql) {
  static auto cfg = map();
  return testing::fan_out_of(route_query(sql, SessionHints{}, *cfg)).merge;
}

std::string row_description(std::vector<std::pair<std::string, int32_t>> cols, int16_t fmt = 0) {
  proto::RowDescription d;
  for (auto& [name, type] : cols) d.fields.push_back({name, 0, 0, type, -1, -1, fmt});
  std::string out;
  d.write(out);
  return out.substr(5);
}

std::string data_row(std::vector<std::optional<std::string>> values) {
  proto::DataRow r;
  for (auto& v : values) r.values.push_back(v ? proto::Value(*v) : proto::Value());
  std::string out;
  r.write(out);
  return out.substr(5);
}

std::vector<std::vector<std::string>> merged(merge::Merger& m,
                                             const std::vector<std::vector<std::string>>& shards) {
  std::vector<std::size_t> next(shards.size(), 0);
  std::string out;
  for (int s; (s = m.wants()) >= 0;) {
    auto& i = next[static_cast<std::size_t>(s)];
    if (i < shards[static_cast<std::size_t>(s)].size())
      m.add_row(s, shards[static_cast<std::size_t>(s)][i++]);
    else
      m.end_of_rows(s);
    m.take(out);
  }
  m.take(out);
  std::vector<std::vector<std::string>> rows;
  for (std::string_view rest = out; !rest.empty();) {
    auto len = (static_cast<unsigned char>(rest[1]) << 24) |
               (static_cast<unsigned char>(rest[2]) << 16) |
               (static_cast<unsigned char>(rest[3]) << 8) | static_cast<unsigned char>(rest[4]);
    if (rest[0] == 'D') {
      auto r = proto::DataRow::parse(rest.substr(5, len - 4));
      std::vector<std::string> row;
      for (auto& v : r->values) row.push_back(v ? std::string(*v) : "NULL");
      rows.push_back(row);
    }
    rest.remove_prefix(1 + len);
  }
  return rows;
}

}  // namespace

TEST_CASE("rows every shard holds are refused on the kept side of an outer join",
          "[router][decomposition]") {
  for (const char* sql : {
           "select p.sku, i.id from products p left join order_items i on i.sku = p.sku",
           "select count(*) from products p left join order_items i on i.sku = p.sku "
           "where i.id is null",
           "select p.sku from order_items i right join products p on i.sku = p.sku",
           "select count(*) from products p full join order_items i on i.sku = p.sku",
           "select count(*) from order_items i full join products p on i.sku = p.sku",
           "select g, count(o.id) from generate_series(1, 6) g left join orders o "
           "on o.user_id = g group by g",
           "select * from unnest(array[1, 2]) x left join orders o on o.user_id = x",
           "select * from (values (1), (2)) v(x) left join orders o on o.user_id = v.x",
           "select * from (select sku from products) p left join order_items i using (sku)",
           "with i as (select sku from order_items) select p.sku, count(i.sku) from products p "
           "left join i on i.sku = p.sku group by p.sku",
           "select count(*) from countries c left join (users u join orders o "
           "on o.user_id = u.id) on u.country = c.code",
           "select * from orders o where o.user_id in (select g from generate_series(1, 3) g "
           "left join users u on u.id = g)",
           "select * from generate_series(1, 3) g left join lateral (select * from orders o "
           "where o.user_id = g) x on true",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "refused");
  }
  CHECK_THAT(blocker_of("select p.sku, i.id from products p left join order_items i "
                        "on i.sku = p.sku"),
             Catch::Contains("LEFT JOIN") && Catch::Contains("products"));
  CHECK_THAT(blocker_of("select * from generate_series(1, 6) g left join orders o "
                        "on o.user_id = g"),
             Catch::Contains("generate_series()"));
}

TEST_CASE("sharded tables only inside semi/anti joins of replicated rows are refused",
          "[router][decomposition]") {
  for (const char* sql : {
           "select p.sku from products p where exists (select 1 from order_items i "
           "where i.sku = p.sku)",
           "select count(*) from products p where p.sku in (select sku from order_items)",
           "select count(*) from products p where p.sku not in (select sku from order_items)",
           "select count(*) from products p where not exists (select 1 from order_items i "
           "where i.sku = p.sku)",
           "select count(*) from generate_series(1, 200) g where not exists "
           "(select 1 from users u where u.id = g)",
           "select * from countries c where c.code = any (select country from users)",
           "select * from (select * from products p where exists (select 1 from orders)) x",
           "with o as (select * from orders) select * from products",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "refused");
  }
  CHECK_THAT(blocker_of("select count(*) from products p where p.sku in "
                        "(select sku from order_items)"),
             Catch::Contains("IN"));
}

TEST_CASE("reference tables stay allowed where duplication cannot show",
          "[router][decomposition]") {
  for (const char* sql : {
           "select i.id, p.name from order_items i join products p on p.sku = i.sku",
           "select i.id, p.name from order_items i, products p where p.sku = i.sku",
           "select i.id, p.name from order_items i left join products p on p.sku = i.sku",
           "select i.id, p.name from products p right join order_items i on p.sku = i.sku",
           "select o.id, c.name from orders o join users u on u.id = o.user_id "
           "join countries c on c.code = u.country",
           "select g, o.id from generate_series(1, 6) g join orders o on o.user_id = g",
           "select * from orders o, unnest(array[1, 2]) x",
           "select * from orders o left join lateral unnest(array[o.qty]) x on true",
           "select count(*) from order_items i where exists (select 1 from products p "
           "where p.sku = i.sku)",
           "select count(*) from order_items i where i.sku not in (select sku from products)",
           "select p.name, count(*) from order_items i join products p on p.sku = i.sku "
           "group by p.name",
           "select * from users u left join orders o on o.user_id = u.id",
           "select * from users u full join orders o on o.user_id = u.id",
           "with p as (select * from products) select i.id from order_items i join p "
           "on p.sku = i.sku",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "per shard");
  }
  // A strict WHERE condition on the sharded side makes the outer join an inner one.
  for (const char* sql : {
           "select p.sku, i.id from products p left join order_items i on i.sku = p.sku "
           "where i.qty > 2",
           "select count(*) from products p left join order_items i on i.sku = p.sku "
           "where i.id is not null",
           "select p.sku from order_items i right join products p on i.sku = p.sku "
           "where i.sku like 'SKU-1%'",
           "select count(*) from generate_series(1, 6) g left join orders o on o.user_id = g "
           "where o.qty in (1, 2)",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "per shard");
  }
  for (const char* sql : {
           "select count(*) from products p left join order_items i on i.sku = p.sku "
           "where i.qty > 2 or p.price > 1",
           "select count(*) from products p left join order_items i on i.sku = p.sku "
           "where coalesce(i.qty, 0) = 0",
           "select count(*) from products p left join order_items i on i.sku = p.sku "
           "where p.price > 1",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "refused");
  }
  // Subqueries over reference tables compute what they like: every shard gets the same.
  for (const char* sql : {
           "select o.id from orders o where o.amount > (select avg(price) from products)",
           "select o.id from orders o where o.status in (select distinct name from products "
           "order by 1 limit 3)",
           "select o.id, p.n from orders o join (select sku, count(*) n from products group by "
           "sku) p on p.sku = o.status",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "per shard");
  }
  CHECK(verdict_of("select o.id from orders o where o.amount > (select avg(amount) from orders)") ==
        "refused");
  // No sharded table: one shard answers (a reference read).
  for (const char* sql : {
           "select p.sku, c.name from products p left join countries c on c.code = p.sku",
           "select * from generate_series(1, 3) g left join products p on true",
           "select count(*) from products p where exists (select 1 from countries)",
       }) {
    INFO(sql);
    CHECK(verdict_of(sql) == "one shard");
  }
  // A key in the subquery pins one shard: that shard holds every sharded row read.
  CHECK(verdict_of("select count(*) from products p where p.sku not in (select sku from "
                   "order_items i where i.user_id = 5)") == "one shard");
  CHECK(verdict_of("select count(*) from products p where exists (select 1 from order_items i "
                   "where i.sku = p.sku and i.user_id = 5)") == "one shard");
  CHECK(verdict_of("select count(*) from products p where exists (select 1 from order_items i "
                   "where i.sku = p.sku and (i.user_id = 5 or i.qty = 1))") == "refused");
  // A key that pins one shard: that shard holds every row the statement reads.
  CHECK(verdict_of("select p.sku, i.id from products p left join order_items i "
                   "on i.sku = p.sku where i.user_id = 8") == "one shard");
}

TEST_CASE("writes to reference tables that read sharded rows are refused",
          "[router][decomposition]") {
  auto cfg = map();
  for (const char* sql : {
           "update products set price = 0 where sku not in (select sku from order_items)",
           "delete from products p where exists (select 1 from order_items i "
           "where i.sku = p.sku)",
           "insert into countries select country, 'x' from users",
       }) {
    INFO(sql);
    CHECK(verdict(route_query(sql, SessionHints{}, *cfg)) == "refused");
  }
  CHECK(testing::spread_shards(route_query("update products set price = 0", SessionHints{}, *cfg))
            .size() == 3);
}

TEST_CASE("grouping keys: shard key groups never span shards", "[router][decomposition]") {
  auto p = plan_of("select user_id, status, count(*) from orders group by user_id, status");
  REQUIRE(p);
  CHECK(p->groups_within_shard);
  p = plan_of("select status, count(*) from orders group by status");
  REQUIRE(p);
  CHECK_FALSE(p->groups_within_shard);
  p = plan_of("select distinct o.user_id, note from orders o");
  REQUIRE(p);
  CHECK(p->distinct_within_shard);
  p = plan_of("select distinct note from orders");
  REQUIRE(p);
  CHECK_FALSE(p->distinct_within_shard);
}

TEST_CASE("merged equality is exact for the listed types only", "[merge][decomposition]") {
  using merge::exact_group_equality;
  using merge::exact_group_key;
  namespace oid = merge::oid;
  for (int32_t t :
       {oid::kInt2, oid::kInt4, oid::kInt8, oid::kText, oid::kVarchar, oid::kBool, oid::kDate,
        oid::kNumeric, oid::kFloat8, oid::kInterval, oid::kTimestamptz, oid::kUuid})
    CHECK(exact_group_equality(t, 0));
  CHECK(exact_group_equality(1009, 0));         // text[]
  CHECK(exact_group_equality(1009, 1));         // binary: the null-bitmap flag left out
  CHECK_FALSE(exact_group_equality(3802, 0));   // jsonb: 1.0 = 1.00 inside
  CHECK_FALSE(exact_group_equality(2249, 0));   // record
  CHECK_FALSE(exact_group_equality(1231, 0));   // numeric[]
  CHECK_FALSE(exact_group_equality(16385, 0));  // a user type (citext, enum...)
  auto key = [](int32_t t, const char* v) { return exact_group_key(t, 0, v); };
  CHECK(key(oid::kInterval, "1 day") == key(oid::kInterval, "24:00:00"));
  CHECK(key(oid::kInterval, "1 mon") == key(oid::kInterval, "30 days"));
  CHECK(key(oid::kInterval, "1 year") == key(oid::kInterval, "360 days"));
  CHECK(key(oid::kInterval, "1 day 12:00:00") == key(oid::kInterval, "36:00:00"));
  CHECK(key(oid::kInterval, "-1 days +24:00:00") == key(oid::kInterval, "00:00:00"));
  CHECK(key(oid::kInterval, "00:00:00.5") == key(oid::kInterval, "00:00:00.500000"));
  CHECK(key(oid::kInterval, "1 day") != key(oid::kInterval, "1 day 00:00:01"));
  CHECK_FALSE(key(oid::kInterval, "@ 1 day"));  // postgres_verbose: not read
  CHECK_FALSE(key(oid::kInterval, "P1D"));      // iso_8601: not read
  // Binary: time 86400 s as microseconds, 0 days, 0 months = 1 day.
  const std::string day_as_time("\x00\x00\x00\x14\x1d\xd7\x60\x00\0\0\0\0\0\0\0\0", 16);
  const std::string one_day("\0\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\0", 16);
  CHECK(exact_group_key(oid::kInterval, 1, day_as_time) ==
        exact_group_key(oid::kInterval, 1, one_day));
  CHECK(key(oid::kNumeric, "1.0") == key(oid::kNumeric, "1.00"));
  CHECK(key(oid::kFloat8, "-0") == key(oid::kFloat8, "0"));
  CHECK(key(oid::kBpchar, "ab  ") == key(oid::kBpchar, "ab"));
  CHECK_FALSE(key(3802, "{\"a\": 1.0}"));
}

TEST_CASE("GROUP BY a type without exact equality across shards is refused",
          "[merge][decomposition]") {
  merge::MergePlan plan;
  plan.aggregate = true;
  plan.group_columns = {0};
  plan.aggregates = {{merge::Aggregate::Kind::kCount, 1, -1}};
  plan.outputs = {{merge::Output::Kind::kGroupKey, 0}, {merge::Output::Kind::kAggregate, 0}};
  merge::Collation c;
  std::string err;
  {
    merge::Merger m(plan, 2, c, std::nullopt, std::nullopt);
    CHECK_FALSE(m.describe(row_description({{"doc", 3802}, {"count", merge::oid::kInt8}}), &err));
    CHECK_THAT(err, Catch::Contains("jsonb"));
  }
  {
    // Grouped with the shard key: every group is on one shard.
    plan.groups_within_shard = true;
    merge::Merger m(plan, 2, c, std::nullopt, std::nullopt);
    CHECK(m.describe(row_description({{"doc", 3802}, {"count", merge::oid::kInt8}}), &err));
    plan.groups_within_shard = false;
  }
  {
    // Intervals group by their span: '1 day' and '24:00:00' are one group.
    merge::Merger m(plan, 2, c, std::nullopt, std::nullopt);
    REQUIRE(m.describe(
        row_description({{"span", merge::oid::kInterval}, {"count", merge::oid::kInt8}}), &err));
    auto rows = merged(m, {{data_row({"1 day", "2"}), data_row({"1 mon", "1"})},
                           {data_row({"24:00:00", "3"}), data_row({"30 days", "4"})}});
    REQUIRE(rows.size() == 2);
    CHECK(rows[0][1] == "5");
    CHECK(rows[1][1] == "5");
  }
  {
    // An interval in a style pgshard does not read stops the merge, never guessed.
    merge::Merger m(plan, 2, c, std::nullopt, std::nullopt);
    REQUIRE(m.describe(
        row_description({{"span", merge::oid::kInterval}, {"count", merge::oid::kInt8}}), &err));
    merged(m, {{data_row({"@ 1 day", "2"})}, {data_row({"@ 1 day", "3"})}});
    CHECK(m.error_code() == "0A000");
    CHECK_THAT(m.error(), Catch::Contains("interval"));
  }
}

TEST_CASE("casts over aggregates apply to the merged total", "[router][merge][decomposition]") {
  auto p = plan_of("select sum(amount)::int from orders");
  REQUIRE(p);
  CHECK(p->unsupported.empty());
  REQUIRE(p->aggregates.size() == 1);
  CHECK(p->aggregates[0].cast_type == merge::oid::kInt4);
  // The shards send the exact sum: no cast in their statement.
  CHECK(p->shard_sql.find("::") == std::string::npos);
  CHECK(p->shard_sql.find("int") == std::string::npos);
  for (const char* sql :
       {"select sum(qty) * 2 from orders", "select count(*) + 1 from orders",
        "select round(avg(amount), 2) from orders", "select avg(amount)::text from orders",
        "select min(amount)::int from orders", "select coalesce(sum(amount), 0) from orders",
        "select sum(amount)::int::numeric from orders",
        "select status from orders group by status having sum(qty) * 2 > 1"}) {
    INFO(sql);
    CHECK(verdict_of(sql) == "refused");
  }
  p = plan_of("select avg(amount)::numeric(10,2) from orders");
  REQUIRE(p);
  CHECK(p->unsupported.empty());
  REQUIRE(p->aggregates.size() == 1);
  CHECK(p->aggregates[0].kind == merge::Aggregate::Kind::kAvg);
  CHECK(p->aggregates[0].cast_type == merge::oid::kNumeric);
  CHECK(p->aggregates[0].scale == 2);
  // Group keys under a collation pgshard cannot vouch for: refused unless the shard key is
  // among the keys.
  CHECK(verdict_of("select count(*) from users group by name collate \"und-x-icu\"") == "refused");
  CHECK(verdict_of("select distinct name collate \"und-x-icu\" from users") == "refused");
  CHECK(verdict_of("select id, count(*) from users group by id, name collate \"und-x-icu\"") ==
        "per shard");
  CHECK(verdict_of("select count(*) from users group by name collate \"C\"") == "per shard");
  // 10.4 + 10.4 = 20.8 -> 21; each part cast first would give 10 + 10 = 20.
  merge::MergePlan plan;
  plan.aggregate = true;
  merge::Aggregate a{merge::Aggregate::Kind::kSum, 0, -1};
  a.cast_type = merge::oid::kInt4;
  plan.aggregates = {a};
  plan.outputs = {{merge::Output::Kind::kAggregate, 0}};
  merge::Collation c;
  merge::Merger m(plan, 2, c, std::nullopt, std::nullopt);
  std::string err;
  auto desc = m.describe(row_description({{"sum", merge::oid::kNumeric}}), &err);
  REQUIRE(desc);
  auto fields = proto::RowDescription::parse(*desc)->fields;
  CHECK(fields[0].type_oid == merge::oid::kInt4);
  CHECK(fields[0].type_size == 4);
  CHECK(merged(m, {{data_row({"10.4"})}, {data_row({"10.4"})}}) ==
        std::vector<std::vector<std::string>>{{"21"}});
  // -2.5 rounds away from zero as numeric_int4 does.
  merge::Merger n(plan, 2, c, std::nullopt, std::nullopt);
  REQUIRE(n.describe(row_description({{"sum", merge::oid::kNumeric}}), &err));
  CHECK(merged(n, {{data_row({"-1.25"})}, {data_row({"-1.25"})}}) ==
        std::vector<std::vector<std::string>>{{"-3"}});
  // avg(x)::int: the average of all parts (here 7 / 2 = 3.5 -> 4), cast once.
  merge::MergePlan avg_plan;
  avg_plan.aggregate = true;
  merge::Aggregate avg{merge::Aggregate::Kind::kAvg, 0, 1};
  avg.cast_type = merge::oid::kInt4;
  avg_plan.aggregates = {avg};
  avg_plan.outputs = {{merge::Output::Kind::kAggregate, 0}};
  avg_plan.hidden = 1;
  merge::Merger v(avg_plan, 2, c, std::nullopt, std::nullopt);
  REQUIRE(v.describe(row_description({{"avg", merge::oid::kInt8}, {"count", merge::oid::kInt8}}),
                     &err));
  CHECK(merged(v, {{data_row({"3", "1"})}, {data_row({"4", "1"})}}) ==
        std::vector<std::vector<std::string>>{{"4"}});
}

TEST_CASE("binary parameters are read by their declared type", "[router][params]") {
  // '-5' declared text, sent in binary: two characters, not an int16.
  CHECK(binary_text("-5", config::KeyType::kInt8, 25) == "-5");
  CHECK(binary_text(" +42 ", config::KeyType::kInt8, 1043) == " +42 ");
  CHECK(binary_text("-5", config::KeyType::kInt8) != "-5");  // undeclared: the key's format
  const std::string minus_five_int8("\xff\xff\xff\xff\xff\xff\xff\xfb", 8);
  CHECK(binary_text(minus_five_int8, config::KeyType::kInt8, 20) == "-5");
  const std::string minus_five_int4("\xff\xff\xff\xfb", 4);
  CHECK(binary_text(minus_five_int4, config::KeyType::kInt8, 23) == "-5");
  // float8 -5.0 names key -5; 2.5 names none.
  const std::string f_minus_five("\xc0\x14\0\0\0\0\0\0", 8),
      f_two_and_half("\x40\x04\0\0\0\0\0\0", 8);
  CHECK(binary_text(f_minus_five, config::KeyType::kInt8, 701) == "-5");
  CHECK_FALSE(binary_text(f_two_and_half, config::KeyType::kInt8, 701));
  CHECK_FALSE(binary_text("x", config::KeyType::kInt8, 3802));  // jsonb: not read

  auto cfg = map();
  proto::Bind b;
  b.params.push_back(proto::Value(std::string_view(" -5 ")));
  b.param_formats.push_back(1);
  const std::vector<int32_t> types{25};
  Context ctx;
  ctx.bind = &b;
  ctx.param_types = &types;
  auto r = route_extended("select * from users where id = $1::bigint", SessionHints{}, *cfg, ctx);
  REQUIRE(runs_on_shards(r));
  CHECK(testing::forward_shard(r) ==
        hash_to_index(*partition_hash(config::KeyType::kInt8, "-5"), 3));
}
