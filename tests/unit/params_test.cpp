// Settings that follow a client across server connections.
#include "proxy/runtime/params.hpp"

#include <catch2/catch.hpp>

using namespace pgshard::runtime;
using pgshard::protocol::quote_literal;

TEST_CASE("options -c settings parse like PostgreSQL's", "[params]") {
  Params p;
  REQUIRE_FALSE(
      parse_options("-c search_path=app,public --statement-timeout=5s -cwork_mem=4MB", p));
  CHECK(p["search_path"] == "app,public");
  CHECK(p["statement_timeout"] == "5s");
  CHECK(p["work_mem"] == "4MB");
  Params q;
  REQUIRE_FALSE(parse_options("-c application_name=with\\ space", q));
  CHECK(q["application_name"] == "with space");
  Params bad;
  CHECK(parse_options("-d 5", bad));
  CHECK(parse_options("-c novalue", bad));
  CHECK(parse_options("-c x;drop=1", bad));
}

TEST_CASE("sync statements set what differs and reset what only the server has", "[params]") {
  Params client{{"TimeZone", "UTC"}, {"search_path", "app"}, {"application_name", "x"}};
  Params server{{"TimeZone", "Europe/Paris"},
                {"application_name", "x"},
                {"extra_float_digits", "3"},
                {"server_version", "15"}};
  auto sql = sync_statements(client, server);
  CHECK(sql ==
        "SELECT pg_catalog.set_config('TimeZone', 'UTC', false);"
        "SELECT pg_catalog.set_config('search_path', 'app', false);RESET \"extra_float_digits\";");
  CHECK(sync_statements(client, client).empty());
  CHECK(quote_literal("it's") == "'it''s'");
}

TEST_CASE("fingerprints tell equal setting sets from different ones", "[params]") {
  Params a{{"TimeZone", "UTC"}, {"application_name", "x"}};
  Params b = a;
  CHECK(fingerprint(a) == fingerprint(b));
  b["application_name"] = "y";
  CHECK(fingerprint(a) != fingerprint(b));
  // Key/value boundaries matter.
  CHECK(fingerprint({{"ab", "c"}}) != fingerprint({{"a", "bc"}}));
  CHECK(fingerprint({}) != 0);
}
