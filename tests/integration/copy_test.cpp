// COPY over several shards answers as one PostgreSQL holding all the rows (issue 30): one
// header and one binary file out of several shards, COPY FROM STDIN into tables every shard
// holds a copy of (reference tables, `unsharded: all`), and no statement left hanging when
// shards disagree.
#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <vector>

#include "harness.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"

using namespace harness;
using namespace std::chrono_literals;
namespace p = pgshard::protocol;

namespace {

constexpr int kRows = 60;

ProxyOptions items_map(const std::string& extra = "") {
  ProxyOptions o;
  o.sharded_tables = "  - { table: cp_items, column: id, type: bigint }\n";
  o.extra_top = extra;
  return o;
}

// Runs `sql` on every shard directly.
void everywhere(const std::string& sql) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), sql);
  }
}

std::vector<long long> counts(const std::string& table) {
  std::vector<long long> n;
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    n.push_back(std::stoll(scalar(d.get(), "select count(*) from " + table)));
  }
  return n;
}

// cp_items sharded over every shard (rows placed by pgshard), and cp_one on shard 0 with
// the same rows: the one PostgreSQL the answers are compared with.
void make_items(const Proxy& proxy) {
  everywhere(
      "drop table if exists cp_items; drop table if exists cp_one; "
      "create table cp_items (id bigint primary key, name text, score numeric)");
  auto c = connect(proxy.conninfo());
  std::string values;
  for (int k = 1; k <= kRows; ++k)
    values += (k > 1 ? ", (" : "(") + std::to_string(k) + ", 'n," + std::to_string(k) + "', " +
              std::to_string(k) + ".5)";
  query(c.get(), "insert into cp_items (id, name, score) values " + values);
  auto d = connect(Cluster::get().direct(0));
  query(d.get(), "create table cp_one (id bigint primary key, name text, score numeric)");
  query(d.get(), "insert into cp_one (id, name, score) values " + values);
  for (long long n : counts("cp_items")) REQUIRE(n > 0);  // rows on every shard
}

struct CopyOut {
  std::string data;
  std::string tag;
  std::string error;
};

CopyOut copy_out(PGconn* c, const std::string& sql) {
  CopyOut out;
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) != PGRES_COPY_OUT) {
    out.error = PQresultErrorMessage(r);
    PQclear(r);
    return out;
  }
  PQclear(r);
  char* buf = nullptr;
  int n;
  while ((n = PQgetCopyData(c, &buf, 0)) > 0) {
    out.data.append(buf, static_cast<std::size_t>(n));
    PQfreemem(buf);
  }
  while ((r = PQgetResult(c)) != nullptr) {
    if (PQresultStatus(r) == PGRES_COMMAND_OK)
      out.tag = PQcmdStatus(r);
    else
      out.error += PQresultErrorMessage(r);
    PQclear(r);
  }
  return out;
}

// Sends `data` as COPY FROM STDIN; returns the tag, or "ERROR <sqlstate>".
std::string copy_in(PGconn* c, const std::string& sql, const std::string& data) {
  PGresult* r = PQexec(c, sql.c_str());
  if (PQresultStatus(r) != PGRES_COPY_IN) {
    std::string e = "ERROR ";
    const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    e += s ? s : "?";
    PQclear(r);
    return e;
  }
  PQclear(r);
  for (std::size_t at = 0; at < data.size(); at += 1000) {
    const std::string part = data.substr(at, 1000);
    if (PQputCopyData(c, part.data(), static_cast<int>(part.size())) != 1) return "put failed";
  }
  if (PQputCopyEnd(c, nullptr) != 1) return "end failed";
  std::string tag;
  while ((r = PQgetResult(c)) != nullptr) {
    if (PQresultStatus(r) == PGRES_COMMAND_OK) {
      tag = PQcmdStatus(r);
    } else {
      const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      tag = std::string("ERROR ") + (s ? s : "?");
    }
    PQclear(r);
  }
  return tag;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    auto nl = text.find('\n', at);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(at, nl - at));
    at = nl + 1;
  }
  return out;
}

