// Transactions across shards: two-phase commit, rollback, and the bank test — transfers
// between accounts on three shards while pgshard is killed with SIGKILL and restarted; the
// total balance never changes and no prepared transaction is left behind.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "accounts.hpp"
#include "harness.hpp"

using namespace harness;
using namespace accounts;

namespace {

// Moves `amount` from account a to b in one transaction; the SQLSTATE of the first
// statement that failed, "ROLLBACK" when COMMIT answered ROLLBACK, "" when it committed.
// Its SQLSTATE ("" when it committed); `message`, if given, gets the error's message.
std::string transfer(PGconn* c, int a, int b, int amount, std::string* message = nullptr) {
  std::string code;
  for (const std::string& sql : {std::string("begin"),
                                 "update accounts set balance = balance - " +
                                     std::to_string(amount) + " where id = " + std::to_string(a),
                                 "update accounts set balance = balance + " +
                                     std::to_string(amount) + " where id = " + std::to_string(b),
                                 std::string("commit")}) {
    PGresult* r = PQexec(c, sql.c_str());
    if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) code = s;
    if (message && !code.empty()) *message = sql + ": " + PQresultErrorMessage(r);
    const bool rolled_back = sql == "commit" && std::string(PQcmdStatus(r)) == "ROLLBACK";
    PQclear(r);
    if (rolled_back && code.empty()) code = "ROLLBACK";
    if (!code.empty()) break;
  }
  return code;
}

}  // namespace

TEST_CASE("a transaction across shards commits everywhere or nowhere", "[txn]") {
  make_accounts(12, 100);
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  query(c.get(), "begin");
  for (int id = 1; id <= 12; ++id)
    query(c.get(), "update accounts set balance = balance + 1 where id = " + std::to_string(id));
  query(c.get(), "commit");
  CHECK(total_balance() == 1212);
  CHECK(prepared_left() == 0);
  // ROLLBACK undoes every shard's part.
  query(c.get(), "begin");
  for (int id = 1; id <= 12; ++id)
    query(c.get(), "update accounts set balance = 0 where id = " + std::to_string(id));
  query(c.get(), "rollback");
  CHECK(total_balance() == 1212);
  // An error on one shard aborts the whole transaction; COMMIT answers ROLLBACK.
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = 0 where id = 1");
  CHECK(error_code(c.get(), "update accounts set balance = balance / 0 where id = 2") == "22012");
  CHECK(error_code(c.get(), "update accounts set balance = 0 where id = 3") == "25P02");
  PGresult* r = PQexec(c.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(total_balance() == 1212);
  CHECK(prepared_left() == 0);
  // Extended protocol (BEGIN, parameters, COMMIT) as drivers send it.
  query(c.get(), "begin");
  for (int id = 1; id <= 12; ++id) {
    std::string v = std::to_string(id);
    const char* p[] = {v.c_str()};
    PGresult* u = PQexecParams(c.get(), "update accounts set balance = balance - 1 where id = $1",
                               1, nullptr, p, nullptr, nullptr, 0);
    CHECK(PQresultStatus(u) == PGRES_COMMAND_OK);
    PQclear(u);
  }
  PGresult* cm = PQexecParams(c.get(), "commit", 0, nullptr, nullptr, nullptr, nullptr, 0);
  CHECK(std::string(PQcmdStatus(cm)) == "COMMIT");
  PQclear(cm);
  CHECK(total_balance() == 1200);
}

TEST_CASE("without two-phase commit each shard commits in turn", "[txn]") {
  make_accounts(6, 10);
  ProxyOptions o = accounts_map();
  o.extra_top = "two_phase_commit: false\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  query(c.get(), "begin");
  for (int id = 1; id <= 6; ++id)
    query(c.get(), "update accounts set balance = balance * 2 where id = " + std::to_string(id));
  query(c.get(), "commit");
  CHECK(total_balance() == 120);
  CHECK(prepared_left() == 0);
}

TEST_CASE("bank: transfers across shards survive SIGKILL of pgshard", "[bank]") {
  constexpr int kAccounts = 12, kClients = 8, kTransfers = 5000, kKills = 5;
  make_accounts(kAccounts, 1000);
  const long long start_total = total_balance();
  REQUIRE(start_total == 12000);
  ProxyOptions o = accounts_map();
  o.port = free_port();
  o.pool_size = 8;
  o.two_phase_log = temp_dir("bank-2pc");
  std::mutex proxy_mu;
  auto proxy = std::make_unique<Proxy>(o);
  const std::string conninfo = proxy->conninfo("connect_timeout=5");

  std::atomic<int> attempts{0}, committed{0}, failed{0};
  std::vector<std::string> recoveries;
  auto recovery_line = [](const Proxy& p) {
    for (int i = 0; i < 50; ++i) {
      std::string log = p.log_tail(200);
      auto at = log.find("two-phase commit recovery:");
      if (at != std::string::npos) return log.substr(at, log.find('\n', at) - at);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return std::string("(no recovery line)");
  };
  std::atomic<bool> stop{false};
  auto client = [&](int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    PGconn* c = nullptr;
    while (!stop) {
      if (!c || PQstatus(c) != CONNECTION_OK) {
        if (c) PQfinish(c);
        c = PQconnectdb(conninfo.c_str());
        if (PQstatus(c) != CONNECTION_OK) {
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          continue;
        }
      }
      if (attempts.fetch_add(1) >= kTransfers) break;
      int a = static_cast<int>(rng() % kAccounts) + 1, b = static_cast<int>(rng() % kAccounts) + 1;
      if (a == b) b = b % kAccounts + 1;
      const int amount = static_cast<int>(rng() % 10) + 1;
      // Rows are locked in id order, so transfers never wait on each other in a cycle.
      const int lo = std::min(a, b), hi = std::max(a, b);
      const int lo_delta = lo == a ? -amount : amount;
      bool ok = true;
      auto run = [&](const std::string& sql) {
        if (!ok) return;
        PGresult* r = PQexec(c, sql.c_str());
        ok = PQresultStatus(r) == PGRES_COMMAND_OK;
        if (ok && sql == "commit") ok = std::string(PQcmdStatus(r)) == "COMMIT";
        PQclear(r);
      };
      run("begin");
      run("update accounts set balance = balance + " + std::to_string(lo_delta) +
          " where id = " + std::to_string(lo));
      run("update accounts set balance = balance + " + std::to_string(-lo_delta) +
          " where id = " + std::to_string(hi));
      run("commit");
      if (ok) {
        ++committed;
      } else {
        ++failed;
        PQfinish(c);  // whatever happened, start from a clean connection
        c = nullptr;
      }
    }
    if (c) PQfinish(c);
  };
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) clients.emplace_back(client, 1000 + i);
  int kills = 0;
  for (; kills < kKills && attempts < kTransfers; ++kills) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    std::lock_guard lock(proxy_mu);
    CHECK(proxy->signal_and_wait(SIGKILL, 5000) != -1);
    proxy = std::make_unique<Proxy>(o);  // same port, same decision log: recovery runs
    recoveries.push_back(recovery_line(*proxy));
  }
  for (auto& t : clients) t.join();
  stop = true;
  // One more restart: recovery resolves anything the last kill left in doubt.
  proxy->signal_and_wait(SIGKILL, 5000);
  proxy = std::make_unique<Proxy>(o);
  recoveries.push_back(recovery_line(*proxy));
  auto c = connect(proxy->conninfo());
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "12000");
  const long long end_total = total_balance();
  std::cout << "bank: " << attempts.load() << " attempts, " << committed.load() << " committed, "
            << failed.load() << " failed, " << kills << " SIGKILLs, total " << start_total << " -> "
            << end_total << ", prepared transactions left " << prepared_left() << "\n";
  for (const auto& r : recoveries) std::cout << "  after restart: " << r << "\n";
  CHECK(kills == kKills);
  CHECK(end_total == start_total);
  CHECK(prepared_left() == 0);
  CHECK(committed > kTransfers / 2);
}

