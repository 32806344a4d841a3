// The wire protocol through pgshard: pipelines, COPY, large values, async messages,
// startup negotiation, TLS and cancel.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <thread>

#include "harness.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"

using namespace harness;
namespace p = pgshard::protocol;

namespace {

// The next message is a FATAL protocol violation (08P01), and the connection then closes.
void expect_protocol_fatal(RawClient& raw) {
  auto m = raw.next(5000);
  REQUIRE(m);
  REQUIRE(m->first == 'E');
  auto e = p::ErrorFields::parse(m->second);
  CHECK(e->code() == "08P01");
  CHECK(e->severity() == "FATAL");
  CHECK(raw.closed());
}

}  // namespace

TEST_CASE("a pipelined batch of 100 statements returns 100 results in order", "[protocol]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  REQUIRE(PQenterPipelineMode(c.get()) == 1);
  for (int i = 0; i < 100; ++i) {
    std::string v = std::to_string(i);
    const char* vals[] = {v.c_str()};
    REQUIRE(PQsendQueryParams(c.get(), "select $1::int * 10", 1, nullptr, vals, nullptr, nullptr,
                              0) == 1);
  }
  REQUIRE(PQpipelineSync(c.get()) == 1);
  for (int i = 0; i < 100; ++i) {
    PGresult* r = PQgetResult(c.get());
    REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
    CHECK(std::stoi(PQgetvalue(r, 0, 0)) == i * 10);
    PQclear(r);
    REQUIRE(PQgetResult(c.get()) == nullptr);
  }
  PGresult* s = PQgetResult(c.get());
  CHECK(PQresultStatus(s) == PGRES_PIPELINE_SYNC);
  PQclear(s);
  REQUIRE(PQexitPipelineMode(c.get()) == 1);
  CHECK(scalar(c.get(), "select 'after'") == "after");
}