int occurrences(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (auto at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

std::string text_rows(int from, int to) {
  std::string rows;
  for (int k = from; k <= to; ++k) rows += std::to_string(k) + "\tc" + std::to_string(k) + "\n";
  return rows;
}

}  // namespace

TEST_CASE("COPY TO STDOUT with HEADER over several shards has one header line", "[copy]") {
  Proxy proxy(items_map());
  make_items(proxy);
  auto c = connect(proxy.conninfo());
  auto one = connect(Cluster::get().direct(0));
  // Every spelling of HEADER PostgreSQL 15 takes for COPY TO, CSV and text.
  const std::vector<std::string> options = {
      "(format csv, header)",       "(format csv, header true)",   "(FORMAT CSV, HEADER ON)",
      "(format csv, header 1)",     "(format csv, header 'TRUE')", "with csv header",
      "with (format text, header)", "csv header delimiter ';'",
  };
  for (const auto& opt : options) {
    for (const std::string source : {"%s", "(select id, name, score from %s)"}) {
      std::string from = source;
      auto sql = [&](const std::string& table) {
        std::string s = from;
        s.replace(s.find("%s"), 2, table);
        return "copy " + s + " to stdout " + opt;
      };
      INFO(sql("cp_items"));
      auto got = copy_out(c.get(), sql("cp_items"));
      auto want = copy_out(one.get(), sql("cp_one"));
      REQUIRE(got.error == "");
      REQUIRE(want.error == "");
      CHECK(got.tag == "COPY " + std::to_string(kRows));
      auto g = lines(got.data), w = lines(want.data);
      REQUIRE(g.size() == w.size());  // rows + one header
      CHECK(g.front() == w.front());
      CHECK(std::count(g.begin(), g.end(), w.front()) == 1);
      std::sort(g.begin(), g.end());
      std::sort(w.begin(), w.end());
      CHECK(g == w);
    }
  }
  // What concatenating the shards' rows cannot answer is refused, never sent wrong.
  for (const std::string sql : {"copy (select count(*) from cp_items) to stdout",
                                "copy (select id from cp_items order by id limit 3) to stdout"}) {
    INFO(sql);
    auto got = copy_out(c.get(), sql);
    CHECK(got.data.empty());
    CHECK_THAT(got.error, Catch::Contains("not supported"));
  }
  // HEADER off: no header at all.
  for (const std::string opt : {"(format csv, header false)", "(format csv, header 0)", "csv"}) {
    auto got = copy_out(c.get(), "copy cp_items to stdout " + opt);
    CHECK(lines(got.data).size() == static_cast<std::size_t>(kRows));
    CHECK(got.data.find("id,name") == std::string::npos);
  }
}

TEST_CASE("binary COPY TO STDOUT over several shards is one file a PostgreSQL loads", "[copy]") {
  Proxy proxy(items_map());
  make_items(proxy);
  auto c = connect(proxy.conninfo());
  auto one = connect(Cluster::get().direct(0));
  const std::string signature("PGCOPY\n\xff\r\n\0", 11);
  for (const std::string sql :
       {"copy cp_items to stdout (format binary)", "copy cp_items to stdout with binary",
        "copy (select id, name, score from cp_items) to stdout (format binary)"}) {
    INFO(sql);
    auto got = copy_out(c.get(), sql);
    REQUIRE(got.error == "");
    CHECK(got.tag == "COPY " + std::to_string(kRows));
    auto want = copy_out(one.get(), "copy cp_one to stdout (format binary)");
    // One header (signature, flags, extension length) and one trailer: the same size as
    // one PostgreSQL's file of the same rows.
    CHECK(occurrences(got.data, signature) == 1);
    CHECK(got.data.compare(0, 19, want.data, 0, 19) == 0);
    CHECK(got.data.size() == want.data.size());
    CHECK(got.data.substr(got.data.size() - 2) == std::string("\xff\xff", 2));
    // A PostgreSQL reads it back: every row, nothing more.
    query(one.get(), "drop table if exists cp_loaded");
    query(one.get(), "create table cp_loaded (id bigint, name text, score numeric)");
    CHECK(copy_in(one.get(), "copy cp_loaded from stdin (format binary)", got.data) ==
          "COPY " + std::to_string(kRows));
    CHECK(scalar(one.get(),
                 "select count(*) from (select * from cp_loaded except select * from cp_one) x") ==
          "0");
    CHECK(scalar(one.get(), "select count(*) from cp_loaded") == std::to_string(kRows));
  }
  // A shard with no rows still makes one file.
  query(c.get(), "delete from cp_items where id > 1");
  auto got = copy_out(c.get(), "copy cp_items to stdout (format binary)");
  CHECK(got.tag == "COPY 1");
  CHECK(occurrences(got.data, signature) == 1);
  query(one.get(), "truncate cp_loaded");
  CHECK(copy_in(one.get(), "copy cp_loaded from stdin (format binary)", got.data) == "COPY 1");
}

TEST_CASE("COPY FROM STDIN into a reference table writes every shard once or none", "[copy]") {
  everywhere(
      "drop table if exists cp_countries; "
      "create table cp_countries (id int primary key, name text)");
  Proxy proxy(items_map("reference_tables: [cp_countries]\n"));
  auto c = connect(proxy.conninfo());
  CHECK(copy_in(c.get(), "copy cp_countries from stdin", text_rows(1, kRows)) ==
        "COPY " + std::to_string(kRows));
  CHECK(counts("cp_countries") ==
        std::vector<long long>(static_cast<std::size_t>(Cluster::get().size()), kRows));
  CHECK(scalar(c.get(), "select count(*) from cp_countries") == std::to_string(kRows));
  // CSV with a header line, the column list and a binary file: as one PostgreSQL reads them.
  std::string csv = "id,name\n";
  for (int k = 101; k <= 110; ++k) csv += std::to_string(k) + ",\"x," + std::to_string(k) + "\"\n";
  CHECK(copy_in(c.get(), "copy cp_countries (id, name) from stdin with (format csv, header)",
                csv) == "COPY 10");
  auto binary = copy_out(c.get(),
                         "copy (select id + 1000, name from cp_countries) to stdout "
                         "(format binary)");
  REQUIRE(binary.error == "");
  CHECK(copy_in(c.get(), "copy cp_countries from stdin (format binary)", binary.data) ==
        "COPY " + std::to_string(kRows + 10));
  const long long all = 2 * (kRows + 10);
  CHECK(counts("cp_countries") ==
        std::vector<long long>(static_cast<std::size_t>(Cluster::get().size()), all));
  // A shard that rejects a row mid-COPY: no shard keeps any row of it.
  {
    auto d = connect(Cluster::get().direct(1));
    query(d.get(), "alter table cp_countries add constraint cp_no_5042 check (id <> 5042)");
  }
  CHECK(copy_in(c.get(), "copy cp_countries from stdin", text_rows(5001, 5000 + kRows)) ==
        "ERROR 23514");
  CHECK(counts("cp_countries") ==
        std::vector<long long>(static_cast<std::size_t>(Cluster::get().size()), all));
  // The session goes on, and so does COPY.
  CHECK(copy_in(c.get(), "copy cp_countries from stdin", text_rows(6001, 6005)) == "COPY 5");
  CHECK(counts("cp_countries") ==
        std::vector<long long>(static_cast<std::size_t>(Cluster::get().size()), all + 5));
  // With the extended protocol it is refused at once, never left waiting for rows.
  {
    PGresult* x = PQexecParams(c.get(), "copy cp_countries from stdin", 0, nullptr, nullptr,
                               nullptr, nullptr, 0);
    CHECK(PQresultStatus(x) == PGRES_FATAL_ERROR);
    const char* state = PQresultErrorField(x, PG_DIAG_SQLSTATE);
    CHECK(std::string(state ? state : "") == "0A000");
    PQclear(x);
    CHECK(scalar(c.get(), "select 1") == "1");
  }
  // Inside a transaction block it is refused, never written to one shard only.
  query(c.get(), "begin");
  CHECK(copy_in(c.get(), "copy cp_countries from stdin", text_rows(7001, 7005)) == "ERROR 0A000");
  query(c.get(), "rollback");
  CHECK(counts("cp_countries") ==
        std::vector<long long>(static_cast<std::size_t>(Cluster::get().size()), all + 5));
}

TEST_CASE("unsharded: all keeps a copy of the table on every shard", "[copy]") {
  everywhere(
      "drop table if exists cp_loose; create table cp_loose (id int primary key, name text)");
  ProxyOptions o = items_map();
  o.unsharded = "all";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  const auto shards = static_cast<std::size_t>(Cluster::get().size());
  PGresult* r = PQexec(c.get(), "insert into cp_loose values (1, 'a'), (2, 'b'), (3, 'c')");
  CHECK(std::string(PQcmdStatus(r)) == "INSERT 0 3");
  PQclear(r);
  CHECK(counts("cp_loose") == std::vector<long long>(shards, 3));
  // Reads answer from one copy: what one PostgreSQL answers.
  CHECK(scalar(c.get(), "select count(*) from cp_loose") == "3");
  CHECK(query(c.get(), "select id from cp_loose order by id") ==
        std::vector<std::vector<std::string>>{{"1"}, {"2"}, {"3"}});
  r = PQexec(c.get(), "update cp_loose set name = 'z' where id < 3");
  CHECK(std::string(PQcmdStatus(r)) == "UPDATE 2");
  PQclear(r);
  // COPY FROM STDIN returns, with the stream's count, and every copy has the rows.
  CHECK(copy_in(c.get(), "copy cp_loose from stdin", text_rows(10, 9 + kRows)) ==
        "COPY " + std::to_string(kRows));
  CHECK(counts("cp_loose") == std::vector<long long>(shards, 3 + kRows));
  CHECK(scalar(c.get(), "select count(*) from cp_loose") == std::to_string(3 + kRows));
  auto out = copy_out(c.get(), "copy cp_loose to stdout (format csv, header)");
  CHECK(out.tag == "COPY " + std::to_string(3 + kRows));
  CHECK(lines(out.data).size() == static_cast<std::size_t>(4 + kRows));
  r = PQexec(c.get(), "delete from cp_loose where id >= 10");
  CHECK(std::string(PQcmdStatus(r)) == "DELETE " + std::to_string(kRows));
  PQclear(r);
  CHECK(counts("cp_loose") == std::vector<long long>(shards, 3));
  // A write in a transaction reaches every copy at COMMIT, and none after ROLLBACK.
  query(c.get(), "begin");
  query(c.get(), "insert into cp_loose values (4, 'd')");
  CHECK(scalar(c.get(), "select count(*) from cp_loose") == "4");
  query(c.get(), "commit");
  query(c.get(), "begin");
  query(c.get(), "insert into cp_loose values (5, 'e')");
  query(c.get(), "rollback");
  CHECK(counts("cp_loose") == std::vector<long long>(shards, 4));
  // A write inside WITH is a write: every copy.
  CHECK(scalar(c.get(),
               "with x as (insert into cp_loose values (8, 'h') returning id) "
               "select id from x") == "8");
  CHECK(counts("cp_loose") == std::vector<long long>(shards, 5));
  CHECK(scalar(c.get(),
               "with x as (update cp_loose set name = 'w' returning id) "
               "select count(*) from x") == "5");
  CHECK(scalar(c.get(), "select count(*) from cp_loose where name = 'w'") == "5");
}

TEST_CASE("shards that disagree on result columns end the statement and the session goes on",
          "[copy]") {
  // An enum created on each shard separately gets a different OID on each: shards then
  // describe the same column with different types.
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(),
          "drop table if exists cp_items; drop table if exists cp_moody; "
          "drop type if exists cp_mood; drop type if exists cp_pad0; "
          "drop type if exists cp_pad1; drop type if exists cp_pad2");
    for (int k = 0; k < i; ++k)
      query(d.get(), "create type cp_pad" + std::to_string(k) + " as enum ('x')");
    query(d.get(), "create type cp_mood as enum ('sad', 'ok', 'happy')");
    query(d.get(), "create table cp_items (id bigint primary key, m cp_mood)");
    query(d.get(), "create table cp_moody (id int primary key, m cp_mood)");
  }
  {
    auto d0 = connect(cluster.direct(0));
    auto d1 = connect(cluster.direct(1));
    REQUIRE(scalar(d0.get(), "select 'cp_mood'::regtype::oid") !=
            scalar(d1.get(), "select 'cp_mood'::regtype::oid"));
  }
  for (const std::string unsharded : {"{ shard: s0 }", "all"}) {
    ProxyOptions o = items_map();
    o.unsharded = unsharded;
    Proxy proxy(o);
    INFO(unsharded);
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    auto send_query = [&](const std::string& sql) {
      std::string m;
      p::Query{sql}.write(m);
      return raw.send(m);
    };
    // Each statement must end (ReadyForQuery) within seconds, and the next one work.
    auto shape = [&](const std::string& sql) {
      send_query(sql);
      std::string s;
      for (;;) {
        auto m = raw.next(5000);
        if (!m) return s + " <no ReadyForQuery>";
        if (m->first == 'N' || m->first == 'S') continue;
        s += m->first;
        if (m->first == 'Z') return s;
      }
    };
    CHECK(shape("insert into cp_items values (1, 'ok'), (2, 'sad'), (3, 'happy'), (4, 'ok')") ==
          "CZ");
    CHECK(shape("select * from cp_items") == "EZ");
    CHECK(shape("select 1") == "TDCZ");
    CHECK(shape("select id, m from cp_items order by id") == "EZ");
    CHECK(shape("select count(*) from cp_items") == "TDCZ");
    CHECK(shape("select id, m::text from cp_items where id in (1, 2, 3, 4)") == "TDDDDCZ");
    CHECK(shape("select 2") == "TDCZ");
    {
      // Extended protocol (libpq's PQexecParams), and inside a transaction block.
      auto c = connect(proxy.conninfo());
      const char* param[] = {"0"};
      for (int round = 0; round < 2; ++round) {
        PGresult* r = PQexecParams(c.get(), "select * from cp_items where id > $1", 1, nullptr,
                                   param, nullptr, nullptr, 0);
        CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
        PQclear(r);
        CHECK(scalar(c.get(), "select 3") == "3");
      }
      query(c.get(), "begin");
      CHECK(scalar(c.get(), "select count(*) from cp_items") == "4");
      CHECK(error_code(c.get(), "select * from cp_items") == "42804");
      CHECK(error_code(c.get(), "select 4") == "25P02");
      query(c.get(), "rollback");
      CHECK(scalar(c.get(), "select 5") == "5");
      query(c.get(), "begin");
      query(c.get(), "insert into cp_items values (9, 'ok')");
      CHECK(error_code(c.get(), "select m from cp_items") == "42804");
      query(c.get(), "rollback");
      CHECK(scalar(c.get(), "select count(*) from cp_items") == "4");
    }
    if (unsharded == "all") {
      // A write to every copy whose RETURNING types differ: an error, nothing written.
      CHECK(shape("insert into cp_moody values (1, 'ok') returning *") == "EZ");
      CHECK(shape("select count(*) from cp_moody") == "TDCZ");
      CHECK(counts("cp_moody") ==
            std::vector<long long>(static_cast<std::size_t>(cluster.size()), 0));
      CHECK(shape("insert into cp_moody values (1, 'ok')") == "CZ");
      CHECK(counts("cp_moody") ==
            std::vector<long long>(static_cast<std::size_t>(cluster.size()), 1));
      CHECK(shape("select * from cp_moody") == "TDCZ");
    }
    send_query("delete from cp_items");
    raw.until_ready();
  }
  everywhere(
      "drop table if exists cp_items; drop table if exists cp_moody; drop type if exists cp_mood; "
      "drop type if exists cp_pad0; drop type if exists cp_pad1; drop type if exists cp_pad2");
}

