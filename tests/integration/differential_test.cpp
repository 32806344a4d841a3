// Differential tests: every case in tests/integration/differential/*.sql runs against one
// PostgreSQL holding all the rows and against pgshard over three shards holding the same
// rows split by the map; column names, type OIDs, command tags and rows must agree — in
// the simple protocol, and in the extended protocol with text and binary results.
//
// A case file is one statement, after optional header lines:
//   -- ordered          rows must come in the same order (the query orders them totally)
//   -- error: 0A000     pgshard must refuse with this SQLSTATE (PostgreSQL is not asked)
//   -- params: a|b|c    text parameters $1, $2... (extended protocol only)
//   -- binary-params    the parameters go in binary format, declared text (their bytes are
//                       the text: '-5' is two bytes the server casts, e.g. $1::bigint)
//   -- set: datestyle = 'SQL, DMY'   a SET on both sides for this case (RESET ALL after)
//   -- text-error: 0A000   refused with text results; binary results must match PostgreSQL
#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness.hpp"

using namespace harness;

namespace {

struct Result {
  std::string error;  // SQLSTATE, empty on success
  std::string message;
  std::string tag;
  std::vector<std::string> names;
  std::vector<unsigned> types;
  std::vector<std::vector<std::string>> rows;  // raw bytes; "\x01NULL" for NULL
};

Result run_case(PGconn* c, const std::string& sql, int mode,
                const std::vector<std::string>& params, bool binary_params = false) {
  PGresult* r;
  if (mode == 0) {
    r = PQexec(c, sql.c_str());
  } else {
    std::vector<const char*> values;
    std::vector<Oid> types;
    std::vector<int> lengths, formats;
    for (const auto& p : params) {
      values.push_back(p.c_str());
      types.push_back(25);  // text: textsend's binary form is the characters themselves
      lengths.push_back(static_cast<int>(p.size()));
      formats.push_back(1);
    }
    r = PQexecParams(c, sql.c_str(), static_cast<int>(values.size()),
                     binary_params ? types.data() : nullptr, values.data(),
                     binary_params ? lengths.data() : nullptr,
                     binary_params ? formats.data() : nullptr, mode == 2 ? 1 : 0);
  }
  Result out;
  auto st = PQresultStatus(r);
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
    const char* code = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    out.error = code ? code : "?????";
    out.message = PQresultErrorMessage(r);
    PQclear(r);
    return out;
  }
  out.tag = PQcmdStatus(r);
  for (int i = 0; i < PQnfields(r); ++i) {
    out.names.emplace_back(PQfname(r, i));
    out.types.push_back(PQftype(r, i));
  }
  for (int row = 0; row < PQntuples(r); ++row) {
    std::vector<std::string> values;
    for (int i = 0; i < PQnfields(r); ++i)
      values.push_back(PQgetisnull(r, row, i)
                           ? std::string("\x01NULL")
                           : std::string(PQgetvalue(r, row, i),
                                         static_cast<std::size_t>(PQgetlength(r, row, i))));
    out.rows.push_back(std::move(values));
  }
  PQclear(r);
  return out;
}

std::string show(const std::vector<std::vector<std::string>>& rows, std::size_t limit = 8) {
  std::string s;
  for (std::size_t i = 0; i < rows.size() && i < limit; ++i) {
    s += "  (";
    for (std::size_t j = 0; j < rows[i].size(); ++j) {
      std::string v = rows[i][j];
      for (auto& ch : v)
        if (static_cast<unsigned char>(ch) < 32) ch = '.';
      s += (j ? ", " : "") + v;
    }
    s += ")\n";
  }
  if (rows.size() > limit) s += "  ... " + std::to_string(rows.size()) + " rows\n";
  return s;
}

