// pgshard.unique_id(): the Snowflake layout, growth, and the 53-bit variant's bounds.
#include "proxy/runtime/unique_id.hpp"

#include <catch2/catch.hpp>
#include <set>

using pgshard::runtime::unique_id_parts;

TEST_CASE("unique ids grow, carry the node, and stay within their bits", "[unique_id]") {
  pgshard::runtime::GlobalIds ids;  // (each test has its own)
  auto unique_id = [&](int node, bool js_safe) { return ids.next(node, js_safe); };
  std::set<int64_t> seen;
  int64_t last = 0;
  for (int i = 0; i < 20000; ++i) {  // more than one millisecond's sequence: borrows ahead
    const auto id = unique_id(1023, false);
    REQUIRE(id);
    CHECK(*id > last);
    last = *id;
    seen.insert(*id);
    const auto parts = unique_id_parts(*id, false);
    CHECK(parts.node == 1023);
    CHECK(parts.sequence < 4096);
  }
  CHECK(seen.size() == 20000);
  // Milliseconds since 2025-01-01: after 2026-01-01 on this machine's clock, within 41 bits.
  CHECK(unique_id_parts(last, false).millis > 365LL * 24 * 3600 * 1000);
  CHECK(last > 0);
  int64_t js_last = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto id = unique_id(63, true);
    REQUIRE(id);
    CHECK(*id > js_last);
    CHECK(*id < (int64_t{1} << 53));
    js_last = *id;
    CHECK(unique_id_parts(*id, true).node == 63);
  }
  // Two nodes never collide: the node bits differ.
  CHECK(unique_id(5, false) != unique_id(6, false));
  CHECK_FALSE(unique_id(64, true));
  CHECK_FALSE(unique_id(1024, false));
  CHECK_FALSE(unique_id(-1, false));
}
