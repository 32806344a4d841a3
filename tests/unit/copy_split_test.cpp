// COPY row splitting: rows across message boundaries, escapes, CSV quotes, headers, NULLs.
#include "proxy/executor/copy_split.hpp"

#include <catch2/catch.hpp>
#include <vector>

using namespace pgshard;

namespace {
struct Row {
  std::string row;
  std::optional<std::string> key;
  bool header;
};

std::vector<Row> split(const router::CopySplit& spec, int key,
                       const std::vector<std::string>& pieces) {
  executor::CopyRowSplitter s(spec, key);
  std::vector<Row> out;
  auto on_row = [&](std::string_view r, const std::optional<std::string>& k, bool h) {
    out.push_back({std::string(r), k, h});
  };
  for (const auto& p : pieces) s.feed(p, on_row);
  s.finish(on_row);
  return out;
}
}  // namespace

TEST_CASE("text rows split across pieces, with escapes and NULL", "[copy]") {
  router::CopySplit text;
  auto rows = split(text, 1, {"a\t4", "2\tx\n", "b\t\\N\n", "c\t7\\", "\t\tz\n", "d\t9"});
  REQUIRE(rows.size() == 4);
  CHECK(rows[0].row == "a\t42\tx\n");
  CHECK(rows[0].key == "42");
  CHECK_FALSE(rows[1].key);      // \N is NULL
  CHECK(rows[2].key == "7\t");   // escaped tab is data, not a delimiter
  CHECK(rows[3].row == "d\t9");  // last row without a newline
  CHECK(rows[3].key == "9");
  // "\." ends the data in old clients; it is not a row.
  CHECK(split(text, 0, {"1\n\\.\n"}).size() == 1);
}

TEST_CASE("CSV rows: quotes, embedded newlines and delimiters, header", "[copy]") {
  router::CopySplit csv;
  csv.csv = true;
  csv.delimiter = ',';
  csv.header = true;
  auto rows =
      split(csv, 1, {"name,id\n\"multi\nline\",5\n\"a,b\",\"6\"\n", "\"q\"\"uote\",7\n,\n"});
  REQUIRE(rows.size() == 5);
  CHECK(rows[0].header);
  CHECK(rows[1].row == "\"multi\nline\",5\n");
  CHECK(rows[1].key == "5");
  CHECK(rows[2].key == "6");
  CHECK(rows[3].key == "7");
  CHECK_FALSE(rows[4].key);  // unquoted empty is NULL
  // A quoted key keeps its text.
  csv.header = false;
  auto q = split(csv, 0, {"\"x\"\"y\",1\n"});
  CHECK(q[0].key == "x\"y");
}

TEST_CASE("missing key fields give no key", "[copy]") {
  router::CopySplit text;
  auto rows = split(text, 3, {"a\tb\n"});
  REQUIRE(rows.size() == 1);
  CHECK_FALSE(rows[0].key);
}

TEST_CASE("rows after the end-of-data marker are ignored, as PostgreSQL ignores them", "[copy]") {
  router::CopySplit text;
  auto rows = split(text, 0, {"1\ta\n\\.", "\n2\tb\n"});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].row == "1\ta\n");
  router::CopySplit csv;
  csv.csv = true;
  csv.delimiter = ',';
  rows = split(csv, 0, {"1,a\n\\.\n3,c\n"});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].row == "1,a\n");
}

TEST_CASE("text key fields decode every escape as PostgreSQL's COPY does", "[copy]") {
  router::CopySplit text;
  auto key = [&](const std::string& field) {
    auto rows = split(text, 0, {field + "\tv\n"});
    REQUIRE(rows.size() == 1);
    return rows[0].key;
  };
  CHECK(key("\\x37\\x37\\x37\\x30\\x30\\x31") == "777001");  // hex, 2 digits
  CHECK(key("\\x7x") == "\ax");                              // hex, 1 digit
  CHECK(key("a\\xz") == "axz");                              // \x without a hex digit: x
  CHECK(key("oct\\101") == "octA");                          // octal, 3 digits
  CHECK(key("\\61\\0627") == "127");                         // octal, 2 digits, then a 3rd
  CHECK(key("\\7") == "\a");                                 // octal, 1 digit
  CHECK(key("\\1011") == "A1");                              // at most 3 octal digits
  CHECK(key("\\b\\f\\n\\r\\t\\v") == "\b\f\n\r\t\v");
  CHECK(key("\\\\N") == "\\N");  // the text \N, not NULL
  CHECK(key("\\q") == "q");      // any other byte stands for itself
  CHECK_FALSE(key("\\N"));
  CHECK(key("\\303\\251") == "\xc3\xa9");  // bytes >= 0x80
}