TEST_CASE("savepoints keep a transaction on one shard", "[txn]") {
  make_accounts(12, 100);
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  // On one shard savepoints behave as PostgreSQL's own.
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = 1 where id = 1");
  query(c.get(), "savepoint s1");
  query(c.get(), "update accounts set balance = 2 where id = 1");
  query(c.get(), "rollback to savepoint s1");
  CHECK(scalar(c.get(), "select balance from accounts where id = 1") == "1");
  // Another shard would not roll back to s1: refused, and like any ERROR the refusal fails
  // the transaction (COMMIT answers ROLLBACK).
  int other = 2;
  std::string msg;
  for (; other <= 12; ++other)
    if (error_code(c.get(), "update accounts set balance = 3 where id = " + std::to_string(other),
                   &msg) == "0A000")
      break;
  CHECK(other <= 12);
  CHECK_THAT(msg, Catch::Contains("savepoints"));
  PGresult* r = PQexec(c.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(total_balance() == 1200);
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = 1 where id = 1");
  query(c.get(), "savepoint s1");
  query(c.get(), "update accounts set balance = 2 where id = 1");
  query(c.get(), "rollback to savepoint s1");
  query(c.get(), "commit");
  CHECK(total_balance() == 1101);
  // Once several shards are in, SAVEPOINT is refused.
  query(c.get(), "begin");
  for (int id = 1; id <= 12; ++id)
    query(c.get(), "update accounts set balance = balance + 1 where id = " + std::to_string(id));
  CHECK(error_code(c.get(), "savepoint s2") == "0A000");
  r = PQexec(c.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(total_balance() == 1101);
}

TEST_CASE("multi-shard statements run inside a transaction", "[txn]") {
  make_accounts(12, 100);
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = 0 where id = 1");
  // Reads see the transaction's own writes, on every shard.
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "1100");
  CHECK(query(c.get(), "select id from accounts order by balance, id limit 1") ==
        std::vector<std::vector<std::string>>{{"1"}});
  // A write to every shard, in the same transaction.
  PGresult* r = PQexec(c.get(), "update accounts set balance = balance + 1 where balance > 0");
  CHECK(std::string(PQcmdStatus(r)) == "UPDATE 11");
  PQclear(r);
  CHECK(total_balance() == 1200);  // nothing visible outside yet
  query(c.get(), "commit");
  CHECK(total_balance() == 1111);
  CHECK(prepared_left() == 0);
  // A failure on one shard fails the transaction everywhere.
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = 5 where id = 2");
  CHECK(error_code(c.get(), "select 10 / (balance - 5) from accounts") == "22012");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INERROR);
  CHECK(error_code(c.get(), "select 1") == "25P02");
  r = PQexec(c.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(total_balance() == 1111);
  CHECK(scalar(c.get(), "select count(*) from accounts") == "12");
}

TEST_CASE("a client that leaves during a multi-shard statement of its transaction", "[txn]") {
  // The statement borrows the transaction's servers from their relays. The client leaving
  // ended the links: a relay returned its server (freed, as it was mid-reply) while the
  // statement still read through it (heap-use-after-free under ASan, found by the session
  // fuzzer; a crash or a server handed on mid-reply without it).
  make_accounts(12, 100);
  Proxy proxy(accounts_map());
  for (int round = 0; round < 12; ++round) {
    auto c = connect(proxy.conninfo());
    query(c.get(), "begin");
    query(c.get(),
          "update accounts set balance = balance where id = " + std::to_string(1 + round % 12));
    REQUIRE(PQsendQuery(c.get(), "select id, pg_sleep(0.05) from accounts") == 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20 + 15 * (round % 6)));
    c.reset();  // gone without a word, mid-statement
  }
  REQUIRE(proxy.running());
  auto fresh = connect(proxy.conninfo());
  CHECK(scalar(fresh.get(), "select sum(balance) from accounts") == "1200");
  CHECK(prepared_left() == 0);
}

