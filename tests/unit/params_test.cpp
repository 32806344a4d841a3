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

TEST_CASE("client_encoding names are spelled as PostgreSQL spells them", "[params]") {
  // encnames.c: letters and digits only, any case, then its alias table.
  CHECK(canonical_encoding("unicode") == "UTF8");
  CHECK(canonical_encoding("UTF-8") == "UTF8");
  CHECK(canonical_encoding("utf_8") == "UTF8");
  CHECK(canonical_encoding("SQL_ASCII") == "SQL_ASCII");
  CHECK(canonical_encoding("Latin-1") == "LATIN1");
  CHECK(canonical_encoding("ISO-8859-15") == "LATIN9");
  CHECK(canonical_encoding("iso_8859_5") == "ISO_8859_5");
  CHECK(canonical_encoding("Shift_JIS") == "SJIS");
  CHECK(canonical_encoding("windows-1251") == "WIN1251");
  CHECK(canonical_encoding("win") == "WIN1251");
  CHECK(canonical_encoding("KOI8-R") == "KOI8R");
  CHECK(canonical_encoding("euc_jis_2004") == "EUC_JIS_2004");
  CHECK(canonical_encoding("TCVN5712") == "WIN1258");
  // Unknown names stay as the client wrote them, for the server to refuse.
  CHECK(canonical_encoding("Klingon-8") == "Klingon-8");
  CHECK(canonical_encoding("") == "");
}