TEST_CASE("COPY (query) TO is checked as its query is: joins, reference tables, subqueries",
          "[copy][copy_query]") {
  // Found from outside: COPY (query) skipped the checks a SELECT gets, so a reference table
  // kept by an outer join came once per shard, a NOT IN over sharded rows was answered per
  // shard, and a join off the shard keys ran on one shard.
  everywhere("drop table if exists cp_products; create table cp_products (sku int primary key)");
  everywhere("insert into cp_products select g from generate_series(1, 10) g");
  Proxy proxy(items_map("reference_tables: [cp_products]\n"));
  make_items(proxy);
  auto c = connect(proxy.conninfo());
  for (const std::string sql :
       {"copy (select p.sku, i.id from cp_products p left join cp_items i on i.id = p.sku + 100) "
        "to stdout",
        "copy (select sku from cp_products where sku not in (select id from cp_items)) to stdout",
        "copy (select a.id from cp_items a join cp_items b on b.id <> a.id where a.id = 1) to "
        "stdout",
        "copy (select g from generate_series(1, 3) g left join cp_items i on i.id = g + 100) to "
        "stdout"}) {
    INFO(sql);
    auto got = copy_out(c.get(), sql);
    CHECK(got.data.empty());
    CHECK_THAT(got.error, Catch::Contains("not supported"));
  }
  // What the shards can answer alone still streams: every row once.
  auto all = copy_out(c.get(), "copy (select id from cp_items where id <= 20) to stdout");
  CHECK(all.error.empty());
  CHECK(lines(all.data).size() == 20);
  auto keyed = copy_out(c.get(), "copy (select name from cp_items where id = 7) to stdout");
  CHECK(keyed.data == "n,7\n");
  auto ref = copy_out(c.get(), "copy (select sku from cp_products) to stdout");
  CHECK(lines(ref.data).size() == 10);
}