// The test data: users, their orders and order items (all sharded by user id), and a
// reference table. Deterministic, with NULLs, ties, negative numbers and mixed-case text.
std::vector<std::string> data_statements() {
  std::vector<std::string> out;
  const char* names[] = {"alice", "Bob", "carol",   "dave", "Eve",
                         "frank", "zoe", "Mallory", "bob",  "Ángel"};
  const char* countries[] = {"'US'", "'DE'", "'FR'", "'JP'", "NULL"};
  const char* statuses[] = {"new", "paid", "shipped", "cancelled"};
  std::ostringstream s;
  for (int i = 1; i <= 300; ++i) {
    if (i % 100 == 1)
      s << "insert into users (id, name, email, country, score, created, active) values ";
    s << "(" << i << ", '" << names[i % 10] << "', "
      << (i % 7 == 0 ? std::string("NULL") : "'u" + std::to_string(i) + "@example.com'") << ", "
      << countries[i % 5] << ", "
      << (i % 11 == 0 ? std::string("NULL")
                      : std::to_string((i * 37) % 1000 - 200) + "." +
                            std::to_string(i % 100 < 10 ? 5 : i % 100))
      << ", date '2020-01-01' + " << (i * 13) % 1500 << ", " << (i % 3 ? "true" : "false") << ")"
      << (i % 100 == 0 ? "" : ", ");
    if (i % 100 == 0) {
      out.push_back(s.str());
      s.str("");
    }
  }
  for (int i = 1; i <= 1500; ++i) {
    if (i % 100 == 1)
      s << "insert into orders (id, user_id, amount, status, qty, placed_at, note) values ";
    const int user = (i * 7) % 300 + 1;
    s << "(" << i << ", " << user << ", " << (i * 131) % 100000 / 100 << "." << (i * 7) % 100
      << ", '" << statuses[(i * 3) % 4] << "', " << i % 9
      << ", timestamptz '2024-01-01 00:00:00+00' + interval '" << i * 3571 << " seconds', "
      << (i % 13 == 0 ? "'gift'" : "NULL") << ")" << (i % 100 == 0 ? "" : ", ");
    if (i % 100 == 0) {
      out.push_back(s.str());
      s.str("");
    }
  }
  for (int i = 1; i <= 3000; ++i) {
    if (i % 100 == 1)
      s << "insert into order_items (id, order_id, user_id, sku, price, qty) values ";
    const int order = (i * 3) % 1500 + 1;
    const int user = (order * 7) % 300 + 1;
    s << "(" << i << ", " << order << ", " << user << ", 'SKU-" << i % 50 << "', "
      << (i * 17) % 5000 / 100.0 << ", " << i % 4 + 1 << ")" << (i % 100 == 0 ? "" : ", ");
    if (i % 100 == 0) {
      out.push_back(s.str());
      s.str("");
    }
  }
  // Profiles: the same names under column collations other than the database's.
  for (int i = 1; i <= 300; ++i) {
    if (i % 100 == 1) s << "insert into profiles (user_id, nick, handle, bio) values ";
    const std::string n = names[(i * 3) % 10];
    s << "(" << i << ", '" << n << "', '" << n << "', '" << n << " " << i % 7 << "')"
      << (i % 100 == 0 ? "" : ", ");
    if (i % 100 == 0) {
      out.push_back(s.str());
      s.str("");
    }
  }
  out.push_back(
      "insert into countries (code, name) values ('US', 'United States'), ('DE', 'Germany'), "
      "('FR', 'France'), ('JP', 'Japan'), ('BR', 'Brazil')");
  // Products (a reference table): SKU-0..SKU-59, of which order_items use SKU-0..SKU-49.
  for (int i = 0; i < 60; ++i) {
    if (i == 0) s << "insert into products (sku, name, price, shelf) values ";
    s << "('SKU-" << i << "', 'product " << i << "', " << (i * 7) % 40 << "." << i % 10
      << "5, interval '" << (i % 2 ? "30 days" : "1 mon") << "')" << (i == 59 ? "" : ", ");
  }
  out.push_back(s.str());
  s.str("");
  // Metrics (sharded by user_id, some negative): values PostgreSQL calls equal written
  // differently (interval '1 day' and '24:00:00', numeric 1.0 and 1.00, float -0 and 0,
  // jsonb numbers), spread over the shards.
  const char* spans[] = {"1 day", "24:00:00", "30 days", "1 mon", "1 day 12:00:00", "36:00:00"};
  const char* ratios[] = {"0", "-0", "NaN", "1.5"};
  const char* docs[] = {"{\"a\": 1.0}", "{\"a\": 1.00}", "{\"a\": 1}", "{\"b\": 2}"};
  const char* nums[] = {"1.0", "1.00", "1", "2.50", "2.5"};
  for (int i = 1; i <= 300; ++i) {
    if (i % 100 == 1)
      s << "insert into metrics (user_id, id, span, ratio, doc, num, tags) values ";
    s << "(" << i - 21 << ", " << i << ", interval '" << spans[i % 6] << "', '" << ratios[i % 4]
      << "'::float8, '" << docs[(i / 3) % 4] << "'::jsonb, " << nums[i % 5] << ", '{t" << i % 3
      << "}')" << (i % 100 == 0 ? "" : ", ");
    if (i % 100 == 0) {
      out.push_back(s.str());
      s.str("");
    }
  }
  return out;
}

const char* kSchema[] = {
    "drop table if exists order_items, orders, users, countries, profiles, products, metrics",
    "create table users (id bigint primary key, name text not null, email text, country text, "
    "score numeric(10,2), created date, active bool)",
    "create table orders (id bigint, user_id bigint, amount numeric(12,2), status text, qty int, "
    "placed_at timestamptz, note text, primary key (user_id, id))",
    "create table order_items (id bigint, order_id bigint, user_id bigint, sku text, price "
    "numeric(10,2), qty int)",
    "create table countries (code text primary key, name text)",
    "create table profiles (user_id bigint primary key, nick text collate \"C\", "
    "handle text collate \"en-x-icu\", bio text)",
    "create table products (sku text primary key, name text, price numeric(10,2), shelf "
    "interval)",
    "create table metrics (user_id bigint, id bigint, span interval, ratio float8, doc jsonb, "
    "num numeric, tags text[], primary key (user_id, id))",
};

}  // namespace

