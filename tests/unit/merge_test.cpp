// The multi-shard merger and PostgreSQL value semantics, with hand-built RowDescription and
// DataRow messages: no sockets, no server.
#include <catch2/catch.hpp>

#include "protocol/messages.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/merge/value.hpp"

using namespace pgshard;
using namespace pgshard::merge;
namespace proto = pgshard::protocol;

namespace {

std::string row_description(std::vector<std::pair<std::string, int32_t>> cols, int16_t fmt = 0) {
  proto::RowDescription d;
  for (auto& [name, type] : cols) d.fields.push_back({name, 0, 0, type, -1, -1, fmt});
  // Views into `cols` must outlive write(): write here.
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

// Decodes the DataRow frames the merger produced into text rows ("NULL" for NULL).
std::vector<std::vector<std::string>> rows_of(const std::string& frames) {
  std::vector<std::vector<std::string>> rows;
  for (std::string_view rest = frames; !rest.empty();) {
    auto len = (static_cast<unsigned char>(rest[1]) << 24) |
               (static_cast<unsigned char>(rest[2]) << 16) |
               (static_cast<unsigned char>(rest[3]) << 8) | static_cast<unsigned char>(rest[4]);
    auto r = proto::DataRow::parse(rest.substr(5, len - 4));
    std::vector<std::string> row;
    for (auto& v : r->values) row.push_back(v ? std::string(*v) : "NULL");
    rows.push_back(row);
    rest.remove_prefix(1 + len);
  }
  return rows;
}

// Feeds each shard's rows as the merger asks for them.
std::string run(Merger& m, const std::vector<std::vector<std::string>>& shards) {
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
  return out;
}

}  // namespace

TEST_CASE("numeric arithmetic matches PostgreSQL digit for digit", "[merge][value]") {
  auto d = [](const char* s) { return *Decimal::parse(s); };
  CHECK(d("1.50").add(d("2.125")).to_text() == "3.625");
  CHECK(d("-1.5").add(d("1.5")).to_text() == "0.0");
  CHECK(d("99999999999999999999").add(d("1")).to_text() == "100000000000000000000");
  CHECK(d("3").divide(2).to_text() == "1.5000000000000000");  // avg(int) of 1, 2
  CHECK(d("10").divide(4).to_text() == "2.5000000000000000");
  CHECK(d("100000").divide(3).to_text() == "33333.333333333333");     // fewer decimals for big
  CHECK(d("0.001").divide(3).to_text() == "0.00033333333333333333");  // more for small
  CHECK(d("2").divide(3).to_text() == "0.66666666666666666667");      // rounded half up
  CHECK(d("-2").divide(3).to_text() == "-0.66666666666666666667");
  CHECK(d("12.345").divide(1).to_text() == "12.3450000000000000");
  CHECK(d("1.0").compare(d("1.00")) == 0);
  CHECK(d("NaN").compare(d("1e300")) > 0);
  CHECK(d("-Infinity").compare(d("-1e300")) < 0);
  for (const char* s : {"0", "1", "-1.5", "12345.6789", "0.0001", "100000000", "0.00000001",
                        "-98765432109876543210.0123456789", "NaN"}) {
    INFO(s);
    CHECK(Decimal::from_binary(d(s).to_binary())->to_text() == d(s).to_text());
  }
}

TEST_CASE("floats print as float8out and float4out do", "[merge][value]") {
  CHECK(format_float8(1e15) == "1e+15");
  CHECK(format_float8(123456789012345.0) == "123456789012345");
  CHECK(format_float8(1e-5) == "1e-05");
  CHECK(format_float8(0.0001) == "0.0001");
  CHECK(format_float8(1.5e300) == "1.5e+300");
  CHECK(format_float8(0.1 + 0.2) == "0.30000000000000004");
  CHECK(format_float8(-2.5) == "-2.5");
  CHECK(format_float4(1e6f) == "1e+06");
  CHECK(format_float4(123456.0f) == "123456");
}

TEST_CASE("values compare by type, with NaN last and the collation for text", "[merge][value]") {
  Collation c;
  auto cmp = [&](int32_t t, const char* a, const char* b) {
    return *compare_values(t, 0, a, b, c);
  };
  CHECK(cmp(oid::kInt4, "9", "10") < 0);
  CHECK(cmp(oid::kInt8, "-5", "-40") > 0);
  CHECK(cmp(oid::kNumeric, "10.5", "9.75") > 0);
  CHECK(cmp(oid::kFloat8, "NaN", "Infinity") > 0);
  CHECK(cmp(oid::kFloat8, "-Infinity", "-1e308") < 0);
  CHECK(cmp(oid::kBool, "f", "t") < 0);
  CHECK(cmp(oid::kDate, "2024-01-02", "2023-12-31") > 0);
  CHECK(cmp(oid::kDate, "0044-03-15 BC", "0001-01-01") < 0);
  CHECK(cmp(oid::kTimestamptz, "2024-11-03 01:30:00-04", "2024-11-03 01:10:00-05") < 0);
  CHECK(cmp(oid::kTimestamp, "infinity", "9999-12-31 23:59:59") > 0);
  CHECK(cmp(oid::kText, "B", "a") < 0);  // C collation: byte order
  CHECK(cmp(oid::kBpchar, "ab  ", "ab") == 0);
  CHECK_FALSE(compare_values(oid::kDate, 0, "01/02/2024", "2024-01-02", c));  // not ISO
  // A field with more digits than any date has, or a year too far out for microseconds, is
  // refused, never overflowed (found by fuzz_merger: 21 digits overflowed int64).
  CHECK_FALSE(compare_values(oid::kDate, 0, "444444444444444444444-01-01", "2024-01-02", c));
  CHECK_FALSE(compare_values(oid::kDate, 0, "444444444-01-01", "2024-01-02", c));
  CHECK_FALSE(compare_values(oid::kTimestamp, 0, "2024-01-02 444444444444444444444:00:00",
                             "2024-01-02", c));
  CHECK(cmp(oid::kDate, "200000-01-01", "2024-01-02") > 0);
  CHECK_FALSE(orderable(oid::kInterval));
}

TEST_CASE("numeric(p,s) casts round half away from zero, as PostgreSQL", "[merge][value]") {
  auto r = [](const char* v, int p, int s) {
    auto d = Decimal::parse(v)->round(p, s);
    return d ? d->to_text() : std::string("overflow");
  };
  CHECK(r("1.25", 10, 1) == "1.3");
  CHECK(r("-1.25", 10, 1) == "-1.3");
  CHECK(r("1.24", 10, 1) == "1.2");
  CHECK(r("9.99", 10, 1) == "10.0");
  CHECK(r("0.004", 10, 2) == "0.00");
  CHECK(r("0.005", 10, 2) == "0.01");
  CHECK(r("-0.004", 10, 2) == "0.00");
  CHECK(r("7", 10, 2) == "7.00");
  CHECK(r("99999.5", 5, 0) == "overflow");
  CHECK(r("99999.4", 5, 0) == "99999");
  CHECK(r("NaN", 5, 0) == "NaN");
}

TEST_CASE("group keys are equal exactly when PostgreSQL's equality says so", "[merge][value]") {
  auto same = [](int32_t t, const char* a, const char* b) {
    return group_key(t, 0, a) == group_key(t, 0, b);
  };
  CHECK(same(oid::kNumeric, "1.5", "1.50"));
  CHECK(same(oid::kNumeric, "-0.0", "0"));
  CHECK(same(oid::kNumeric, "NaN", "NaN"));
  CHECK_FALSE(same(oid::kNumeric, "1.5", "1.05"));
  CHECK(same(oid::kFloat8, "-0", "0"));
  CHECK(same(oid::kFloat4, "-0", "0"));
  CHECK(same(oid::kFloat8, "NaN", "NaN"));
  CHECK(same(oid::kFloat8, "1e+100", "1e100"));
  CHECK_FALSE(same(oid::kFloat8, "0.1", "0.10000000000000002"));
  CHECK(same(oid::kBpchar, "ab  ", "ab"));
  CHECK_FALSE(same(oid::kText, "ab  ", "ab"));
  // Binary format: -0 and 0 differ in their sign bit only.
  const std::string neg("\x80\0\0\0\0\0\0\0", 8), pos(8, '\0');
  CHECK(group_key(oid::kFloat8, 1, neg) == group_key(oid::kFloat8, 1, pos));
}

TEST_CASE("DISTINCT across shards keeps one of values PostgreSQL calls equal", "[merge]") {
  MergePlan plan;
  plan.distinct = true;
  Collation c;
  Merger m(plan, 2, c, std::nullopt, std::nullopt);
  std::string err;
  REQUIRE(m.describe(row_description({{"v", oid::kFloat8}}), &err));
  auto out = run(m, {{data_row({"-0"}), data_row({"1"})}, {data_row({"0"}), data_row({"1"})}});
  CHECK(rows_of(out).size() == 2);
}

TEST_CASE("concatenation streams rows and applies OFFSET and LIMIT", "[merge]") {
  MergePlan plan;
  Collation c;
  Merger m(plan, 2, c, 3, 1);
  std::string err;
  REQUIRE(m.describe(row_description({{"id", oid::kInt4}}), &err));
  auto out = run(m, {{data_row({"1"}), data_row({"2"})}, {data_row({"3"}), data_row({"4"})}});
  CHECK(rows_of(out) == std::vector<std::vector<std::string>>{{"2"}, {"3"}, {"4"}});
  CHECK(m.complete());
  CHECK(m.rows_sent() == 3);
}

TEST_CASE("ORDER BY merges sorted shard streams holding one row per shard", "[merge]") {
  MergePlan plan;
  plan.order.push_back({.column = 1, .descending = true, .nulls_first = true});
  plan.order.push_back({.column = -1});  // hidden id
  plan.hidden = 1;
  Collation c;
  Merger m(plan, 3, c, std::nullopt, std::nullopt);
  std::string err;
  auto desc = m.describe(
      row_description({{"name", oid::kText}, {"score", oid::kNumeric}, {"id", oid::kInt8}}), &err);
  REQUIRE(desc);
  CHECK(proto::RowDescription::parse(*desc)->fields.size() == 2);  // hidden id stripped
  auto out = run(m, {{data_row({"a", std::nullopt, "1"}), data_row({"b", "10.5", "2"})},
                     {data_row({"c", "11", "3"}), data_row({"d", "2", "9"})},
                     {data_row({"e", "10.50", "1"})}});
  CHECK(rows_of(out) == std::vector<std::vector<std::string>>{
                            {"a", "NULL"}, {"c", "11"}, {"e", "10.50"}, {"b", "10.5"}, {"d", "2"}});
}

TEST_CASE("a merge stops asking once LIMIT is reached", "[merge]") {
  MergePlan plan;
  plan.order.push_back({.column = 0});
  Collation c;
  Merger m(plan, 2, c, 2, std::nullopt);
  std::string err;
  REQUIRE(m.describe(row_description({{"id", oid::kInt4}}), &err));
  m.add_row(0, data_row({"1"}));
  m.add_row(1, data_row({"2"}));
  m.add_row(0, data_row({"3"}));
  CHECK(m.complete());
  CHECK(m.wants() == -1);
  std::string out;
  m.take(out);
  CHECK(rows_of(out).size() == 2);
}

TEST_CASE("aggregates combine partial groups, HAVING filters, ORDER BY sorts groups", "[merge]") {
  // select g, count(*), sum(x), avg(x), min(s), bool_and(b) ... group by g
  //   having count(*) > 1 order by 3 desc
  MergePlan plan;
  plan.aggregate = true;
  plan.group_columns = {0};
  plan.aggregates = {{Aggregate::Kind::kCount, 1, -1},
                     {Aggregate::Kind::kSum, 2, -1},
                     {Aggregate::Kind::kAvg, 3, 6},
                     {Aggregate::Kind::kMin, 4, -1},
                     {Aggregate::Kind::kBoolAnd, 5, -1}};
  plan.outputs = {{Output::Kind::kGroupKey, 0},  {Output::Kind::kAggregate, 0},
                  {Output::Kind::kAggregate, 1}, {Output::Kind::kAggregate, 2},
                  {Output::Kind::kAggregate, 3}, {Output::Kind::kAggregate, 4}};
  plan.hidden = 1;
  Predicate having;
  having.kind = Predicate::Kind::kCompare;
  having.op = Predicate::Op::kGt;
  having.left_value = 1;
  having.right_const = "1";
  plan.having = having;
  plan.order.push_back({.column = 2, .descending = true, .nulls_first = true});
  Collation c;
  Merger m(plan, 2, c, std::nullopt, std::nullopt);
  std::string err;
  auto desc = m.describe(row_description({{"g", oid::kText},
                                          {"count", oid::kInt8},
                                          {"sum", oid::kInt8},
                                          {"avg", oid::kInt8},
                                          {"min", oid::kText},
                                          {"bool_and", oid::kBool},
                                          {"count", oid::kInt8}}),
                         &err);
  REQUIRE(desc);
  auto fields = proto::RowDescription::parse(*desc)->fields;
  REQUIRE(fields.size() == 6);
  CHECK(fields[3].type_oid == oid::kNumeric);  // avg(int) is numeric
  auto out = run(m, {{data_row({"x", "2", "3", "3", "b", "t", "2"}),
                      data_row({"y", "1", "5", "5", "q", "t", "1"})},
                     {data_row({"x", "1", "10", "10", "a", "f", "1"}),
                      data_row({"z", "2", "100", "100", "z", "t", "2"})}});
  CHECK(rows_of(out) ==
        std::vector<std::vector<std::string>>{{"z", "2", "100", "50.0000000000000000", "z", "t"},
                                              {"x", "3", "13", "4.3333333333333333", "a", "f"}});
}

TEST_CASE("aggregates over no rows give count 0 and NULL sums", "[merge]") {
  MergePlan plan;
  plan.aggregate = true;
  plan.aggregates = {{Aggregate::Kind::kCount, 0, -1}, {Aggregate::Kind::kSum, 1, -1}};
  plan.outputs = {{Output::Kind::kAggregate, 0}, {Output::Kind::kAggregate, 1}};
  Collation c;
  Merger m(plan, 2, c, std::nullopt, std::nullopt);
  std::string err;
  REQUIRE(m.describe(row_description({{"count", oid::kInt8}, {"sum", oid::kNumeric}}), &err));
  auto out = run(m, {{data_row({"0", std::nullopt})}, {data_row({"0", std::nullopt})}});
  CHECK(rows_of(out) == std::vector<std::vector<std::string>>{{"0", "NULL"}});
}

TEST_CASE("types pgshard cannot order are refused, not guessed", "[merge]") {
  MergePlan plan;
  plan.order.push_back({.column = 0});
  Collation c;
  Merger m(plan, 2, c, std::nullopt, std::nullopt);
  std::string err;
  CHECK_FALSE(m.describe(row_description({{"i", oid::kInterval}}), &err));
  CHECK(err.find("interval") != std::string::npos);
}

TEST_CASE("describe refuses what it cannot merge, saying why", "[merge]") {
  // Each case: a plan, the shards' columns, the exact message (empty: accepted).
  auto refusal = [](const MergePlan& plan, std::vector<std::pair<std::string, int32_t>> cols,
                    const ColumnCollations* collations = nullptr) {
    Collation c;
    Merger m(plan, 2, c, std::nullopt, std::nullopt);
    std::string err;
    const bool ok = m.describe(row_description(std::move(cols)), &err, collations).has_value();
    return ok ? std::string() : err;
  };
  auto aggregate_plan = [](Aggregate::Kind kind, int32_t cast_type = 0) {
    MergePlan plan;
    plan.aggregate = true;
    plan.aggregates = {{kind, 0, -1}};
    plan.aggregates[0].cast_type = cast_type;
    plan.outputs = {{Output::Kind::kAggregate, 0}};
    return plan;
  };
  const std::string fewer = "the shards returned fewer columns than pgshard asked for";
  {
    Collation c;
    Merger m(MergePlan{}, 2, c, std::nullopt, std::nullopt);
    std::string err;
    CHECK_FALSE(m.describe("x", &err));
    CHECK(err == "malformed RowDescription from a shard");
  }
  MergePlan hidden;
  hidden.hidden = 2;
  CHECK(refusal(hidden, {{"a", oid::kInt4}}) == fewer);
  MergePlan no_outputs;
  no_outputs.aggregate = true;
  CHECK(refusal(no_outputs, {{"a", oid::kInt4}}) ==
        "the merge plan has fewer outputs than the client's columns");
  MergePlan key_beyond;
  key_beyond.aggregate = true;
  key_beyond.outputs = {{Output::Kind::kGroupKey, 3}};
  CHECK(refusal(key_beyond, {{"a", oid::kInt4}}) == fewer);
  auto avg_beyond = aggregate_plan(Aggregate::Kind::kAvg);
  avg_beyond.aggregates[0].count_column = 4;
  CHECK(refusal(avg_beyond, {{"a", oid::kInt8}}) == fewer);

  CHECK(refusal(aggregate_plan(Aggregate::Kind::kCount), {{"count", oid::kInt4}}) ==
        "count() from a shard is not bigint");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kSum), {{"sum", oid::kInterval}}) ==
        "sum() over interval across shards is not supported");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kSum), {{"sum", oid::kFloat4}}) ==
        "sum() over real across shards is not exact (cast the argument to double precision: "
        "sum(x::float8))");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kAvg), {{"avg", oid::kInt4}}) ==
        "avg() over type 23 across shards is not supported");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kAvg), {{"avg", oid::kFloat4}}) ==
        "avg() over real across shards is not exact (cast the argument to double precision: "
        "avg(x::float8) is the value PostgreSQL computes)");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kMax), {{"max", 114}}) ==
        "min()/max() over json across shards is not supported");
  CHECK(refusal(aggregate_plan(Aggregate::Kind::kBoolOr), {{"bool_or", oid::kInt4}}) ==
        "bool_and()/bool_or() from a shard is not boolean");
  // A computed text column when the schema has columns of other collations.
  ColumnCollations others;
  others.relations.insert("profiles");
  auto min_text = aggregate_plan(Aggregate::Kind::kMin);
  min_text.relations = {"profiles"};
  CHECK(refusal(min_text, {{"min", oid::kText}}, &others) ==
        "min()/max(): ordering computed text across shards when the schema has columns with "
        "other collations than the database's");
  // The merged types: sum(int)::float8 is described as float8, avg(float8) as float8,
  // sum(numeric)::numeric(10,2) with the cast's typmod.
  auto described = [](const MergePlan& plan, int32_t type) {
    Collation c;
    Merger m(plan, 2, c, std::nullopt, std::nullopt);
    std::string err;
    auto desc = m.describe(row_description({{"x", type}}), &err);
    REQUIRE(desc);
    return proto::RowDescription::parse(*desc)->fields.at(0);
  };
  auto sum_float8 = described(aggregate_plan(Aggregate::Kind::kSum, oid::kFloat8), oid::kInt4);
  CHECK((sum_float8.type_oid == oid::kFloat8 && sum_float8.type_size == 8));
  auto avg_float8 = described(aggregate_plan(Aggregate::Kind::kAvg), oid::kFloat8);
  CHECK(avg_float8.type_oid == oid::kFloat8);  // the shards' own column, kept as sent
  auto sum_typmod = aggregate_plan(Aggregate::Kind::kSum);
  sum_typmod.aggregates[0].typmod = (10 << 16 | 2) + 4;
  auto sum_numeric = described(sum_typmod, oid::kNumeric);
  CHECK((sum_numeric.type_oid == oid::kNumeric && sum_numeric.type_modifier == (10 << 16 | 2) + 4));

  // GROUP BY / DISTINCT across shards: nondeterministic collations and inexact equality.
  ColumnCollations nondeterministic;
  nondeterministic.columns[{500, 1}] = *collation_entry("ci", "i", false, "", Collation());
  MergePlan group_ci;
  group_ci.group_columns = {0};
  {
    Collation c;
    Merger m(group_ci, 2, c, std::nullopt, std::nullopt);
    proto::RowDescription d;
    d.fields.push_back({"nick", 500, 1, oid::kText, -1, -1, 0});
    std::string frame, err;
    d.write(frame);
    CHECK_FALSE(m.describe(std::string_view(frame).substr(5), &err, &nondeterministic));
    CHECK(err == "GROUP BY or DISTINCT on a column with a nondeterministic collation");
  }
  MergePlan group_json;
  group_json.group_columns = {0};
  CHECK(refusal(group_json, {{"j", 114}}) ==
        "GROUP BY on values of json (whose equality is not their bytes) across shards");
  group_json.groups_within_shard = true;  // the key holds the shard key: groups never span
  CHECK(refusal(group_json, {{"j", 114}}).empty());
  MergePlan distinct_json;
  distinct_json.distinct = true;
  CHECK(refusal(distinct_json, {{"i", oid::kInt4}, {"j", 3802}}) ==
        "DISTINCT on values of jsonb (whose equality is not their bytes) across shards");
  distinct_json.distinct_within_shard = true;
  CHECK(refusal(distinct_json, {{"i", oid::kInt4}, {"j", 3802}}).empty());

  // ORDER BY a column the shards did not send, or of a type pgshard cannot order.
  MergePlan order_beyond;
  order_beyond.order.push_back({.column = 2});
  CHECK(refusal(order_beyond, {{"a", oid::kInt4}}) == fewer);
  MergePlan order_record;
  order_record.order.push_back({.column = 0});
  CHECK(refusal(order_record, {{"r", 2249}}) ==
        "ordering values of record across shards is not supported");
}

