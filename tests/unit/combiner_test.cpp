// The multi-shard reply combiner (executor::Combiner) fed hand-built shard replies in the
// order it asks for them: merged rows, summed tags, one error, notices once, lost shards.
#include "proxy/executor/combiner.hpp"

#include <catch2/catch.hpp>
#include <deque>

#include "protocol/messages.hpp"
#include "proxy/merge/value.hpp"
#include "wire.hpp"

using namespace pgshard;
namespace proto = pgshard::protocol;
namespace msg = pgshard::protocol::msg;

namespace {

std::string row_description(std::vector<std::pair<std::string, int32_t>> cols) {
  proto::RowDescription d;
  for (auto& [name, type] : cols) d.fields.push_back({name, 0, 0, type, -1, -1, 0});
  std::string out;
  d.write(out);
  return out;
}
std::string data_row(std::vector<std::string> values) {
  proto::DataRow r;
  for (auto& v : values) r.values.push_back(proto::Value(v));
  std::string out;
  r.write(out);
  return out;
}
using testing::complete;
std::string error(std::string_view code) {
  return testing::error(code);
}
std::string notice() {
  std::string out;
  proto::write_notice(out, proto::error("01000", "hello"));
  return out;
}
std::string ready() {
  return proto::ready_for_query('I');
}

// Each shard's replies; nullopt: the shard is lost at that point.
using Script = std::vector<std::deque<std::optional<std::string>>>;

// Runs the combiner over the scripts as the executor would; returns the client's messages as
// one letter per message type (rows as D).
std::string run(executor::Combiner& c, Script shards, std::vector<std::string>* rows = nullptr) {
  for (int i; (i = c.wants()) >= 0;) {
    auto& q = shards[static_cast<std::size_t>(i)];
    REQUIRE_FALSE(q.empty());  // never asks past a ReadyForQuery
    auto next = q.front();
    q.pop_front();
    if (!next) {
      c.fail(i, "connection lost", false);
      continue;
    }
    auto d = proto::decode_frame(*next);
    REQUIRE(d.status == proto::DecodeStatus::kFrame);
    c.add(i, d.frame, *next, false);
  }
  std::string types;
  for (std::string_view rest = c.out(); !rest.empty();) {
    auto d = proto::decode_frame(rest);
    REQUIRE(d.status == proto::DecodeStatus::kFrame);
    types += d.frame.type;
    if (d.frame.type == msg::kDataRow && rows) {
      auto r = proto::DataRow::parse(d.frame.body);
      rows->push_back(std::string(*r->values[0]));
    }
    if (d.frame.type == msg::kCommandComplete && rows)
      rows->push_back("tag:" + std::string(proto::CommandComplete::parse(d.frame.body)->tag));
    rest.remove_prefix(d.consumed);
  }
  return types;
}

executor::CombineOptions names(int n) {
  executor::CombineOptions o;
  for (int i = 0; i < n; ++i) o.shard_names.push_back("s" + std::to_string(i));
  return o;
}

}  // namespace

TEST_CASE("rows of every shard pass through, tags are summed, one answer", "[combiner]") {
  executor::Combiner c(2, names(2));
  const auto desc = row_description({{"id", merge::oid::kInt4}});
  std::vector<std::string> rows;
  auto types = run(c,
                   {{desc, data_row({"1"}), data_row({"2"}), complete("SELECT 2"), ready()},
                    {desc, data_row({"3"}), complete("SELECT 1"), ready()}},
                   &rows);
  CHECK(types == "TDDDC");
  CHECK(rows == std::vector<std::string>{"1", "2", "3", "tag:SELECT 3"});
  CHECK_FALSE(c.failure());
  CHECK(c.finished(0));
  CHECK(c.finished(1));
}

TEST_CASE("an INSERT across shards reports the sum in PostgreSQL's form", "[combiner]") {
  executor::Combiner c(3, names(3));
  std::vector<std::string> rows;
  run(c,
      {{complete("INSERT 0 2"), ready()},
       {complete("INSERT 0 1"), ready()},
       {complete("INSERT 0 0"), ready()}},
      &rows);
  CHECK(rows == std::vector<std::string>{"tag:INSERT 0 3"});
}