TEST_CASE("an error in the middle of a pipeline discards the rest until Sync", "[protocol]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  REQUIRE(PQenterPipelineMode(c.get()) == 1);
  PQsendQueryParams(c.get(), "select 1", 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQsendQueryParams(c.get(), "select 1/0", 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQsendQueryParams(c.get(), "select 3", 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQpipelineSync(c.get());
  PQsendQueryParams(c.get(), "select 4", 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQpipelineSync(c.get());
  std::vector<ExecStatusType> seen;
  std::string last_value;
  for (int syncs = 0; syncs < 2;) {
    PGresult* r = PQgetResult(c.get());
    if (!r) continue;
    seen.push_back(PQresultStatus(r));
    if (PQresultStatus(r) == PGRES_PIPELINE_SYNC) ++syncs;
    if (PQresultStatus(r) == PGRES_TUPLES_OK) last_value = PQgetvalue(r, 0, 0);
    PQclear(r);
  }
  std::vector<ExecStatusType> want{PGRES_TUPLES_OK,     PGRES_FATAL_ERROR, PGRES_PIPELINE_ABORTED,
                                   PGRES_PIPELINE_SYNC, PGRES_TUPLES_OK,   PGRES_PIPELINE_SYNC};
  CHECK(seen == want);
  CHECK(last_value == "4");
  PQexitPipelineMode(c.get());
}

TEST_CASE("COPY of 1M rows in and out", "[protocol]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  query(c.get(), "drop table if exists copy_rows");
  query(c.get(), "create table copy_rows (id bigint, name text)");
  PGresult* r = PQexec(c.get(), "copy copy_rows from stdin");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_IN);
  PQclear(r);
  std::string chunk;
  const int total = 1000000;
  for (int i = 0; i < total; ++i) {
    chunk += std::to_string(i) + "\tname-" + std::to_string(i) + "\n";
    if (chunk.size() > 60000 || i == total - 1) {
      REQUIRE(PQputCopyData(c.get(), chunk.data(), static_cast<int>(chunk.size())) == 1);
      chunk.clear();
    }
  }
  REQUIRE(PQputCopyEnd(c.get(), nullptr) == 1);
  r = PQgetResult(c.get());
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  CHECK(std::string(PQcmdTuples(r)) == "1000000");
  PQclear(r);
  while ((r = PQgetResult(c.get()))) PQclear(r);
  CHECK(scalar(c.get(), "select count(*) || ':' || sum(id) from copy_rows") ==
        "1000000:499999500000");

  r = PQexec(c.get(), "copy copy_rows to stdout");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_OUT);
  PQclear(r);
  long rows = 0;
  long long bytes = 0;
  char* buf = nullptr;
  int n;
  while ((n = PQgetCopyData(c.get(), &buf, 0)) > 0) {
    ++rows;
    bytes += n;
    PQfreemem(buf);
  }
  CHECK(n == -1);
  r = PQgetResult(c.get());
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  CHECK(rows == total);
  CHECK(bytes > 10000000);

  // A COPY the client aborts ends with the server's error, and the session goes on.
  r = PQexec(c.get(), "copy copy_rows from stdin");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_IN);
  PQclear(r);
  PQputCopyData(c.get(), "1\tx\n", 4);
  PQputCopyEnd(c.get(), "client changed its mind");
  r = PQgetResult(c.get());
  CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
  CHECK_THAT(PQresultErrorMessage(r), Catch::Contains("client changed its mind"));
  PQclear(r);
  while ((r = PQgetResult(c.get()))) PQclear(r);
  CHECK(scalar(c.get(), "select count(*) from copy_rows") == "1000000");
  query(c.get(), "drop table copy_rows");
}

TEST_CASE("a 64 MB bytea goes in and comes back intact", "[protocol]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  std::string blob(64u << 20, '\0');
  for (std::size_t i = 0; i < blob.size(); ++i)
    blob[i] = static_cast<char>((i * 2654435761u) >> 13);
  query(c.get(), "drop table if exists blobs");
  query(c.get(), "create table blobs (b bytea)");
  const char* vals[] = {blob.data()};
  int lens[] = {static_cast<int>(blob.size())};
  int fmts[] = {1};
  PGresult* r =
      PQexecParams(c.get(), "insert into blobs values ($1)", 1, nullptr, vals, lens, fmts, 0);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  r = PQexecParams(c.get(), "select b from blobs", 0, nullptr, nullptr, nullptr, nullptr, 1);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  REQUIRE(PQgetlength(r, 0, 0) == static_cast<int>(blob.size()));
  CHECK(std::memcmp(PQgetvalue(r, 0, 0), blob.data(), blob.size()) == 0);
  PQclear(r);
  // Text format doubles it (hex); it still streams through.
  CHECK(scalar(c.get(), "select length(encode(b, 'hex')) from blobs") ==
        std::to_string(2 * blob.size()));
  query(c.get(), "drop table blobs");
}

TEST_CASE("a client that stops reading a large result stalls only itself", "[protocol]") {
  // Its replies fill the socket (the relay's write waits); clients on the same worker go
  // on, and its rows arrive whole and in order once it reads again.
  ProxyOptions o;
  o.workers = 1;
  Proxy proxy(o);
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  std::string out;
  const int rows = 20000;
  p::Query{"select g, repeat('x', 1000) from generate_series(1, " + std::to_string(rows) + ") g"}
      .write(out);
  raw.send(out);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // it reads nothing meanwhile
  auto other = connect(proxy.conninfo());
  for (int i = 0; i < 200; ++i)
    REQUIRE(scalar(other.get(), "select " + std::to_string(i) + " + 1") == std::to_string(i + 1));
  std::vector<std::pair<char, std::string>> all;
  CHECK(raw.until_ready(&all).size() == std::string("T C Z").size() + 2 * rows);
  int seen = 0;
  for (const auto& [type, body] : all) {
    if (type != 'D') continue;
    const auto row = p::DataRow::parse(body);
    REQUIRE(row);
    REQUIRE(row->values.size() == 2);
    CHECK(row->values[0] == std::to_string(++seen));
    CHECK(row->values[1] == std::string(1000, 'x'));
  }
  CHECK(seen == rows);
  // And its session goes on.
  out.clear();
  p::Query{"select 7"}.write(out);
  raw.send(out);
  CHECK(raw.until_ready() == "T D C Z");
}

TEST_CASE("notices, notifications and parameter changes are relayed", "[protocol]") {
  ProxyOptions o;
  o.pool_mode = "session";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  std::string notice;
  PQsetNoticeProcessor(
      c.get(), [](void* arg, const char* m) { *static_cast<std::string*>(arg) += m; }, &notice);
  query(c.get(), "do $$ begin raise notice 'hello from the shard'; end $$");
  CHECK_THAT(notice, Catch::Contains("hello from the shard"));

  query(c.get(), "SET TimeZone = 'Asia/Tokyo'");
  CHECK(std::string(PQparameterStatus(c.get(), "TimeZone")) == "Asia/Tokyo");

  query(c.get(), "LISTEN pgshard_test");
  auto other = connect(Cluster::get().direct(0));
  query(other.get(), "NOTIFY pgshard_test, 'ping'");
  PGnotify* n = nullptr;
  for (int i = 0; i < 100 && !n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    PQconsumeInput(c.get());
    n = PQnotifies(c.get());
  }
  REQUIRE(n != nullptr);
  CHECK(std::string(n->relname) == "pgshard_test");
  CHECK(std::string(n->extra) == "ping");
  PQfreemem(n);

  PGresult* r = PQexec(c.get(), "");
  CHECK(PQresultStatus(r) == PGRES_EMPTY_QUERY);
  PQclear(r);
}

TEST_CASE("raw protocol: PortalSuspended, Flush, describe, close", "[protocol]") {
  Proxy proxy;
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  std::string out;
  p::Parse{"", "select g from generate_series(1, 5) g", {}}.write(out);
  p::Bind{"", "", {}, {}, {}}.write(out);
  p::Describe{'P', ""}.write(out);
  p::Execute{"", 2}.write(out);
  p::write_empty(out, p::msg::kFlush);
  raw.send(out);
  std::string types;
  for (int i = 0; i < 6; ++i) {
    auto m = raw.next();
    REQUIRE(m);
    types += m->first;
  }
  CHECK(types == "12TDDs");  // ParseComplete BindComplete RowDescription 2 rows PortalSuspended
  out.clear();
  p::Execute{"", 0}.write(out);
  p::write_empty(out, p::msg::kSync);
  raw.send(out);
  CHECK(raw.until_ready() == "D D D C Z");

  out.clear();
  p::Parse{"named", "select $1::int", {}}.write(out);
  p::Describe{'S', "named"}.write(out);
  p::Close{'S', "named"}.write(out);
  p::write_empty(out, p::msg::kSync);
  raw.send(out);
  CHECK(raw.until_ready() == "1 t T 3 Z");
}

TEST_CASE("startup negotiation: 3.2 and _pq_ options, SSL and GSS requests", "[protocol]") {
  Proxy proxy;
  {
    RawClient raw(proxy.port());
    std::string out;
    p::MessageWriter w(out);
    w.begin_untyped().i32((3 << 16) | 2).cstr("user").cstr("app").cstr("database").cstr("app");
    w.cstr("_pq_.something").cstr("1").u8(0).finish();
    raw.send(out);
    auto m = raw.next();
    REQUIRE(m);
    REQUIRE(m->first == 'v');
    auto n = p::NegotiateProtocolVersion::parse(m->second);
    REQUIRE(n);
    CHECK(n->newest_minor == 0);
    CHECK(n->unrecognized == std::vector<std::string_view>{"_pq_.something"});
    m = raw.next();
    REQUIRE(m);
    CHECK(m->first == 'R');  // authentication continues on 3.0
  }
  {
    RawClient raw(proxy.port());
    std::string out;
    p::write_ssl_request(out);
    raw.send(out);
    CHECK(raw.read_byte() == 'N');  // tls disabled
    out.clear();
    p::MessageWriter(out).begin_untyped().i32(p::kGSSENCRequestCode).finish();
    raw.send(out);
    CHECK(raw.read_byte() == 'N');
    CHECK(raw.login());
  }
  {
    RawClient raw(proxy.port());
    std::string out;
    p::write_ssl_request(out);
    out += "extra bytes before the handshake";
    raw.send(out);
    auto m = raw.next();
    REQUIRE(m);
    CHECK(m->first == 'E');
    CHECK(p::ErrorFields::parse(m->second)->code() == "08P01");
    CHECK(raw.closed());
  }
  {
    RawClient raw(proxy.port());
    std::string out(8, '\0');
    out[3] = 100;  // length 100 but garbage version 0.0
    out.resize(100, 'x');
    raw.send(out);
    auto m = raw.next();
    REQUIRE(m);
    CHECK(p::ErrorFields::parse(m->second)->code() == "08P01");
  }
  {
    // Terminate before the startup packet (node-postgres's connect() then end()): an invalid
    // startup length, which PostgreSQL logs and closes on without an answer (before: a
    // FATAL the client reported as an error).
    RawClient raw(proxy.port());
    raw.send(std::string("X\0\0\0\4", 5));
    CHECK(!raw.next());
    CHECK(raw.closed());
  }
}

TEST_CASE("a misbehaving client gets 08P01 and disturbs no one", "[protocol]") {
  Proxy proxy;
  auto good = connect(proxy.conninfo());
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  raw.send(std::string("\x01\x00\x00\x00\x08zzzz", 9));
  expect_protocol_fatal(raw);

  RawClient huge(proxy.port());
  REQUIRE(huge.login());
  huge.send(std::string("Q\x7f\xff\xff\xff", 5));  // 2 GB claimed
  auto m = huge.next();
  REQUIRE(m);
  CHECK(p::ErrorFields::parse(m->second)->code() == "08P01");
  CHECK(scalar(good.get(), "select 'unaffected'") == "unaffected");
}

TEST_CASE("a protocol violation after a Flush in an open batch is answered at once", "[protocol]") {
  // A batch sent up to a Flush is open on its server (no Sync). pgshard's error waited for
  // the server to finish that batch first, which it never does without a Sync: the session
  // (and its server) hung until the client left, where PostgreSQL answers FATAL at once.
  Proxy proxy;
  auto good = connect(proxy.conninfo());
  for (const char* sql : {"select 41 + 1", "select 1/0"}) {
    INFO(sql);
    RawClient raw(proxy.port());
    REQUIRE(raw.login());
    std::string out;
    p::Parse{"", sql, {}}.write(out);
    p::Bind{"", "", {}, {}, {}}.write(out);
    p::Execute{"", 0}.write(out);
    p::write_empty(out, p::msg::kFlush);
    raw.send(out);
    // (1/0 fails when the unnamed statement is planned, at Bind.)
    const std::string replies = std::string(sql) == "select 41 + 1" ? "12DC" : "1E";
    std::string types;
    while (types.size() < replies.size()) {
      auto m = raw.next(5000);
      REQUIRE(m);
      types += m->first;
    }
    CHECK(types == replies);
    raw.send(std::string("\x01\x00\x00\x00\x04", 5));
    expect_protocol_fatal(raw);
  }
  CHECK(scalar(good.get(), "select 'unaffected'") == "unaffected");
}

TEST_CASE("a batch pgshard refused in a transaction skips to its Sync and no further",
          "[protocol]") {
  // PostgreSQL skips the rest of a failed extended batch up to its Sync, and only that far.
  // pgshard's skipping waited while a server was attached (in a transaction): the messages
  // before the Sync went to the server and ran, and the skipping went on until the server
  // was released, when it silently swallowed the client's next request (only its
  // ReadyForQuery came back: no rows, no CommandComplete).
  ProxyOptions o;
  o.unsharded = "reject";
  Proxy proxy(o);
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  auto query = [&](const std::string& sql) {
    std::string out;
    p::Query{sql}.write(out);
    raw.send(out);
    return raw.until_ready();
  };
  auto extended = [&](const std::string& sql, char boundary) {
    std::string out;
    p::Parse{"", sql, {}}.write(out);
    p::Bind{"", "", {}, {}, {}}.write(out);
    p::Execute{"", 0}.write(out);
    p::write_empty(out, boundary);
    raw.send(out);
  };
  CHECK(query("BEGIN") == "C Z");
  CHECK(query("SELECT 1") == "T D C Z");  // a server is attached
  // Refused by pgshard (a table outside the map), the batch ended by a Flush: an error now.
  extended("SELECT * FROM no_such_map_table", p::msg::kFlush);
  auto e = raw.next(5000);
  REQUIRE(e);
  CHECK(e->first == 'E');
  // The rest of the batch is skipped up to its Sync, which ends the skipping.
  extended("SELECT 'skipped'", p::msg::kSync);
  std::vector<std::pair<char, std::string>> all;
  CHECK(raw.until_ready(&all) == "Z");
  REQUIRE_FALSE(all.empty());
  CHECK(all.back().second == "E");  // the transaction failed
  CHECK(query("ROLLBACK") == "C Z");
  // The next request runs and answers.
  extended("SELECT 'ran'", p::msg::kSync);
  all.clear();
  CHECK(raw.until_ready(&all) == "1 2 D C Z");
  REQUIRE(all.size() == 5);
  CHECK(all[2].second.find("ran") != std::string::npos);
  CHECK(query("SELECT 'then'") == "T D C Z");
}

TEST_CASE("a statement that fails to prepare under a held BEGIN fails the transaction",
          "[protocol]") {
  // BEGIN is pgshard's until a statement runs; a Parse alone (a driver preparing) goes to a
  // shard outside the transaction. When it fails there, PostgreSQL's transaction would be
  // aborted: later statements get 25P02 and COMMIT rolls back. Before, pgshard answered the
  // error with status 'T' and the next INSERT ran and committed.
  Proxy proxy;
  auto setup = connect(proxy.conninfo());
  query(setup.get(), "CREATE TABLE IF NOT EXISTS held_begin_probe (id bigint, v text)");
  query(setup.get(), "DELETE FROM held_begin_probe");
  RawClient raw(proxy.port());
  REQUIRE(raw.login());
  auto simple = [&](const std::string& sql, std::vector<std::pair<char, std::string>>* all) {
    std::string out;
    p::Query{sql}.write(out);
    raw.send(out);
    return raw.until_ready(all);
  };
  std::vector<std::pair<char, std::string>> all;
  CHECK(simple("BEGIN", &all) == "C Z");
  std::string out;
  p::Parse{"s", "SELECT no_such_column FROM held_begin_probe WHERE id = $1", {}}.write(out);
  p::write_empty(out, p::msg::kSync);
  raw.send(out);
  all.clear();
  CHECK(raw.until_ready(&all) == "E Z");
  REQUIRE_FALSE(all.empty());
  CHECK(all.back().second == "E");
  all.clear();
  CHECK(simple("INSERT INTO held_begin_probe VALUES (1, 'x')", &all) == "E Z");
  CHECK(all.front().second.find("25P02") != std::string::npos);
  all.clear();
  CHECK(simple("COMMIT", &all) == "C Z");
  CHECK(all.front().second.rfind("ROLLBACK", 0) == 0);
  CHECK(scalar(setup.get(), "SELECT count(*) FROM held_begin_probe") == "0");
  query(setup.get(), "DROP TABLE held_begin_probe");
}

TEST_CASE("TLS required and refused", "[protocol]") {
  ProxyOptions o;
  o.tls_mode = "require";
  Proxy proxy(o);
  std::string base = "host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                     " dbname=app user=app password=secret";
  auto c = connect(base + " sslmode=require");
  CHECK(PQsslInUse(c.get()) == 1);
  CHECK(scalar(c.get(), "select 'over tls'") == "over tls");
  Conn plain(PQconnectdb((base + " sslmode=disable").c_str()), PQfinish);
  CHECK(PQstatus(plain.get()) == CONNECTION_BAD);
  CHECK_THAT(PQerrorMessage(plain.get()), Catch::Contains("TLS is required"));

  Proxy no_tls;
  Conn want(PQconnectdb(("host=127.0.0.1 port=" + std::to_string(no_tls.port()) +
                         " dbname=app user=app password=secret sslmode=require")
                            .c_str()),
            PQfinish);
  CHECK(PQstatus(want.get()) == CONNECTION_BAD);
  CHECK_THAT(PQerrorMessage(want.get()), Catch::Contains("does not support SSL"));
}

TEST_CASE("CancelRequest with the proxy's key cancels the running statement", "[protocol]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  auto started = std::chrono::steady_clock::now();
  std::thread canceller([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    send_cancel(c.get());
  });
  std::string code = error_code(c.get(), "select pg_sleep(20)");
  canceller.join();
  CHECK(code == "57014");
  CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(5));
  CHECK(scalar(c.get(), "select 'after cancel'") == "after cancel");

  // A wrong key does nothing.
  RawClient raw(proxy.port());
  std::string out;
  p::write_cancel_request(out, 12345, 678);
  raw.send(out);
  CHECK(raw.closed());
  CHECK(scalar(c.get(), "select 1") == "1");
}