TEST_CASE("a client's own PREPARE TRANSACTION: whole on one shard, refused across shards",
          "[txn]") {
  // pgJDBC's XA data source sends PREPARE TRANSACTION itself. Across shards it used to
  // prepare one shard's part only, tell the client the transaction ended, and let the next
  // COMMIT commit the other part alone (found from outside).
  make_accounts(12, 100);
  auto& cluster = Cluster::get();
  int a = 1, b = 2, far = 1;  // a and b on two shards; far not on the first shard
  while (shard_of(b) == shard_of(a)) ++b;
  while (shard_of(far) == 0) ++far;
  Proxy p(accounts_map());
  auto c = connect(p.conninfo());
  auto update = [&](int id, int by) {
    query(c.get(), "update accounts set balance = balance + " + std::to_string(by) +
                       " where id = " + std::to_string(id));
  };
  SECTION("across shards: 0A000 before anything is prepared; COMMIT rolls back every part") {
    query(c.get(), "begin");
    update(a, 1);
    update(b, -1);
    CHECK(error_code(c.get(), "prepare transaction 'x'") == "0A000");
    CHECK(prepared_left() == 0);
    CHECK(PQtransactionStatus(c.get()) == PQTRANS_INERROR);
    PGresult* r = PQexec(c.get(), "commit");
    CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
    PQclear(r);
    CHECK(total_balance() == 1200);
    CHECK(scalar(c.get(), "select balance from accounts where id = " + std::to_string(a)) == "100");
    CHECK(prepared_left() == 0);
  }
  SECTION("on one shard: prepared whole; COMMIT PREPARED reaches the shard that holds it") {
    query(c.get(), "begin");
    update(far, 5);
    query(c.get(), "prepare transaction 'xa-1'");
    CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
    CHECK(prepared_left() == 1);
    // Its identifier is taken in the whole database, as in one PostgreSQL.
    query(c.get(), "begin");
    update(a == far ? b : a, 1);
    CHECK(error_code(c.get(), "prepare transaction 'xa-1'") == "42710");
    query(c.get(), "rollback");
    // Another connection finishes it: the statement goes where 'xa-1' is.
    auto other = connect(p.conninfo());
    query(other.get(), "commit prepared 'xa-1'");
    CHECK(prepared_left() == 0);
    CHECK(scalar(c.get(), "select balance from accounts where id = " + std::to_string(far)) ==
          "105");
    CHECK(error_code(other.get(), "commit prepared 'xa-1'") == "42704");
    // ROLLBACK PREPARED likewise.
    query(c.get(), "begin");
    update(far, 5);
    query(c.get(), "prepare transaction 'xa-2'");
    query(other.get(), "rollback prepared 'xa-2'");
    CHECK(prepared_left() == 0);
    CHECK(total_balance() == 1205);
  }
  SECTION("another pgshard user cannot finish it (both log in to the shards as one role)") {
    ProxyOptions o = accounts_map();
    o.users =
        "  - { name: app, password: secret, pool_mode: transaction }\n"
        "  - { name: mallory, password: other, pool_mode: transaction }\n";
    Proxy two(o);
    auto owner = connect(two.conninfo());
    auto mallory = connect(two.conninfo("", "mallory", "other"));
    query(owner.get(), "begin");
    query(owner.get(),
          "update accounts set balance = balance + 5 where id = " + std::to_string(far));
    query(owner.get(), "prepare transaction 'xa-owned'");
    CHECK(error_code(mallory.get(), "commit prepared 'xa-owned'") == "42501");
    CHECK(error_code(mallory.get(), "rollback prepared 'xa-owned'") == "42501");
    CHECK(prepared_left() == 1);
    auto owner_again = connect(two.conninfo());
    query(owner_again.get(), "commit prepared 'xa-owned'");
    CHECK(prepared_left() == 0);
    CHECK(total_balance() == 1205);
  }
  SECTION("pgshard's own participants are not the client's to take or finish") {
    auto d = connect(cluster.direct(shard_of(far)));
    query(d.get(), "begin");
    query(d.get(), "update accounts set balance = balance + 7 where id = " + std::to_string(far));
    query(d.get(), "prepare transaction 'pgshard_00000000deadbeef_1_7_1'");
    CHECK(error_code(c.get(), "commit prepared 'pgshard_00000000deadbeef_1_7_1'") == "42501");
    CHECK(error_code(c.get(), "rollback prepared 'pgshard_00000000deadbeef_1_7_1'") == "42501");
    CHECK(prepared_left() == 1);
    query(d.get(), "rollback prepared 'pgshard_00000000deadbeef_1_7_1'");
    query(c.get(), "begin");
    update(far, 1);
    CHECK(error_code(c.get(), "prepare transaction 'pgshard_mine'") == "42939");
    query(c.get(), "rollback");
    CHECK(prepared_left() == 0);
    CHECK(total_balance() == 1200);
  }
}

TEST_CASE("a Query of several statements cannot end a transaction on one of its shards", "[txn]") {
  // "UPDATE (other shard); COMMIT" in one Query used to commit (or prepare, or roll back)
  // only the shard it reached, leaving the rest to be committed or lost apart (found from
  // outside).
  make_accounts(12, 100);
  int a = 1, b = 2;
  while (shard_of(b) == shard_of(a)) ++b;
  Proxy p(accounts_map());
  auto c = connect(p.conninfo());
  const std::string ua =
      "update accounts set balance = balance - 1 where id = " + std::to_string(a);
  const std::string ub =
      "update accounts set balance = balance + 1 where id = " + std::to_string(b);
  for (const std::string end : {"commit", "rollback", "prepare transaction 'e6'", "end"}) {
    INFO(end);
    query(c.get(), "begin");
    query(c.get(), ua);
    CHECK(error_code(c.get(), ub + "; " + end) == "0A000");
    CHECK(PQtransactionStatus(c.get()) == PQTRANS_INERROR);
    PGresult* r = PQexec(c.get(), "commit");
    CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
    PQclear(r);
    CHECK(prepared_left() == 0);
    CHECK(total_balance() == 1200);
    CHECK(scalar(c.get(), "select balance from accounts where id = " + std::to_string(a)) == "100");
  }
  // On the transaction's only shard it runs as sent.
  query(c.get(), "begin");
  query(c.get(), ua);
  query(c.get(), ua + "; commit");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
  CHECK(scalar(c.get(), "select balance from accounts where id = " + std::to_string(a)) == "98");
}