TEST_CASE("a reference-table write counts its rows once", "[combiner]") {
  auto o = names(2);
  o.replicated = true;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"id", merge::oid::kInt4}});
  std::vector<std::string> rows;
  run(c,
      {{desc, data_row({"7"}), complete("UPDATE 1"), ready()},
       {desc, data_row({"7"}), complete("UPDATE 1"), ready()}},
      &rows);
  CHECK(rows == std::vector<std::string>{"7", "tag:UPDATE 1"});
}

TEST_CASE("a shard's error reaches the client once and every shard skips to its end",
          "[combiner]") {
  executor::Combiner c(3, names(3));
  const auto desc = row_description({{"id", merge::oid::kInt4}});
  auto types = run(c, {{desc, data_row({"1"}), error("22012"), ready()},
                       {desc, error("22012"), ready()},
                       {desc, data_row({"2"}), complete("SELECT 1"), ready()}});
  // The error's round decides: the rows that came with it are dropped, as is the rest.
  CHECK(types == "TE");
  CHECK(c.error_sent());
  CHECK_FALSE(c.failure());
  for (int i = 0; i < 3; ++i) CHECK(c.finished(i));
}

TEST_CASE("shards that disagree on the columns fail the statement", "[combiner]") {
  executor::Combiner c(2, names(2));
  run(c, {{row_description({{"id", merge::oid::kInt4}}), ready()},
          {row_description({{"id", merge::oid::kInt8}}), ready()}});
  REQUIRE(c.failure());
  CHECK(c.failure()->code == "42804");
  CHECK(c.failure()->message.find("shard s1") != std::string::npos);
}

TEST_CASE("shards that answer differently fail the statement", "[combiner]") {
  executor::Combiner c(2, names(2));
  run(c, {{complete("SELECT 0"), ready()}, {proto::ready_for_query('I')}});
  REQUIRE(c.failure());
  CHECK(c.failure()->code == "XX000");
}

TEST_CASE("the same notice from every shard reaches the client once", "[combiner]") {
  executor::Combiner c(2, names(2));
  auto types = run(c, {{notice(), complete("DO"), ready()}, {notice(), complete("DO"), ready()}});
  CHECK(types == "NC");
}

TEST_CASE("a lost shard fails the statement, or is left out of a partial answer", "[combiner]") {
  const auto desc = row_description({{"id", merge::oid::kInt4}});
  SECTION("strict") {
    executor::Combiner c(2, names(2));
    run(c, {{desc, data_row({"1"}), complete("SELECT 1"), ready()}, {desc, std::nullopt}});
    REQUIRE(c.failure());
    CHECK(c.failure()->code == "08006");
    CHECK(c.failure()->message == "shard s1 connection lost");
  }
  SECTION("partial") {
    auto o = names(2);
    o.partial = true;
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    run(c, {{desc, data_row({"1"}), complete("SELECT 1"), ready()}, {desc, std::nullopt}}, &rows);
    CHECK_FALSE(c.failure());
    CHECK(c.missing() == std::vector<std::string>{"s1"});
    CHECK(rows == std::vector<std::string>{"1", "tag:SELECT 1"});
  }
}

TEST_CASE("Execute's row limit cuts the rows and suspends the portal", "[combiner]") {
  auto o = names(2);
  o.max_rows = 2;
  executor::Combiner c(2, o);
  auto types = run(c, {{data_row({"1"}), data_row({"2"}), complete("SELECT 2"), ready()},
                       {data_row({"3"}), complete("SELECT 1"), ready()}});
  CHECK(types == "DDs");
}

TEST_CASE("an ORDER BY LIMIT merge asks for the rows it needs and stops reading", "[combiner]") {
  merge::MergePlan plan;
  plan.order.push_back({.column = 0});
  merge::Collation collation;
  auto o = names(2);
  o.plan = &plan;
  o.collation = &collation;
  o.limit = 3;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"k", merge::oid::kInt4}});
  std::vector<std::string> rows;
  auto types = run(
      c,
      {{desc, data_row({"1"}), data_row({"4"}), data_row({"5"}), data_row({"6"}),
        complete("SELECT 4"), ready()},
       {desc, data_row({"2"}), data_row({"3"}), data_row({"7"}), complete("SELECT 3"), ready()}},
      &rows);
  CHECK(types == "TDDDC");
  CHECK(rows == std::vector<std::string>{"1", "2", "3", "tag:SELECT 3"});
}