TEST_CASE(
    "COPY FROM STDIN over shards: the client's CopyFail ends it everywhere, with or without"
    " a message",
    "[copy]") {
  Proxy proxy(items_map());
  everywhere(
      "drop table if exists cp_items; "
      "create table cp_items (id bigint primary key, name text, score numeric)");
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  auto message = [](char type, const std::string& body) {
    std::string m(1, type);
    const auto len = static_cast<uint32_t>(body.size() + 4);
    for (int shift = 24; shift >= 0; shift -= 8) m += static_cast<char>((len >> shift) & 0xff);
    return m + body;
  };
  // Before: a CopyFail with an empty body (no message, no terminator) ended the COPY as
  // CopyDone does, and the shards committed.
  for (const std::string& reason : {std::string("client changed its mind\0", 24), std::string()}) {
    INFO("reason: " << reason.size() << " bytes");
    std::string q;
    p::Query{"copy cp_items (id, name, score) from stdin"}.write(q);
    REQUIRE(raw.send(q));
    auto g = raw.next();
    REQUIRE(g);
    REQUIRE(g->first == 'G');
    REQUIRE(raw.send(message('d', "1\ta\t1\n2\tb\t2\n3\tc\t3\n") + message('f', reason)));
    std::vector<std::pair<char, std::string>> all;
    CHECK(raw.until_ready(&all) == "E Z");
    REQUIRE_FALSE(all.empty());
    auto e = p::ErrorFields::parse(all[0].second);
    REQUIRE(e);
    CHECK(e->code() == "57014");
    if (!reason.empty())
      CHECK_THAT(std::string(e->message()), Catch::Contains("client changed its mind"));
    for (long long n : counts("cp_items")) CHECK(n == 0);
  }
  std::string q;
  p::Query{"select count(*) from cp_items"}.write(q);
  REQUIRE(raw.send(q));
  CHECK(raw.until_ready() == "T D C Z");
}

