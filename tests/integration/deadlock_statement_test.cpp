// Deadlocks through a statement on several shards run outside a transaction block (an
// autocommit UPDATE without the shard key): its row locks and pooled servers are held on
// every shard until it ends, as a transaction's are, and a cycle through it is broken with
// 40P01 like a cycle of transactions; the statement, when it is the victim, changes nothing
// on any shard.
#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <string>

#include "accounts.hpp"
#include "harness.hpp"

using namespace harness;
using namespace accounts;

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// Every account, on every shard, without the key: one statement across all shards.
const std::string kEveryAccount = "update accounts set balance = balance + 1 where balance > 0";

long long balance(PGconn* c, int id) {
  return std::stoll(scalar(c, "select balance from accounts where id = " + std::to_string(id)));
}

// S, the younger, is the victim of the cycle that closed at `formed` (`what` names it): its
// client gets 40P01 (DETAIL containing `detail`) soon after, and it is idle. T, waiting for
// what S held, goes on at once and commits its rows a and b; S changed nothing on any
// shard, and its next statement runs as any other.
void statement_was_victim(PGconn* s, PGconn* t, int a, int b, steady_clock::time_point formed,
                          const char* what, const char* detail) {
  const std::string code = await_result(s, std::chrono::seconds(6));
  const auto took = std::chrono::duration_cast<milliseconds>(steady_clock::now() - formed);
  std::cout << what << ": " << (code.empty() ? "ok" : code) << " after " << took.count() << " ms\n";
  CHECK(code == "40P01");
  CHECK(took < milliseconds(3000));
  CHECK_THAT(PQerrorMessage(s), Catch::Contains("deadlock detected"));
  CHECK_THAT(PQerrorMessage(s), Catch::Contains(detail));
  CHECK_THAT(PQerrorMessage(s), Catch::Contains("this statement waited"));
  CHECK(PQtransactionStatus(s) == PQTRANS_IDLE);
  CHECK(await_result(t, std::chrono::seconds(5)).empty());
  query(t, "commit");
  CHECK(balance(s, a) == 101);
  CHECK(balance(s, b) == 101);
  CHECK(total_balance() == 1202);
  query(s, kEveryAccount);
  CHECK(total_balance() == 1214);
  CHECK(prepared_left() == 0);
}

}  // namespace

TEST_CASE("a lock cycle through an autocommit UPDATE on every shard ends in 40P01", "[deadlock]") {
  // T locks a on s0. S, an UPDATE of every account outside a transaction block, locks every
  // row of s1 and waits on s0 for T; T then wants b on s1 and waits for S. Each shard sees
  // one waiter; before, the detector saw only transaction blocks and both waited for ever
  // (here until S's statement_timeout). Now S, the younger, gets 40P01 and rolls back on
  // every shard, and T proceeds.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  Proxy proxy(accounts_map());
  auto t = connect(proxy.conninfo()), s = connect(proxy.conninfo());
  // (Without the fix the cycle ends only here; the shards are then free for the next case.)
  query(s.get(), "set statement_timeout = '9s'");
  query(t.get(), "begin");
  query(t.get(), add_to(a));
  REQUIRE(PQsendQuery(s.get(), kEveryAccount.c_str()) == 1);
  wait_for_lock_wait(0);
  auto s1 = connect(Cluster::get().direct(1));
  REQUIRE(wait_until(
      [&] {
        return scalar(s1.get(),
                      "select count(*) from pg_stat_activity where state = 'idle in "
                      "transaction' and query = '" +
                          kEveryAccount + "'") == "1";
      },
      std::chrono::seconds(5)));
  const auto formed = steady_clock::now();
  REQUIRE(PQsendQuery(t.get(), add_to(b).c_str()) == 1);
  statement_was_victim(s.get(), t.get(), a, b, formed, "lock cycle through an autocommit UPDATE",
                       "across shards");
}

TEST_CASE("a cycle of pool waits through an autocommit statement on several shards ends in 40P01",
          "[deadlock]") {
  // s0 and s1 have one server each. T holds s1's (b locked in its transaction); S, an
  // UPDATE of every account, takes s0's and waits for s1's; T then wants s0's and waits for
  // S. No shard sees a lock wait. Before, S's servers were nobody's to the detector, and
  // both waited until timeouts.pool_wait; now S, the younger, gets 40P01 at once, its s0
  // server goes back untouched, and T commits.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  Proxy proxy(small_pools_with_console("8s"));
  auto console = connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
  auto t = connect(proxy.conninfo()), s = connect(proxy.conninfo());
  query(t.get(), "begin");
  query(t.get(), add_to(b));
  REQUIRE(PQsendQuery(s.get(), kEveryAccount.c_str()) == 1);
  REQUIRE(wait_until([&] { return clients_waiting(console.get(), "s1") == 1; },
                     std::chrono::seconds(5)));
  const auto formed = steady_clock::now();
  REQUIRE(PQsendQuery(t.get(), add_to(a).c_str()) == 1);
  statement_was_victim(s.get(), t.get(), a, b, formed, "pool waits through an autocommit UPDATE",
                       "for a pooled server");
}