TEST_CASE("a RowDescription pgshard asked for feeds the merge but not the client", "[combiner]") {
  merge::MergePlan plan;
  merge::Collation collation;
  auto o = names(2);
  o.plan = &plan;
  o.collation = &collation;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"k", merge::oid::kInt4}});
  for (int i; (i = c.wants()) >= 0;) {
    static std::vector<std::deque<std::string>> shards = {
        {desc, data_row({"1"}), complete("SELECT 1"), ready()},
        {desc, complete("SELECT 0"), ready()}};
    auto& q = shards[static_cast<std::size_t>(i)];
    auto m = q.front();
    q.pop_front();
    auto d = proto::decode_frame(m);
    c.add(i, d.frame, m, d.frame.type == msg::kRowDescription);
  }
  auto d = proto::decode_frame(c.out());
  REQUIRE(d.status == proto::DecodeStatus::kFrame);
  CHECK(d.frame.type == msg::kDataRow);
}

TEST_CASE("a split INSERT ... RETURNING returns rows in VALUES order", "[combiner]") {
  // VALUES rows 0..4 went to legs 1, 0, 1, 1, 0; each shard returns its rows in its order.
  auto o = names(2);
  o.row_legs = {1, 0, 1, 1, 0};
  const auto desc = row_description({{"id", merge::oid::kInt4}});
  {
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    run(c,
        {{desc, data_row({"r1"}), data_row({"r4"}), complete("INSERT 0 2"), ready()},
         {desc, data_row({"r0"}), data_row({"r2"}), data_row({"r3"}), complete("INSERT 0 3"),
          ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"r0", "r1", "r2", "r3", "r4", "tag:INSERT 0 5"});
  }
  {
    // A shard returned fewer rows (ON CONFLICT DO NOTHING): each shard's rows in turn.
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    run(c,
        {{desc, data_row({"r1"}), complete("INSERT 0 1"), ready()},
         {desc, data_row({"r0"}), data_row({"r2"}), data_row({"r3"}), complete("INSERT 0 3"),
          ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"r1", "r0", "r2", "r3", "tag:INSERT 0 4"});
  }
}

namespace {
// A RowDescription of table columns (table OID and column number set), as RETURNING sends.
std::string table_columns(std::vector<std::pair<std::string, int16_t>> cols) {
  proto::RowDescription d;
  int16_t n = 0;
  for (auto& [name, format] : cols) d.fields.push_back({name, 16384, ++n, 23, 4, -1, format});
  std::string out;
  d.write(out);
  return out;
}
}  // namespace

TEST_CASE("a split INSERT that skips rows still returns them in VALUES order by key",
          "[combiner]") {
  // VALUES keys 10, 11, 12, 13, 14 went to legs 1, 0, 1, 1, 0; ON CONFLICT DO NOTHING skipped
  // 12 (leg 1) and 14 (leg 0).
  auto o = names(2);
  o.row_legs = {1, 0, 1, 1, 0};
  o.row_keys = {"10", "11", "12", "13", "14"};
  o.key_column = "id";
  o.key_type = config::KeyType::kInt4;
  const auto desc = table_columns({{"name", 0}, {"id", 0}});
  {
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    run(c,
        {{desc, data_row({"b", "11"}), complete("INSERT 0 1"), ready()},
         {desc, data_row({"a", "10"}), data_row({"d", "13"}), complete("INSERT 0 2"), ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"a", "b", "d", "tag:INSERT 0 3"});
  }
  {
    // The key in binary format (int4 13 is 00 00 00 0d).
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    auto bin = [](char v) { return std::string("\0\0\0", 3) + v; };
    run(c,
        {{table_columns({{"name", 0}, {"id", 1}}), data_row({"b", bin(11)}), complete("INSERT 0 1"),
          ready()},
         {table_columns({{"name", 0}, {"id", 1}}), data_row({"a", bin(10)}),
          data_row({"d", bin(13)}), complete("INSERT 0 2"), ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"a", "b", "d", "tag:INSERT 0 3"});
  }
  {
    // A key repeated on a shard that skipped rows: which one was skipped cannot be told, so
    // each shard's rows come in turn rather than in a guessed order.
    auto r = o;
    r.row_keys = {"10", "11", "10", "13", "14"};
    executor::Combiner c(2, r);
    std::vector<std::string> rows;
    run(c,
        {{desc, data_row({"b", "11"}), data_row({"e", "14"}), complete("INSERT 0 2"), ready()},
         {desc, data_row({"c", "10"}), data_row({"d", "13"}), complete("INSERT 0 2"), ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"b", "e", "c", "d", "tag:INSERT 0 4"});
  }
  {
    // RETURNING without the key column: shard by shard too.
    executor::Combiner c(2, o);
    std::vector<std::string> rows;
    const auto no_key = table_columns({{"name", 0}});
    run(c,
        {{no_key, data_row({"b"}), complete("INSERT 0 1"), ready()},
         {no_key, data_row({"a"}), data_row({"d"}), complete("INSERT 0 2"), ready()}},
        &rows);
    CHECK(rows == std::vector<std::string>{"b", "a", "d", "tag:INSERT 0 3"});
  }
}

namespace {

std::string copy_out_response(int8_t format) {
  proto::CopyResponse r;
  r.type = msg::kCopyOutResponse;
  r.format = format;
  r.column_formats = {format, format};
  std::string out;
  r.write(out);
  return out;
}
std::string copy_data(std::string_view bytes) {
  std::string out;
  proto::CopyData{bytes}.write(out);
  return out;
}
// The client's CopyData payloads joined, and the message types in order.
std::string copy_stream(const std::string& out, std::string* types) {
  std::string data;
  for (std::string_view rest = out; !rest.empty();) {
    auto d = proto::decode_frame(rest);
    REQUIRE(d.status == proto::DecodeStatus::kFrame);
    if (d.frame.type == msg::kCopyData)
      data.append(d.frame.body);
    else
      *types += d.frame.type;
    rest.remove_prefix(d.consumed);
  }
  return data;
}
const std::string kSignature("PGCOPY\n\xff\r\n\0", 11);
const std::string kHeader = kSignature + std::string(8, '\0');
const std::string kTrailer("\xff\xff", 2);
// A binary tuple of one int4 field.
std::string tuple(char v) {
  return std::string("\0\x01\0\0\0\x04\0\0\0", 9) + v;
}

}  // namespace

TEST_CASE("COPY TO over shards: one CSV header line, rows of every shard, the total tag",
          "[combiner]") {
  auto o = names(3);
  o.copy_header = true;
  executor::Combiner c(3, o);
  Script s;
  for (int i = 0; i < 3; ++i) {
    std::deque<std::optional<std::string>> q{copy_out_response(0), copy_data("id,name\n")};
    for (int r = 0; r < i; ++r) q.push_back(copy_data(std::to_string(i) + ",x\n"));
    q.push_back(testing::empty(msg::kCopyDone));
    q.push_back(complete("COPY " + std::to_string(i)));
    q.push_back(ready());
    s.push_back(q);
  }
  run(c, s);
  std::string types;
  CHECK(copy_stream(c.out(), &types) == "id,name\n1,x\n2,x\n2,x\n");
  CHECK(types == "HcC");
  CHECK(c.out().find("COPY 3") != std::string::npos);
  // Without HEADER every first line is a row.
  executor::Combiner plain(3, names(3));
  run(plain, s);
  types.clear();
  CHECK(copy_stream(plain.out(), &types) == "id,name\nid,name\n1,x\nid,name\n2,x\n2,x\n");
}

TEST_CASE("binary COPY TO over shards: one file header first, one trailer last", "[combiner]") {
  executor::Combiner c(3, names(3));
  Script s;
  // Shard 0: header with its first row, then the trailer alone (as copyto.c sends them);
  // shard 1: no rows (header and trailer in one message); shard 2: cut at odd places.
  s.push_back({copy_out_response(1), copy_data(kHeader + tuple('a')), copy_data(tuple('b')),
               copy_data(kTrailer), testing::empty(msg::kCopyDone), complete("COPY 2"), ready()});
  s.push_back({copy_out_response(1), copy_data(kHeader + kTrailer), testing::empty(msg::kCopyDone),
               complete("COPY 0"), ready()});
  const std::string rest = kHeader + tuple('c') + tuple('d') + kTrailer;
  s.push_back({copy_out_response(1), copy_data(rest.substr(0, 7)), copy_data(rest.substr(7, 20)),
               copy_data(rest.substr(27, 1)), copy_data(rest.substr(28, rest.size() - 29)),
               copy_data(rest.substr(rest.size() - 1)), testing::empty(msg::kCopyDone),
               complete("COPY 2"), ready()});
  run(c, s);
  std::string types;
  CHECK(copy_stream(c.out(), &types) ==
        kHeader + tuple('a') + tuple('b') + tuple('c') + tuple('d') + kTrailer);
  CHECK(types == "HcC");
  CHECK(!c.failure());
  CHECK(c.out().find("COPY 4") != std::string::npos);
}

TEST_CASE("a fan-out never waits for COPY FROM STDIN data", "[combiner]") {
  executor::Combiner c(2, names(2));
  proto::CopyResponse g;
  std::string in;
  g.write(in);
  Script s{{in, testing::empty(msg::kCopyDone)}, {in, testing::empty(msg::kCopyDone)}};
  run(c, s);
  REQUIRE(c.failure());
  CHECK(c.failure()->code == "0A000");
}

TEST_CASE("a merge the shards' columns cannot feed fails with 0A000 and says how to avoid it",
          "[combiner]") {
  merge::MergePlan plan;
  plan.order.push_back({.column = 0});
  merge::Collation collation;
  auto o = names(2);
  o.plan = &plan;
  o.collation = &collation;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"i", merge::oid::kInterval}});
  auto types =
      run(c, {{desc, complete("SELECT 0"), ready()}, {desc, complete("SELECT 0"), ready()}});
  REQUIRE(c.failure());
  CHECK(c.failure()->code == "0A000");
  CHECK(c.failure()->message == "ordering values of interval across shards is not supported");
  CHECK(c.failure()->hint == "add the shard key to the WHERE clause so one shard answers");
  CHECK(types.find('T') == std::string::npos);  // no RowDescription before the error
}

TEST_CASE("a merged total out of range fails the statement with PostgreSQL's SQLSTATE",
          "[combiner]") {
  merge::MergePlan plan;
  plan.aggregate = true;
  plan.aggregates = {{merge::Aggregate::Kind::kSum, 0, -1}};
  plan.outputs = {{merge::Output::Kind::kAggregate, 0}};
  merge::Collation collation;
  auto o = names(2);
  o.plan = &plan;
  o.collation = &collation;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"sum", merge::oid::kInt8}});
  auto types = run(c, {{desc, data_row({"9223372036854775807"}), complete("SELECT 1"), ready()},
                       {desc, data_row({"1"}), complete("SELECT 1"), ready()}});
  REQUIRE(c.failure());
  CHECK(c.failure()->code == "22003");
  CHECK(c.failure()->message == "bigint out of range");
  CHECK(types.find('C') == std::string::npos);
}