TEST_CASE("a statement pgshard refuses inside a transaction fails the transaction", "[txn]") {
  // As an ERROR from PostgreSQL: later statements get 25P02, COMMIT answers ROLLBACK, and
  // nothing the transaction did before the refusal is committed.
  make_accounts(6, 100);
  Proxy p(accounts_map());
  auto c = connect(p.conninfo());
  const char* refused = "select count(*) from accounts a join accounts b on a.balance = b.id";
  for (const bool touched_first : {true, false}) {
    INFO("a shard touched before the refusal: " << touched_first);
    query(c.get(), "begin");
    if (touched_first) query(c.get(), "update accounts set balance = balance + 1 where id = 1");
    CHECK(error_code(c.get(), refused) == "0A000");
    CHECK(PQtransactionStatus(c.get()) == PQTRANS_INERROR);
    CHECK(error_code(c.get(), "select balance from accounts where id = 2") == "25P02");
    PGresult* r = PQexec(c.get(), "commit");
    CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
    PQclear(r);
    CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
    CHECK(scalar(c.get(), "select balance from accounts where id = 1") == "100");
  }
  // Across shards, and through the extended protocol.
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = balance + 1 where id = 1");
  query(c.get(), "update accounts set balance = balance + 1 where id = 2");
  PGresult* r = PQexecParams(c.get(), refused, 0, nullptr, nullptr, nullptr, nullptr, 0);
  CHECK(std::string(PQresultErrorField(r, PG_DIAG_SQLSTATE)) == "0A000");
  PQclear(r);
  r = PQexec(c.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "600");
  // As on PostgreSQL, ROLLBACK TO SAVEPOINT recovers from the error.
  query(c.get(), "begin");
  query(c.get(), "update accounts set balance = balance + 1 where id = 1");
  query(c.get(), "savepoint s");
  CHECK(error_code(c.get(), refused) == "0A000");
  CHECK(error_code(c.get(), "select 1") == "25P02");
  query(c.get(), "rollback to savepoint s");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INTRANS);
  query(c.get(), "update accounts set balance = balance + 1 where id = 1");
  query(c.get(), "commit");
  CHECK(scalar(c.get(), "select balance from accounts where id = 1") == "102");
  query(c.get(), "update accounts set balance = 100 where id = 1");
  // Outside a transaction a refusal changes nothing.
  CHECK(error_code(c.get(), refused) == "0A000");
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
  CHECK(scalar(c.get(), "select balance from accounts where id = 1") == "100");
}

TEST_CASE("a lock cycle across shards: the younger transaction gets 40P01 within 2 s",
          "[deadlock]") {
  // T1 locks a (on one shard) then b (another); T2 locks b then a. Each shard sees one
  // waiter and no cycle; one PostgreSQL would abort one of them after deadlock_timeout.
  make_accounts(12, 100);
  const int a = 1;
  int b = 2;
  while (shard_of(b) == shard_of(a)) ++b;
  Proxy proxy(accounts_map());
  auto t1 = connect(proxy.conninfo()), t2 = connect(proxy.conninfo());
  const int b_shard = shard_of(b);
  const auto formed = lock_cycle(t1.get(), t2.get(), a, b, [&] { wait_for_lock_wait(b_shard); });
  // T2, the younger, is the victim: 40P01 naming the shards, soon after the cycle formed.
  REQUIRE(await_result(t2.get(), std::chrono::seconds(10)) == "40P01");
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - formed);
  std::cout << "deadlock across shards broken after " << took.count() << " ms\n";
  CHECK(took < std::chrono::milliseconds(2000));
  CHECK(PQtransactionStatus(t2.get()) == PQTRANS_INERROR);
  CHECK_THAT(PQerrorMessage(t2.get()), Catch::Contains("deadlock detected"));
  CHECK_THAT(PQerrorMessage(t2.get()), Catch::Contains("across shards"));
  // As on PostgreSQL, T1 proceeds at once: T2's locks went with it, on every shard, before
  // its client said anything more.
  CHECK(await_result(t1.get(), std::chrono::seconds(5)).empty());
  CHECK(error_code(t2.get(), "select 1") == "25P02");
  PGresult* r = PQexec(t2.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(PQtransactionStatus(t2.get()) == PQTRANS_IDLE);
  // T1 commits both of its updates; T2 changed nothing.
  query(t1.get(), "commit");
  CHECK(scalar(t1.get(), "select balance from accounts where id = " + std::to_string(a)) == "101");
  CHECK(scalar(t1.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(prepared_left() == 0);
  // A transaction that waits with no cycle is left to wait: no 40P01 for a plain lock wait.
  query(t1.get(), "begin");
  query(t1.get(), add_to(a));
  query(t1.get(), add_to(b));
  query(t2.get(), "begin");
  query(t2.get(), add_to(b + 1));
  REQUIRE(PQsendQuery(t2.get(), add_to(a).c_str()) == 1);
  CHECK(await_result(t2.get(), std::chrono::milliseconds(2500)) == "timeout");
  query(t1.get(), "commit");
  CHECK(await_result(t2.get(), std::chrono::seconds(10)).empty());
  query(t2.get(), "commit");
  CHECK(total_balance() == 1206);
}

TEST_CASE("a hung shard does not stop deadlock detection on the others", "[deadlock]") {
  // T3 spans s0 and s2 and waits on s2, which is frozen (a hung host: it accepts
  // connections and never answers). An unrelated cycle of T1 and T2 on s0 and s1 is broken
  // as usual; before, every round of the detector waited on s2 and the cycle lasted until
  // s2 came back.
  make_accounts(24, 100);
  const int a = account_on(0), b = account_on(1), c = account_on(0, {a}), d = account_on(2);
  Proxy proxy(accounts_map());
  auto t1 = connect(proxy.conninfo()), t2 = connect(proxy.conninfo()),
       t3 = connect(proxy.conninfo());
  query(t3.get(), "begin");
  query(t3.get(), add_to(c));
  query(t3.get(), add_to(d));
  FrozenShard frozen(2);
  REQUIRE(PQsendQuery(t3.get(), add_to(d).c_str()) == 1);
  const auto formed = lock_cycle(t1.get(), t2.get(), a, b, [] { wait_for_lock_wait(1); });
  const std::string code = await_result(t2.get(), std::chrono::seconds(6));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - formed);
  std::cout << "deadlock across s0 and s1 while s2 is frozen: " << (code.empty() ? "ok" : code)
            << " after " << took.count() << " ms\n";
  CHECK(code == "40P01");
  CHECK(took < std::chrono::milliseconds(3000));
  CHECK_THAT(PQerrorMessage(t2.get()), Catch::Contains("across shards s0, s1"));
  CHECK(await_result(t1.get(), std::chrono::seconds(5)).empty());
  // s2 comes back: T3 goes on, and everyone ends cleanly.
  frozen.thaw();
  CHECK(await_result(t3.get(), std::chrono::seconds(20)).empty());
  query(t1.get(), "commit");
  query(t2.get(), "rollback");
  query(t3.get(), "rollback");
  CHECK(scalar(t1.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(total_balance() == 2402);
  CHECK(prepared_left() == 0);
}

TEST_CASE(
    "a cycle through a pool wait (a row on one shard and the only server of another) ends in 40P01",
    "[deadlock]") {
  // s0 has one server. A holds it (a row on s0) and waits for B's row on s1; B wants s0
  // and waits for A's server. PostgreSQL sees one lock wait and no cycle; before, only
  // timeouts.pool_wait ended it (B got 08001 after it). Now B, the younger, gets 40P01 and
  // A proceeds.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  ProxyOptions o = one_worker(4);
  o.sharded_tables = accounts_map().sharded_tables;
  o.pool_sizes = {1};
  o.extra_top = "timeouts: { pool_wait: 8s }\n";
  Proxy proxy(o);
  auto ta = connect(proxy.conninfo()), tb = connect(proxy.conninfo());
  const auto formed = lock_cycle(ta.get(), tb.get(), a, b, [] { wait_for_lock_wait(1); });
  const std::string code = await_result(tb.get(), std::chrono::seconds(6));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - formed);
  std::cout << "cycle through a pool wait: " << (code.empty() ? "ok" : code) << " after "
            << took.count() << " ms\n";
  CHECK(code == "40P01");
  CHECK(took < std::chrono::milliseconds(3000));
  CHECK_THAT(PQerrorMessage(tb.get()), Catch::Contains("for a pooled server"));
  CHECK(PQtransactionStatus(tb.get()) == PQTRANS_INERROR);
  // A proceeds at once (B's row on s1 went with B) and commits both of its rows.
  CHECK(await_result(ta.get(), std::chrono::seconds(5)).empty());
  query(ta.get(), "commit");
  PGresult* r = PQexec(tb.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(a)) == "101");
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(total_balance() == 1202);
  CHECK(prepared_left() == 0);
}

TEST_CASE("a cycle of pool waits across workers ends in 40P01", "[deadlock]") {
  // s0 and s1 have one server each for the whole process. A (on one worker) holds s0's and
  // waits for s1's; B (on the other worker) holds s1's and waits for s0's. No shard sees a
  // lock wait: the cycle is pgshard's alone. Before, each worker's pool knew only its own
  // holders, the waits looked as if a server might come free, and only timeouts.pool_wait
  // ended it (08001 after it). Now B, the younger, gets 40P01; once it rolls back, A gets
  // s1's server and commits.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  ProxyOptions o = accounts_map();
  o.workers = 2;
  o.pool_sizes = {1, 1};
  o.extra_top = "timeouts: { pool_wait: 8s }\n";
  Proxy proxy(o);
  // Accepted in a row: round robin puts them on different workers.
  auto ta = connect(proxy.conninfo()), tb = connect(proxy.conninfo());
  // (A queues for s1's server before B asks for s0's.)
  const auto formed = lock_cycle(ta.get(), tb.get(), a, b, [&] {
    CHECK(await_result(ta.get(), std::chrono::milliseconds(300)) == "timeout");
  });
  const std::string code = await_result(tb.get(), std::chrono::seconds(6));
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - formed);
  std::cout << "cycle of pool waits across workers: " << (code.empty() ? "ok" : code) << " after "
            << took.count() << " ms\n";
  CHECK(code == "40P01");
  CHECK(took < std::chrono::milliseconds(3000));
  CHECK_THAT(PQerrorMessage(tb.get()), Catch::Contains("for a pooled server"));
  CHECK(PQtransactionStatus(tb.get()) == PQTRANS_INERROR);
  PGresult* r = PQexec(tb.get(), "rollback");
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  // A gets B's server of s1 (well before pool_wait) and commits both of its rows.
  CHECK(await_result(ta.get(), std::chrono::seconds(3)).empty());
  query(ta.get(), "commit");
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(a)) == "101");
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(total_balance() == 1202);
  CHECK(prepared_left() == 0);
}