TEST_CASE("column collations: as the database's, byte order, or refused", "[merge][value]") {
  const Collation utf8_c = *Collation::open("C.UTF-8");
  // The same ordering as the database's collation: nothing to note.
  CHECK_FALSE(collation_entry("C", "c", true, "C", utf8_c));
  CHECK_FALSE(collation_entry("ucs_basic", "c", true, "C", utf8_c));
  CHECK_FALSE(collation_entry("C.utf8", "c", true, "C.utf8", utf8_c));
  // ICU and nondeterministic collations are not compared by pgshard; nor is a locale the
  // pgshard host lacks.
  auto icu = collation_entry("en-x-icu", "i", true, "", utf8_c);
  REQUIRE(icu);
  CHECK_THAT(icu->problem, Catch::Contains("ICU collation \"en-x-icu\""));
  auto nd = collation_entry("ci", "i", false, "", utf8_c);
  REQUIRE(nd);
  CHECK_FALSE(nd->deterministic);
  auto missing = collation_entry("xx", "c", true, "xx_YY.nowhere", utf8_c);
  REQUIRE(missing);
  CHECK_THAT(missing->problem, Catch::Contains("not available on the pgshard host"));
}

TEST_CASE("ORDER BY a column with another collation: its own order, or 0A000", "[merge]") {
  // Column 1 of table 500 has an ICU collation; column 2 has byte order under a database
  // whose collation is not byte order; computed columns of table 500 have no known one.
  ColumnCollations cols;
  cols.columns[{500, 1}] = *collation_entry("en-x-icu", "i", true, "", Collation());
  cols.columns[{500, 2}] = ColumnCollations::Entry{"C", nullptr, "", true};
  cols.relations.insert("profiles");
  auto describe = [&](int32_t table, int16_t attnum, std::vector<std::string> relations) {
    MergePlan plan;
    plan.order.push_back({0, false, false, false});
    plan.relations = std::move(relations);
    proto::RowDescription d;
    d.fields.push_back({"nick", table, attnum, oid::kText, -1, -1, 0});
    std::string frame;
    d.write(frame);
    std::string err;
    Merger m(plan, 2, Collation(), std::nullopt, std::nullopt);
    const bool ok = m.describe(std::string_view(frame).substr(5), &err, &cols).has_value();
    return ok ? std::string() : err;
  };
  CHECK_THAT(describe(500, 1, {"profiles"}), Catch::Contains("ICU collation"));
  CHECK(describe(500, 2, {"profiles"}).empty());
  CHECK(describe(501, 1, {"users"}).empty());  // another table: the database's collation
  CHECK_THAT(describe(0, 0, {"profiles"}), Catch::Contains("computed text"));
  CHECK(describe(0, 0, {"users"}).empty());
}

TEST_CASE("binary parameters decode to PostgreSQL's text form", "[merge][value]") {
  // (INSERT ... SELECT puts a SELECT's parameters in as literals; psycopg 3 binds numbers in
  // binary.)
  const std::string eight("\x00\x00\x00\x00\x00\x00\x01\x00", 8), four("\xff\xff\xff\xfe", 4);
  CHECK(binary_to_text(oid::kInt8, eight) == "256");
  CHECK(binary_to_text(oid::kInt4, four) == "-2");
  CHECK(binary_to_text(oid::kText, "it's") == "it's");
  CHECK(binary_to_text(oid::kBytea, std::string("\x00\xff", 2)) == "\\x00ff");
  CHECK(binary_to_text(
            oid::kUuid,
            std::string("\x12\x34\x56\x78\x9a\xbc\xde\xf0\x12\x34\x56\x78\x9a\xbc\xde\xf0", 16)) ==
        "12345678-9abc-def0-1234-56789abcdef0");
  CHECK_FALSE(binary_to_text(oid::kUuid, "short"));
  CHECK_FALSE(binary_to_text(oid::kInt8, four));
  CHECK_FALSE(binary_to_text(oid::kDate, four));
}