TEST_CASE("a merged answer cut by Execute's row limit ends in PortalSuspended", "[combiner]") {
  merge::MergePlan plan;
  plan.order.push_back({.column = 0});
  merge::Collation collation;
  auto o = names(2);
  o.plan = &plan;
  o.collation = &collation;
  o.max_rows = 2;
  executor::Combiner c(2, o);
  const auto desc = row_description({{"k", merge::oid::kInt4}});
  std::vector<std::string> rows;
  auto types = run(c,
                   {{desc, data_row({"1"}), data_row({"4"}), complete("SELECT 2"), ready()},
                    {desc, data_row({"2"}), data_row({"3"}), complete("SELECT 2"), ready()}},
                   &rows);
  CHECK_FALSE(c.failure());
  CHECK(types.back() == 's');
  CHECK(types.find('C') == std::string::npos);
  CHECK(rows == std::vector<std::string>{"1", "2"});
}

TEST_CASE("a hidden RowDescription without a merge is not passed on", "[combiner]") {
  executor::Combiner c(2, names(2));
  const auto desc = row_description({{"k", merge::oid::kInt4}});
  std::vector<std::deque<std::string>> shards = {
      {desc, data_row({"1"}), complete("SELECT 1"), ready()},
      {desc, complete("SELECT 0"), ready()}};
  for (int i; (i = c.wants()) >= 0;) {
    auto& q = shards[static_cast<std::size_t>(i)];
    auto m = q.front();
    q.pop_front();
    auto d = proto::decode_frame(m);
    c.add(i, d.frame, m, d.frame.type == msg::kRowDescription);
  }
  std::string types;
  for (std::string_view rest = c.out(); !rest.empty();) {
    auto d = proto::decode_frame(rest);
    types += d.frame.type;
    rest.remove_prefix(d.consumed);
  }
  CHECK(types == "DC");
}