TEST_CASE("bank without ordered locking: deadlocks across shards end in 40P01, nothing hangs",
          "[deadlock]") {
  // 8 clients transfer between random accounts on different shards, locking in whatever
  // order the transfer names them: every transfer commits or gets 40P01 (or 40001), the
  // total is unchanged, nothing is left prepared. statement_timeout turns a hang into a
  // failure instead of a stuck test.
  constexpr int kAccounts = 16, kClients = 8, kTransfers = 2000;
  make_accounts(kAccounts, 1000);
  const long long start_total = total_balance();
  std::vector<int> shard(kAccounts + 1);
  {
    auto& cluster = Cluster::get();
    for (int i = 0; i < cluster.size(); ++i) {
      auto d = connect(cluster.direct(i));
      for (const auto& row : query(d.get(), "select id from accounts"))
        shard[std::stoul(row[0])] = i;
    }
  }
  ProxyOptions o = accounts_map();
  o.pool_size = 16;
  Proxy proxy(o);
  const std::string conninfo = proxy.conninfo("options='-c statement_timeout=30000'");
  std::atomic<int> next{0}, committed{0}, deadlocks{0}, unexpected{0};
  std::mutex mu;
  std::string first_unexpected;
  auto client = [&](int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    auto c = connect(conninfo);
    while (next.fetch_add(1) < kTransfers) {
      int a = static_cast<int>(rng() % kAccounts) + 1, b;
      do b = static_cast<int>(rng() % kAccounts) + 1;
      while (shard[static_cast<std::size_t>(b)] == shard[static_cast<std::size_t>(a)]);
      std::string message;
      const std::string code = transfer(c.get(), a, b, static_cast<int>(rng() % 10) + 1, &message);
      if (code.empty()) {
        ++committed;
        continue;
      }
      query(c.get(), "rollback");
      if (code == "40P01" || code == "40001") {
        ++deadlocks;
      } else {
        ++unexpected;
        std::lock_guard lock(mu);
        if (first_unexpected.empty()) first_unexpected = code + ": " + message;
      }
    }
  };
  const auto started = std::chrono::steady_clock::now();
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i) clients.emplace_back(client, 7000 + i);
  for (auto& t : clients) t.join();
  const auto secs =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started)
          .count();
  std::cout << "bank without ordered locking: " << committed.load() << " committed, "
            << deadlocks.load() << " deadlocks (40P01), " << unexpected.load() << " other errors, "
            << secs << " s\n";
  INFO(first_unexpected);
  CHECK(unexpected == 0);
  CHECK(committed + deadlocks == kTransfers);
  CHECK(total_balance() == start_total);
  CHECK(prepared_left() == 0);
}