TEST_CASE("multi-shard statements answer exactly as one PostgreSQL", "[differential]") {
  auto& cluster = Cluster::get();
  {
    auto admin = connect(cluster.direct(0));
    PQclear(PQexec(admin.get(), "create database single"));
  }
  auto single = connect(cluster.direct(0) + " dbname=single");
  ProxyOptions opts;
  opts.extra_top = "reference_tables: [countries, products]\n";
  opts.sharded_tables =
      "  - { table: users, column: id, type: bigint }\n"
      "  - { table: orders, column: user_id, type: bigint }\n"
      "  - { table: order_items, column: user_id, type: bigint }\n"
      "  - { table: profiles, column: user_id, type: bigint }\n"
      "  - { table: metrics, column: user_id, type: bigint }\n";
  Proxy proxy(opts);
  auto sharded = connect(proxy.conninfo());
  // DDL goes to every shard through pgshard; the data is split by the map.
  for (const char* ddl : kSchema) {
    query(single.get(), ddl);
    query(sharded.get(), ddl);
  }
  for (const auto& stmt : data_statements()) {
    query(single.get(), stmt);
    query(sharded.get(), stmt);
  }
  for (const char* t : {"users", "orders", "order_items", "profiles", "metrics"})
    for (int i = 0; i < cluster.size(); ++i) {
      auto d = connect(cluster.direct(i));
      CHECK(std::stoi(scalar(d.get(), std::string("select count(*) from ") + t)) > 0);
    }

  std::vector<std::filesystem::path> files;
  for (const auto& e :
       std::filesystem::directory_iterator(PGSHARD_SOURCE_DIR "/tests/integration/differential"))
    if (e.path().extension() == ".sql") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  REQUIRE(files.size() >= 200);

  int compared = 0;
  for (const auto& file : files) {
    std::ifstream in(file);
    std::string line, sql, expect_error;
    bool ordered = false;
    std::vector<std::string> params;
    std::vector<std::string> settings;  // SETs for both sides, undone after the case
    std::string text_error;             // refused in text results only (binary merges)
    bool has_params = false;
    bool binary_params = false;
    while (std::getline(in, line)) {
      if (sql.empty() && line.starts_with("-- ordered")) {
        ordered = true;
      } else if (sql.empty() && line.starts_with("-- error: ")) {
        expect_error = line.substr(10, 5);
      } else if (sql.empty() && line.starts_with("-- params: ")) {
        has_params = true;
        std::stringstream ps(line.substr(11));
        for (std::string p; std::getline(ps, p, '|');) params.push_back(p);
      } else if (sql.empty() && line.starts_with("-- binary-params")) {
        binary_params = true;
      } else if (sql.empty() && line.starts_with("-- text-error: ")) {
        text_error = line.substr(15, 5);
      } else if (sql.empty() && line.starts_with("-- set: ")) {
        settings.push_back(line.substr(8));
      } else if (sql.empty() && line.starts_with("--")) {
        continue;  // a comment
      } else {
        sql += line + "\n";
      }
    }
    for (const auto& set : settings) {
      query(single.get(), "set " + set);
      query(sharded.get(), "set " + set);
    }
    for (int mode = has_params ? 1 : 0; mode <= 2; ++mode) {
      const char* mode_name[] = {"simple", "extended text", "extended binary"};
      INFO(file.filename().string() << " (" << mode_name[mode] << "):\n" << sql);
      Result p = run_case(sharded.get(), sql, mode, params, binary_params);
      const std::string& expected = mode < 2 && !text_error.empty() ? text_error : expect_error;
      if (!expected.empty()) {
        INFO("pgshard said: " << p.message);
        CHECK(p.error == expected);
        continue;
      }
      Result s = run_case(single.get(), sql, mode, params, binary_params);
      INFO("PostgreSQL said: " << s.error << " " << s.message);
      INFO("pgshard said: " << p.error << " " << p.message);
      if (!s.error.empty()) {
        CHECK(p.error == s.error);
        continue;
      }
      CHECK(p.error.empty());  // (CHECK: one failing case must not hide the others)
      if (!p.error.empty()) continue;
      CHECK(p.names == s.names);
      CHECK(p.types == s.types);
      CHECK(p.tag == s.tag);
      if (!ordered) {
        std::sort(p.rows.begin(), p.rows.end());
        std::sort(s.rows.begin(), s.rows.end());
      }
      INFO("PostgreSQL rows:\n" << show(s.rows) << "pgshard rows:\n" << show(p.rows));
      CHECK(p.rows.size() == s.rows.size());
      CHECK(p.rows == s.rows);
      ++compared;
    }
    if (!settings.empty()) {
      query(single.get(), "reset all");
      query(sharded.get(), "reset all");
    }
  }
  INFO("comparisons: " << compared);
  CHECK(compared > 400);
}