namespace {

// The shards (read directly) holding a row of `table` whose key is `key` (a SQL literal).
std::vector<int> shards_holding(const std::string& table, const std::string& key) {
  std::vector<int> found;
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    if (scalar(d.get(), "select count(*) from " + table + " where id = " + key) != "0")
      found.push_back(i);
  }
  return found;
}

}  // namespace

TEST_CASE("COPY text format: escaped key fields are placed by the value PostgreSQL reads",
          "[copy]") {
  ProxyOptions o;
  o.sharded_tables =
      "  - { table: cp_esc_i, column: id, type: bigint }\n"
      "  - { table: cp_esc_t, column: id, type: text }\n";
  Proxy proxy(o);
  everywhere(
      "drop table if exists cp_esc_i; drop table if exists cp_esc_t; "
      "create table cp_esc_i (id bigint primary key, v text); "
      "create table cp_esc_t (id text primary key, v text)");
  auto c = connect(proxy.conninfo());
  // Each key as written with escapes (hex and octal of every length), and its value.
  const std::vector<std::pair<std::string, std::string>> ints = {
      {"\\x37\\x37\\x37\\x30\\x30\\x31", "777001"},
      {"\\x34\\x32", "42"},
      {"\\61\\62\\63", "123"},
      {"\\0610\\060\\x37", "1007"},
      {"9\\x39\\71", "999"},
      {"\\x35\\65\\x35\\65", "5555"},
      {"\\0658", "58"}};
  std::string int_rows;
  for (const auto& t : ints) int_rows += t.first + "\tr\n";
  CHECK(copy_in(c.get(), "copy cp_esc_i (id, v) from stdin", int_rows) ==
        "COPY " + std::to_string(ints.size()));
  const std::vector<std::pair<std::string, std::string>> texts = {{"oct\\101", "octA"},
                                                                  {"hex\\x41\\x4a", "hexAJ"},
                                                                  {"b\\bs", "b\bs"},
                                                                  {"v\\vt", "v\vt"},
                                                                  {"f\\ff", "f\ff"},
                                                                  {"n\\nl", "n\nl"},
                                                                  {"t\\tab", "t\tab"},
                                                                  {"r\\rr", "r\rr"},
                                                                  {"back\\\\N", "back\\N"},
                                                                  {"\\\\N", "\\N"},
                                                                  {"u\\303\\251", "u\xc3\xa9"},
                                                                  {"q\\q\\x", "qqx"},
                                                                  {"one\\1x", "one\001x"}};
  std::string text_rows;
  for (const auto& t : texts) text_rows += t.first + "\tr\n";
  CHECK(copy_in(c.get(), "copy cp_esc_t (id, v) from stdin", text_rows) ==
        "COPY " + std::to_string(texts.size()));
  // A keyed read through pgshard (routed by the key's hash) finds every row, and no row is
  // on two shards. (standard_conforming_strings: a backslash in '...' is itself.)
  for (const auto& [escaped, value] : ints) {
    INFO(escaped);
    CHECK(scalar(c.get(), "select count(*) from cp_esc_i where id = " + value) == "1");
    CHECK(shards_holding("cp_esc_i", value).size() == 1);
  }
  for (const auto& [escaped, value] : texts) {
    INFO(escaped);
    const std::string key = "'" + value + "'";
    CHECK(scalar(c.get(), "select count(*) from cp_esc_t where id = " + key) == "1");
    CHECK(shards_holding("cp_esc_t", key).size() == 1);
  }
}