TEST_CASE("a transaction moved between shards by SET LOCAL pgshard.shard commits on both",
          "[txn]") {
  // Hinted statements once skipped the parser entirely: COMMIT went to the hinted shard
  // alone and left the other shard's part of the transaction open, never committed.
  auto& cluster = Cluster::get();
  for (int i = 0; i < 2; ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists hint_commit");
    query(d.get(), "create table hint_commit (id int)");
  }
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  for (const char* end : {"ROLLBACK", "COMMIT"}) {
    query(c.get(), "BEGIN");
    query(c.get(), "SET LOCAL pgshard.shard = 's0'");
    query(c.get(), "insert into hint_commit values (0)");
    query(c.get(), "SET LOCAL pgshard.shard = 's1'");
    query(c.get(), "insert into hint_commit values (1)");
    query(c.get(), end);
  }
  for (int i = 0; i < 2; ++i) {
    auto d = connect(cluster.direct(i));
    INFO("shard s" << i);
    CHECK(scalar(d.get(), "select count(*) from hint_commit") == "1");
    CHECK(scalar(d.get(),
                 "select count(*) from pg_stat_activity where datname = 'app' and "
                 "state like 'idle in transaction%'") == "0");
    query(d.get(), "SET lock_timeout = '5s'");  // a transaction left open fails, not hangs
    query(d.get(), "drop table hint_commit");
  }
}

// Six clients move money between accounts on different shards (two-phase commit) for
// `duration`; four read the total over every shard, two in autocommit and two in
// REPEATABLE READ transactions (reading it twice). Client i connects to conninfos[i % n].
struct FracturedReads {
  std::atomic<int> transfers{0}, reads{0}, wrong{0}, errors{0};
  std::string first_wrong, first_error;
};
void transfers_and_sums(const std::vector<std::string>& conninfos, std::chrono::seconds duration,
                        int accounts, long long total, FracturedReads& out) {
  constexpr int kWriters = 6, kReaders = 4;
  std::vector<int> shard(static_cast<std::size_t>(accounts) + 1);
  for (int id = 1; id <= accounts; ++id) shard[static_cast<std::size_t>(id)] = shard_of(id);
  const auto until = std::chrono::steady_clock::now() + duration;
  std::mutex mu;
  auto note = [&](std::string& slot, const std::string& what) {
    std::lock_guard lock(mu);
    if (slot.empty()) slot = what;
  };
  auto writer = [&](int seed, const std::string& conninfo) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    auto c = connect(conninfo);
    while (std::chrono::steady_clock::now() < until) {
      int a = static_cast<int>(rng() % static_cast<unsigned>(accounts)) + 1, b;
      do b = static_cast<int>(rng() % static_cast<unsigned>(accounts)) + 1;
      while (shard[static_cast<std::size_t>(b)] == shard[static_cast<std::size_t>(a)]);
      if (a > b) std::swap(a, b);  // ordered locking: no deadlocks to retry
      const int amount = static_cast<int>(rng() % 7) + 1;
      const std::string code = transfer(c.get(), a, b, amount);
      if (code.empty()) {
        ++out.transfers;
      } else {
        ++out.errors;
        note(out.first_error, "writer: " + code + " " + PQerrorMessage(c.get()));
        query(c.get(), "rollback");
      }
    }
  };
  auto reader = [&](bool repeatable, const std::string& conninfo) {
    auto c = connect(conninfo);
    while (std::chrono::steady_clock::now() < until) {
      std::vector<std::string> sums;
      if (repeatable) query(c.get(), "begin isolation level repeatable read");
      for (int i = 0; i < (repeatable ? 2 : 1); ++i) {
        PGresult* r = PQexec(c.get(), "select sum(balance) from accounts");
        if (PQresultStatus(r) == PGRES_TUPLES_OK)
          sums.emplace_back(PQgetvalue(r, 0, 0));
        else
          note(out.first_error, std::string("reader: ") + PQresultErrorMessage(r));
        PQclear(r);
      }
      if (repeatable) query(c.get(), "commit");
      if (sums.size() != (repeatable ? 2u : 1u)) {
        ++out.errors;
        continue;
      }
      for (const auto& s : sums) {
        ++out.reads;
        if (std::stoll(s) != total) {
          ++out.wrong;
          note(out.first_wrong, std::string(repeatable ? "repeatable read" : "autocommit") +
                                    " read " + s + " instead of " + std::to_string(total));
        }
      }
    }
  };
  std::vector<std::thread> threads;
  std::size_t client = 0;
  for (int i = 0; i < kWriters; ++i)
    threads.emplace_back(writer, 9100 + i, conninfos[client++ % conninfos.size()]);
  for (int i = 0; i < kReaders; ++i)
    threads.emplace_back(reader, i % 2 == 1, conninfos[client++ % conninfos.size()]);
  for (auto& t : threads) t.join();
  std::cout << "no fractured reads: " << out.transfers.load() << " transfers, " << out.reads.load()
            << " reads, " << out.wrong.load() << " wrong totals, " << out.errors.load()
            << " errors\n";
}

// The fractured-read load through `instances` pgshard instances of the same map (plus
// `extra_top`), and what must hold after it: every read a total that existed, no errors,
// nothing left prepared, no gate that gave up waiting (that would void the guarantee).
void no_fractured_reads(int instances, const std::string& extra_top) {
  constexpr int kAccounts = 12;
  make_accounts(kAccounts, 500);
  const long long total = total_balance();
  ProxyOptions o = accounts_map();
  o.pool_size = 16;
  o.extra_top += extra_top;
  std::vector<std::unique_ptr<Proxy>> proxies;
  std::vector<std::string> conninfos;
  for (int i = 0; i < instances; ++i) {
    proxies.push_back(std::make_unique<Proxy>(o));
    conninfos.push_back(proxies.back()->conninfo("options='-c statement_timeout=30000'"));
  }
  FracturedReads r;
  transfers_and_sums(conninfos, std::chrono::seconds(20), kAccounts, total, r);
  INFO(r.first_wrong);
  INFO(r.first_error);
  CHECK(r.transfers > 100);
  CHECK(r.reads > 100);
  CHECK(r.wrong == 0);
  CHECK(r.errors == 0);
  CHECK(total_balance() == total);
  CHECK(prepared_left() == 0);
  for (const auto& p : proxies)
    CHECK(read_file(p->log_path()).find("visibility gate") == std::string::npos);
}

