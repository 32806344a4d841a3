// Text shard keys from clients whose client_encoding is not UTF8: the shards store and hash
// UTF8, so a non-ASCII key's client bytes do not say its shard. Writes by such a key are
// refused (0A000), reads go to every shard, ASCII keys route as ever.
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace harness;

namespace {

// LATIN1 keys (é is 0xe9) and the same keys in UTF8 (0xc3 0xa9).
const std::vector<std::string> kLatin1 = {"caf\xe9",
                                          "\xe9t\xe9",
                                          "na\xefve",
                                          "\xfc",
                                          "sm\xf8rrebr\xf8"
                                          "d",
                                          "Z\xfcrich"};
std::string utf8_of(const std::string& latin1) {
  std::string out;
  for (unsigned char ch : latin1) {
    if (ch < 0x80) {
      out.push_back(static_cast<char>(ch));
    } else {
      out.push_back(static_cast<char>(0xc0 | (ch >> 6)));
      out.push_back(static_cast<char>(0x80 | (ch & 0x3f)));
    }
  }
  return out;
}

void make_table(const Proxy& proxy) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists enc_t; create table enc_t (id text primary key, v int)");
  }
  // Rows placed by a UTF8 client: where they belong.
  auto u = connect(proxy.conninfo());
  for (std::size_t i = 0; i < kLatin1.size(); ++i)
    query(u.get(),
          "insert into enc_t values ('" + utf8_of(kLatin1[i]) + "', " + std::to_string(i) + ")");
}

std::string param_count(PGconn* c, const std::string& key) {
  const char* values[] = {key.c_str()};
  PGresult* r = PQexecParams(c, "select count(*) from enc_t where id = $1", 1, nullptr, values,
                             nullptr, nullptr, 0);
  std::string out = PQresultStatus(r) == PGRES_TUPLES_OK ? PQgetvalue(r, 0, 0) : "error";
  PQclear(r);
  return out;
}

std::string param_insert(PGconn* c, const std::string& key) {
  const char* values[] = {key.c_str()};
  PGresult* r =
      PQexecParams(c, "insert into enc_t values ($1, 99)", 1, nullptr, values, nullptr, nullptr, 0);
  const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  std::string out = PQresultStatus(r) == PGRES_COMMAND_OK ? "ok" : (s ? s : "?");
  PQclear(r);
  return out;
}

// A LATIN1 client (`how`: the startup packet's client_encoding, or SET) reads every row by
// its key and cannot write a non-ASCII key anywhere.
void check_latin1_client(PGconn* c) {
  REQUIRE(std::string(pg_encoding_to_char(PQclientEncoding(c))) == "LATIN1");
  for (std::size_t i = 0; i < kLatin1.size(); ++i) {
    INFO(i);
    CHECK(scalar(c, "select v from enc_t where id = '" + kLatin1[i] + "'") == std::to_string(i));
    CHECK(param_count(c, kLatin1[i]) == "1");
  }
  std::string message;
  CHECK(error_code(c, "insert into enc_t values ('new\xe9', 7)", &message) == "0A000");
  CHECK(message.find("client_encoding") != std::string::npos);
  CHECK(error_code(c, "update enc_t set v = 5 where id = '" + kLatin1[0] + "'") == "0A000");
  CHECK(param_insert(c, "p\xe9") == "0A000");
  // COPY by such a key fails as a whole; ASCII keys still route by their bytes.
  PGresult* r = PQexec(c, "copy enc_t (id, v) from stdin");
  REQUIRE(PQresultStatus(r) == PGRES_COPY_IN);
  PQclear(r);
  const std::string rows = "ascii1\t1\nk\xe9y\t2\n";
  REQUIRE(PQputCopyData(c, rows.data(), static_cast<int>(rows.size())) == 1);
  REQUIRE(PQputCopyEnd(c, nullptr) == 1);
  std::string state;
  while ((r = PQgetResult(c)) != nullptr) {
    const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) state = s ? s : "?";
    PQclear(r);
  }
  CHECK(state == "0A000");
  CHECK(scalar(c, "select count(*) from enc_t where id = 'ascii1'") == "0");
  CHECK(param_insert(c, "plain") == "ok");
  CHECK(scalar(c, "select count(*) from enc_t where id = 'plain'") == "1");
  query(c, "delete from enc_t where id = 'plain'");
}

}  // namespace

TEST_CASE("a LATIN1 client's non-ASCII text keys are read everywhere and never misplaced",
          "[routing]") {
  ProxyOptions o;
  o.sharded_tables = "  - { table: enc_t, column: id, type: text }\n";
  Proxy proxy(o);
  make_table(proxy);
  SECTION("client_encoding in the startup packet") {
    auto c = connect(proxy.conninfo("client_encoding=LATIN1"));
    check_latin1_client(c.get());
  }
  SECTION("SET client_encoding") {
    auto c = connect(proxy.conninfo());
    query(c.get(), "set client_encoding to 'latin1'");
    check_latin1_client(c.get());
    // Back in UTF8, the same keys are placed by their bytes again.
    REQUIRE(PQsetClientEncoding(c.get(), "UTF8") == 0);
    CHECK(param_insert(c.get(), utf8_of("p\xe9")) == "ok");
    CHECK(scalar(c.get(), "select count(*) from enc_t where id = '" + utf8_of("p\xe9") + "'") ==
          "1");
  }
}
