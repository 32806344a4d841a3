// PAUSE under work across shards: it holds new work and returns once the running work has
// finished, which must be able to take the servers it still needs on paused shards (else
// it holds the servers PAUSE waits for, and both wait until timeouts.pool_wait).
#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "accounts.hpp"
#include "harness.hpp"

using namespace harness;
using namespace accounts;
using namespace std::chrono_literals;

TEST_CASE("PAUSE lets a transaction's statement on several shards join a shard", "[pool]") {
  // T is open on s0 when PAUSE comes (PAUSE waits for it); then T's UPDATE of a row on s0
  // and one on s1 joins s1. The executor sets T's s0 server aside while it waits for s1's,
  // and the pool took T for new work: held, while PAUSE waited for T's s0 server, until
  // pool_wait (08001 for T, PAUSE returning 6 s late).
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  Proxy proxy(small_pools_with_console("6s"));
  auto adm = connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
  auto t = connect(proxy.conninfo());
  query(t.get(), "begin");
  query(t.get(), add_to(a));
  REQUIRE(PQsendQuery(adm.get(), "PAUSE") == 1);
  CHECK(await_result(adm.get(), 300ms) == "timeout");  // waiting for T
  const std::string both = "update accounts set balance = balance + 1 where id in (" +
                           std::to_string(a) + ", " + std::to_string(b) + ")";
  REQUIRE(PQsendQuery(t.get(), both.c_str()) == 1);
  CHECK(await_result(t.get(), 2s).empty());
  query(t.get(), "commit");
  CHECK(await_result(adm.get(), 2s).empty());  // PAUSE returns once T has ended
  // New work is held until RESUME.
  REQUIRE(PQsendQuery(t.get(), add_to(a).c_str()) == 1);
  CHECK(await_result(t.get(), 300ms) == "timeout");
  query(adm.get(), "RESUME");
  CHECK(await_result(t.get(), 2s).empty());
  CHECK(total_balance() == 1204);
  CHECK(prepared_left() == 0);
}

TEST_CASE("PAUSE lets an autocommit statement on several shards take the servers it still needs",
          "[pool]") {
  // T holds s1's only server; S, an UPDATE of every account outside a transaction block,
  // has taken s0's and waits for s1's; then PAUSE. T commits: S gets s1's server and needs
  // s2's too. Held as new work, S kept s0's and s1's, which PAUSE waited for, until
  // pool_wait. Now S finishes, and PAUSE returns.
  make_accounts(12, 100);
  const int b = account_on(1);
  Proxy proxy(small_pools_with_console("6s"));
  auto adm = connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
  auto t = connect(proxy.conninfo()), s = connect(proxy.conninfo());
  query(t.get(), "begin");
  query(t.get(), add_to(b));
  const std::string every = "update accounts set balance = balance + 1 where balance > 0";
  REQUIRE(PQsendQuery(s.get(), every.c_str()) == 1);
  REQUIRE(wait_until([&] { return clients_waiting(adm.get(), "s1") == 1; }, 5s));
  REQUIRE(PQsendQuery(adm.get(), "PAUSE") == 1);
  CHECK(await_result(adm.get(), 300ms) == "timeout");  // waiting for T and S
  query(t.get(), "commit");
  CHECK(await_result(s.get(), 2s).empty());
  CHECK(await_result(adm.get(), 2s).empty());
  query(adm.get(), "RESUME");
  CHECK(total_balance() == 1213);
  CHECK(prepared_left() == 0);
}