TEST_CASE("no fractured reads: sums over shards never see half of a cross-shard transfer",
          "[visibility]") {
  // On one PostgreSQL every read returns the constant total: so must pgshard. Before the
  // visibility gate, about a quarter of the reads saw a total that never existed (one
  // shard's COMMIT PREPARED seen, the other's not).
  no_fractured_reads(1, "");
}

TEST_CASE("no fractured reads across two pgshard instances (atomic_visibility: cluster)",
          "[visibility]") {
  // Writers and readers spread over two instances in front of the same shards: each
  // instance's own gate cannot see the other's commits, so the gate is also a lock on the
  // coordinator (the first shard's server). With `atomic_visibility: true` the same load
  // reads totals that never existed (the instances' gates are independent).
  no_fractured_reads(2, "atomic_visibility: cluster\n");
  // The locks were taken on the coordinator, in its postgres database (not the
  // application's), one table per shard, and none is left.
  auto app = connect(Cluster::get().direct(0));
  CHECK(scalar(app.get(), "select count(*) from pg_namespace where nspname = 'pgshard_gate'") ==
        "0");
  auto pg = connect(Cluster::get().direct(0) + " dbname=postgres");
  CHECK(scalar(pg.get(), "select count(*) from pg_tables where schemaname = 'pgshard_gate'") ==
        std::to_string(Cluster::get().size()));
  CHECK(scalar(pg.get(),
               "select count(*) from pg_locks l join pg_class c on c.oid = l.relation "
               "join pg_namespace n on n.oid = c.relnamespace "
               "where n.nspname = 'pgshard_gate'") == "0");
}

TEST_CASE(
    "a coordinator that stops answering holds no read up for long (atomic_visibility: "
    "cluster)",
    "[visibility]") {
  // A frozen coordinator (no reset: a stopped host, a partition) is waited on for the gate's
  // bound and no longer: the read goes ahead without the cross-instance guarantee, with a
  // WARNING in the log. (Before: every multi-shard read waited as long as it was frozen.)
  make_accounts(6, 100);
  ProxyOptions o = accounts_map();
  o.extra_top += "atomic_visibility: cluster\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "600");
  auto d = connect(Cluster::get().direct(0));
  auto pids = query(d.get(),
                    "select pid from pg_stat_activity where datname = 'postgres' and "
                    "usename = 'app' and pid <> pg_backend_pid()");
  REQUIRE(!pids.empty());
  std::string list;
  for (const auto& row : pids) list += " " + row[0];
  REQUIRE(run("kill -STOP" + list) == 0);
  const auto began = std::chrono::steady_clock::now();
  const std::string sum = scalar(c.get(), "select sum(balance) from accounts");
  const auto took = std::chrono::steady_clock::now() - began;
  run("kill -CONT" + list);
  CHECK(sum == "600");
  CHECK(took < std::chrono::seconds(5));
  CHECK(wait_until(
      [&] {
        return read_file(proxy.log_path()).find("coordinator did not answer") != std::string::npos;
      },
      std::chrono::seconds(2)));
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "600");
}

TEST_CASE("REPEATABLE READ read shard by shard: a total that existed, or 40001", "[visibility]") {
  // Each shard takes a REPEATABLE READ transaction's snapshot at its first statement there:
  // read one account at a time, the shards' snapshots are taken at different moments, and
  // a transfer committed in between was seen on one side only (a total that never existed,
  // in a transaction that committed). pgshard now fails such a transaction with 40001
  // (txn::Snapshots), as PostgreSQL fails one it cannot serialize; retried, it succeeds.
  constexpr int kAccounts = 12, kWriters = 4;
  const auto duration = std::chrono::seconds(10);
  make_accounts(kAccounts, 500);
  const long long total = total_balance();
  std::vector<int> shard(kAccounts + 1);
  for (int id = 1; id <= kAccounts; ++id) shard[static_cast<std::size_t>(id)] = shard_of(id);
  ProxyOptions o = accounts_map();
  o.pool_size = 16;
  Proxy proxy(o);
  const auto until = std::chrono::steady_clock::now() + duration;
  std::atomic<int> transfers{0}, committed{0}, retried{0}, wrong{0}, errors{0};
  std::mutex mu;
  std::string first_wrong, first_error;
  auto note = [&](std::string& slot, const std::string& what) {
    std::lock_guard lock(mu);
    if (slot.empty()) slot = what;
  };
  auto writer = [&](int seed) {
    std::mt19937 rng(static_cast<unsigned>(seed));
    auto c = connect(proxy.conninfo());
    while (std::chrono::steady_clock::now() < until) {
      int a = static_cast<int>(rng() % kAccounts) + 1, b;
      do b = static_cast<int>(rng() % kAccounts) + 1;
      while (shard[static_cast<std::size_t>(b)] == shard[static_cast<std::size_t>(a)]);
      if (a > b) std::swap(a, b);
      if (transfer(c.get(), a, b, static_cast<int>(rng() % 7) + 1).empty())
        ++transfers;
      else
        query(c.get(), "rollback");
    }
  };
  // `how`: BEGIN ISOLATION LEVEL REPEATABLE READ, or SERIALIZABLE as the session's default.
  auto reader = [&](bool session_default) {
    auto c = connect(proxy.conninfo());
    if (session_default)
      query(c.get(), "set session characteristics as transaction isolation level serializable");
    while (std::chrono::steady_clock::now() < until) {
      query(c.get(), session_default ? "begin" : "begin isolation level repeatable read");
      long long sum = 0;
      std::string code;
      for (int id = 1; id <= kAccounts && code.empty(); ++id) {
        PGresult* r = PQexec(
            c.get(), ("select balance from accounts where id = " + std::to_string(id)).c_str());
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
          sum += std::stoll(PQgetvalue(r, 0, 0));
        else if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE))
          code = s;
        else
          code = "none";
        PQclear(r);
      }
      PGresult* r = PQexec(c.get(), code.empty() ? "commit" : "rollback");
      if (code.empty()) {
        if (PQresultStatus(r) != PGRES_COMMAND_OK) {
          const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
          code = s ? s : "commit";
        }
      }
      PQclear(r);
      if (code == "40001") {
        ++retried;
      } else if (!code.empty()) {
        ++errors;
        note(first_error, "reader: " + code);
      } else {
        ++committed;
        if (sum != total) {
          ++wrong;
          note(first_wrong, "a committed transaction read " + std::to_string(sum) + " instead of " +
                                std::to_string(total));
        }
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < kWriters; ++i) threads.emplace_back(writer, 9300 + i);
  threads.emplace_back(reader, false);
  threads.emplace_back(reader, false);
  threads.emplace_back(reader, true);
  for (auto& t : threads) t.join();
  std::cout << "shard-by-shard REPEATABLE READ: " << transfers.load() << " transfers, "
            << committed.load() << " committed reads, " << retried.load() << " 40001, "
            << wrong.load() << " wrong totals, " << errors.load() << " errors\n";
  INFO(first_wrong);
  INFO(first_error);
  CHECK(transfers > 100);
  CHECK(committed > 20);
  CHECK(wrong == 0);
  CHECK(errors == 0);
  CHECK(total_balance() == total);
  CHECK(prepared_left() == 0);
}

TEST_CASE(
    "REPEATABLE READ: a commit between two shards' snapshots gives 40001, whatever came first",
    "[visibility]") {
  // Found from outside: a first statement that takes no snapshot (SET TRANSACTION, SHOW,
  // SET LOCAL) was taken for the shard's snapshot, so a transfer committed before the
  // shard's first real read went unseen: COMMIT succeeded after reading a total that never
  // existed.
  make_accounts(12, 100);
  int a = 1, b = 2;
  while (shard_of(b) == shard_of(a)) ++b;
  Proxy proxy(accounts_map());
  auto r = connect(proxy.conninfo());
  auto w = connect(proxy.conninfo());
  auto transfer = [&] {
    query(w.get(), "begin");
    query(w.get(), "update accounts set balance = balance - 10 where id = " + std::to_string(a));
    query(w.get(), "update accounts set balance = balance + 10 where id = " + std::to_string(b));
    query(w.get(), "commit");
  };
  const std::vector<std::vector<std::string>> openings = {
      {"begin isolation level repeatable read"},
      {"begin", "set transaction isolation level repeatable read"},
      {"begin isolation level serializable", "show transaction_isolation"},
      {"begin isolation level repeatable read", "set local statement_timeout = 5000"},
  };
  for (const auto& opening : openings) {
    for (bool concurrent : {false, true}) {
      INFO(opening.back() << (concurrent ? ", transfer in between" : ", nothing in between"));
      for (const auto& sql : opening) query(r.get(), sql);
      const long long first = std::stoll(
          scalar(r.get(), "select balance from accounts where id = " + std::to_string(a)));
      if (concurrent) transfer();
      std::string code;
      PGresult* res =
          PQexec(r.get(), ("select balance from accounts where id = " + std::to_string(b)).c_str());
      long long second = 0;
      if (PQresultStatus(res) == PGRES_TUPLES_OK) second = std::stoll(PQgetvalue(res, 0, 0));
      if (const char* c = PQresultErrorField(res, PG_DIAG_SQLSTATE)) code = c;
      PQclear(res);
      res = PQexec(r.get(), code.empty() ? "commit" : "rollback");
      if (code.empty() && PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char* c = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        code = c ? c : "?";
      }
      PQclear(res);
      if (concurrent) {
        CHECK(code == "40001");
      } else {
        CHECK(code.empty());
        CHECK(first + second == 200);  // both still at 100
      }
      // Retried, it succeeds and reads a total that existed.
      for (const auto& sql : opening) query(r.get(), sql);
      CHECK(scalar(r.get(), "select sum(balance) from accounts") == "1200");
      query(r.get(), "commit");
      query(w.get(), "update accounts set balance = 100 where id in (" + std::to_string(a) + ", " +
                         std::to_string(b) + ")");
    }
  }
}

TEST_CASE("SET TRANSACTION and SET SESSION CHARACTERISTICS reach shards that join later", "[txn]") {
  // Found from outside: shards that joined a transaction after SET TRANSACTION ISOLATION
  // LEVEL REPEATABLE READ ran READ COMMITTED (a second read saw another total), and one after
  // SET TRANSACTION READ ONLY took an UPDATE that one PostgreSQL refuses (25006).
  make_accounts(9, 100);
  Proxy proxy(accounts_map());
  auto c = connect(proxy.conninfo());
  auto isolation_everywhere = [&] {
    std::vector<std::string> levels;
    for (int s = 0; s < Cluster::get().size(); ++s)
      levels.push_back(scalar(
          c.get(), "/* pgshard: shard=s" + std::to_string(s) + " */ show transaction_isolation"));
    return levels;
  };
  const std::vector<std::string> rr(3, "repeatable read"), ser(3, "serializable"),
      rc(3, "read committed");
  query(c.get(), "BEGIN;");  // as psql sends it, with its semicolon
  query(c.get(), "set transaction isolation level repeatable read");
  CHECK(scalar(c.get(), "select sum(balance) from accounts") == "900");
  CHECK(isolation_everywhere() == rr);
  query(c.get(), "commit");
  query(c.get(), "begin");
  query(c.get(), "set transaction read only");
  scalar(c.get(), "select balance from accounts where id = 1");
  int other = 2;
  while (shard_of(other) == shard_of(1)) ++other;
  CHECK(error_code(c.get(), "update accounts set balance = balance + 1 where id = " +
                                std::to_string(other)) == "25006");
  query(c.get(), "rollback");
  CHECK(total_balance() == 900);
  // The next transaction is the session's again.
  query(c.get(), "begin");
  scalar(c.get(), "select sum(balance) from accounts");
  CHECK(isolation_everywhere() == rc);
  query(c.get(), "commit");
  // What pgJDBC's setTransactionIsolation sends: the session's default on every server.
  query(c.get(), "set session characteristics as transaction isolation level serializable");
  query(c.get(), "begin");
  scalar(c.get(), "select sum(balance) from accounts");
  CHECK(isolation_everywhere() == ser);
  query(c.get(), "commit");
}
