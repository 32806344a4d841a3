// A deadlock victim across shards lets go of its servers at once: the cycle through a pool
// wait is broken for the transaction waiting on the pool, and the victim's client gets
// 40P01, then 25P02 without a server (simple Query, extended, pipeline) until it ends the
// transaction, and works normally after.
#include <signal.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "accounts.hpp"
#include "harness.hpp"

using namespace harness;
using namespace accounts;

namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

// s0 has one server for the whole process; the cycle's other shard, s1, has more.
ProxyOptions one_server_on_s0() {
  ProxyOptions o = one_worker(4);
  o.sharded_tables = accounts_map().sharded_tables;
  o.pool_sizes = {1};
  o.extra_top = "timeouts: { pool_wait: 10s }\n";
  return o;
}

// The SQLSTATE of `sql` sent with the extended protocol (Parse/Bind/Describe/Execute/Sync),
// "timeout" when no answer came within 3 s.
std::string extended_code(PGconn* c, const std::string& sql) {
  if (PQsendQueryParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) != 1)
    return "not sent";
  return await_result(c, std::chrono::seconds(3));
}

// A pipeline of `sqls` up to one Sync: each statement's result status and SQLSTATE
// ("FATAL_ERROR 25P02", "PIPELINE_ABORTED"), then the Sync's ("PIPELINE_SYNC").
std::vector<std::string> pipeline(PGconn* c, const std::vector<std::string>& sqls) {
  std::vector<std::string> got;
  if (PQenterPipelineMode(c) != 1) return {"no pipeline mode"};
  for (const auto& sql : sqls)
    PQsendQueryParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0);
  PQpipelineSync(c);
  const auto until = steady_clock::now() + std::chrono::seconds(3);
  while (got.size() < sqls.size() + 1 && steady_clock::now() < until) {
    PQconsumeInput(c);
    if (PQisBusy(c)) {
      std::this_thread::sleep_for(milliseconds(5));
      continue;
    }
    PGresult* r = PQgetResult(c);
    if (!r) continue;  // (the end of one statement's results)
    std::string status = PQresStatus(PQresultStatus(r));
    if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) status += std::string(" ") + s;
    got.push_back(status.substr(status.find('_') + 1));  // "PGRES_FATAL_ERROR" -> "FATAL_ERROR"
    PQclear(r);
  }
  PQexitPipelineMode(c);
  return got;
}

std::string tag_of(PGconn* c, const std::string& sql, bool extended) {
  PGresult* r = extended ? PQexecParams(c, sql.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0)
                         : PQexec(c, sql.c_str());
  std::string tag =
      PQresultStatus(r) == PGRES_COMMAND_OK ? PQcmdStatus(r) : PQresultErrorMessage(r);
  PQclear(r);
  return tag;
}

// How long B waited for what A held: from the moment the cycle closed, and from A's 40P01
// (the victim's servers back to the pool at once: B's wait ends with it). Detection alone
// may take a while on a loaded machine (a shard the detector cannot reach in time is asked
// again after 5 s), so the fix is measured from the 40P01.
struct Waited {
  milliseconds total{0}, after_victim{0};
};

// A's 40P01, then B's wait to its end (which must succeed).
Waited victim_then_b(PGconn* ta, PGconn* tb, steady_clock::time_point formed) {
  CHECK(await_result(ta, std::chrono::seconds(10)) == "40P01");
  const auto told = steady_clock::now();
  CHECK_THAT(PQerrorMessage(ta), Catch::Contains("deadlock detected"));
  CHECK(PQtransactionStatus(ta) == PQTRANS_INERROR);
  const std::string b_got = await_result(tb, std::chrono::seconds(10));
  const auto now = steady_clock::now();
  Waited w{std::chrono::duration_cast<milliseconds>(now - formed),
           std::chrono::duration_cast<milliseconds>(now - told)};
  std::cout << "deadlock victim's servers back: B waited " << w.total.count() << " ms, "
            << w.after_victim.count() << " ms after A's 40P01 (" << (b_got.empty() ? "ok" : b_got)
            << ")\n";
  CHECK(b_got.empty());
  return w;
}

// The cycle: B (older) locks `b` on s1; A (younger) takes s0's only server for `a`, then
// waits for B's lock on `b`; B asks for s0 and waits for A's server. A is the victim: its
// client gets 40P01, and B must get s0's server at once, while A's client says nothing more.
Waited break_cycle(PGconn* ta, PGconn* tb, int a, int b, bool extended) {
  const auto formed = lock_cycle(ta, tb, a, b, [] { wait_for_lock_wait(1); }, {extended, true});
  return victim_then_b(ta, tb, formed);
}

// B got what A held at once (before: at pool_wait, 10 s, or when A's client ended).
void check_at_once(const Waited& w) {
  CHECK(w.after_victim < milliseconds(1000));
  CHECK(w.total < milliseconds(8000));
}

}  // namespace

TEST_CASE(
    "a deadlock victim's servers go back to the pool at once; it answers 25P02 until ROLLBACK",
    "[deadlock]") {
  // Before, the victim's servers were rolled back but stayed lent to it until its client
  // sent ROLLBACK: B, waiting for s0's pool, waited its whole pool_wait (10 s, then 08001)
  // though the cycle was found and "broken".
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  Proxy proxy(one_server_on_s0());
  auto ta = connect(proxy.conninfo()), tb = connect(proxy.conninfo());
  auto balance = [&](PGconn* c, int id) {
    return scalar(c, "select balance from accounts where id = " + std::to_string(id));
  };

  // Simple Query: every statement of A's failed transaction gets 25P02 at once (no server
  // to wait for), savepoints too; COMMIT answers ROLLBACK, as PostgreSQL does.
  check_at_once(break_cycle(ta.get(), tb.get(), a, b, false));
  for (const std::string& sql :
       std::vector<std::string>{"select 1", add_to(a), "savepoint s", "rollback to savepoint s"}) {
    INFO(sql);
    REQUIRE(PQsendQuery(ta.get(), sql.c_str()) == 1);
    CHECK(await_result(ta.get(), std::chrono::seconds(3)) == "25P02");
    CHECK(PQtransactionStatus(ta.get()) == PQTRANS_INERROR);
  }
  CHECK(tag_of(ta.get(), "commit", false) == "ROLLBACK");
  CHECK(PQtransactionStatus(ta.get()) == PQTRANS_IDLE);
  query(tb.get(), "commit");
  // A works again (its update rolled back everywhere); B's two rows committed.
  CHECK(balance(ta.get(), a) == "101");
  CHECK(balance(ta.get(), b) == "101");

  // Extended protocol and a pipeline: 25P02, ReadyForQuery 'E' at the Sync; ROLLBACK
  // answers ROLLBACK and the session is idle.
  check_at_once(break_cycle(ta.get(), tb.get(), a, b, true));
  CHECK(extended_code(ta.get(), "select 1") == "25P02");
  CHECK(PQtransactionStatus(ta.get()) == PQTRANS_INERROR);
  CHECK(extended_code(ta.get(), add_to(b)) == "25P02");
  const std::vector<std::string> piped = pipeline(ta.get(), {"select 1", add_to(a)});
  CHECK(piped ==
        std::vector<std::string>{"FATAL_ERROR 25P02", "PIPELINE_ABORTED", "PIPELINE_SYNC"});
  CHECK(PQtransactionStatus(ta.get()) == PQTRANS_INERROR);
  CHECK(tag_of(ta.get(), "rollback", true) == "ROLLBACK");
  CHECK(PQtransactionStatus(ta.get()) == PQTRANS_IDLE);
  query(tb.get(), "commit");
  CHECK(extended_code(ta.get(), "select balance from accounts where id = " + std::to_string(a)) ==
        "");
  CHECK(balance(ta.get(), a) == "102");
  CHECK(balance(ta.get(), b) == "102");

  // A's next transaction across both shards runs and commits as any other.
  query(ta.get(), "begin");
  query(ta.get(), add_to(a));
  query(ta.get(), add_to(b));
  query(ta.get(), "commit");
  CHECK(balance(tb.get(), a) == "103");
  CHECK(total_balance() == 1206);
  CHECK(prepared_left() == 0);
}

TEST_CASE("a deadlock victim cancelled in a statement on several shards rolls back all its shards",
          "[deadlock]") {
  // A's UPDATE of two rows runs on s0 and s1 at once: it locks c on s0 and waits on s1 for
  // B's lock on b; B then waits on s0 for A's lock on c. A, the younger, gets 40P01. Before,
  // its part on s0 (and c's lock) stayed until its client sent ROLLBACK: B waited as long.
  make_accounts(12, 100);
  const int b = account_on(1), c = account_on(0);
  Proxy proxy(accounts_map());
  auto ta = connect(proxy.conninfo()), tb = connect(proxy.conninfo());
  query(tb.get(), "begin");
  query(tb.get(), add_to(b));
  query(ta.get(), "begin");
  query(ta.get(), add_to(c));
  const std::string both = "update accounts set balance = balance + 1 where id in (" +
                           std::to_string(b) + ", " + std::to_string(c) + ")";
  REQUIRE(PQsendQuery(ta.get(), both.c_str()) == 1);
  wait_for_lock_wait(1);
  const auto formed = steady_clock::now();
  REQUIRE(PQsendQuery(tb.get(), add_to(c).c_str()) == 1);
  check_at_once(victim_then_b(ta.get(), tb.get(), formed));
  CHECK(error_code(ta.get(), "select 1") == "25P02");
  CHECK(tag_of(ta.get(), "commit", false) == "ROLLBACK");
  query(tb.get(), "commit");
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(c)) == "101");
  CHECK(scalar(ta.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(total_balance() == 1202);
  CHECK(prepared_left() == 0);
}

TEST_CASE(
    "a deadlock victim in session pooling keeps its servers, rolled back, for its next "
    "statements",
    "[deadlock]") {
  // In session pooling the victim's servers are its own: rolled back, they stay with it
  // (kept idle, not handed to others), and its session goes on on them after ROLLBACK.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  ProxyOptions o = accounts_map();
  o.pool_mode = "session";
  Proxy proxy(o);
  auto t1 = connect(proxy.conninfo()), t2 = connect(proxy.conninfo());
  const auto formed = lock_cycle(t1.get(), t2.get(), a, b, [] { wait_for_lock_wait(1); });
  // T2, the younger, is the victim; T1 goes on at once.
  check_at_once(victim_then_b(t2.get(), t1.get(), formed));
  CHECK(error_code(t2.get(), "select 1") == "25P02");
  CHECK(tag_of(t2.get(), "rollback", false) == "ROLLBACK");
  CHECK(PQtransactionStatus(t2.get()) == PQTRANS_IDLE);
  query(t1.get(), "commit");
  CHECK(scalar(t2.get(), "select balance from accounts where id = " + std::to_string(a)) == "101");
  CHECK(scalar(t2.get(), "select balance from accounts where id = " + std::to_string(b)) == "101");
  CHECK(total_balance() == 1202);
  CHECK(prepared_left() == 0);
}

namespace {

// Shard i's postmaster stopped (SIGSTOP), its backends running: a CancelRequest sent to it
// is accepted by the kernel and delivered only once it goes on (SIGCONT when destroyed).
class PostmasterStopped {
 public:
  explicit PostmasterStopped(int i) : pid_(Cluster::get().postmaster_pid(i)) {
    REQUIRE(::kill(pid_, SIGSTOP) == 0);
  }
  ~PostmasterStopped() { go_on(); }
  PostmasterStopped(const PostmasterStopped&) = delete;
  PostmasterStopped& operator=(const PostmasterStopped&) = delete;
  void go_on() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
    pid_ = 0;
  }

 private:
  int pid_;
};

int victims_logged(const Proxy& proxy) {
  const std::string log = read_file(proxy.log_path());
  int n = 0;
  for (auto at = log.find("cancelling the transaction"); at != std::string::npos;
       at = log.find("cancelling the transaction", at + 1))
    ++n;
  return n;
}

}  // namespace

TEST_CASE("a deadlock victim's cancel that lands late never cancels the next client's statement",
          "[deadlock]") {
  // T2, the victim, waits on s0, whose postmaster is stopped: its cancel cannot be
  // delivered yet. The cycle then ends otherwise (T1's wait on s1 is cancelled, T1 rolls
  // back) and T2's UPDATE completes. Before, T2's s0 server was rolled back and handed on at
  // once, and the cancel, delivered later, cancelled the statement of whoever had it next
  // (57014 for a client that asked nothing). Now the server is handed on once the cancel has
  // been delivered, onto a server idle in its transaction, where it does nothing.
  make_accounts(12, 100);
  const int a = account_on(0), b = account_on(1);
  ProxyOptions o = accounts_map();
  o.pool_sizes = {2};
  o.extra_top = "timeouts: { pool_wait: 10s }\n";
  Proxy proxy(o);
  auto t1 = connect(proxy.conninfo()), t2 = connect(proxy.conninfo());
  auto c1 = connect(proxy.conninfo()), c2 = connect(proxy.conninfo());
  for (PGconn* c : {c1.get(), c2.get()}) query(c, "set pgshard.shard = 's0'");
  // A first cycle, broken as usual: the detector's connections to the shards are open now.
  lock_cycle(t1.get(), t2.get(), a, b, [] { wait_for_lock_wait(1); });
  REQUIRE(await_result(t2.get(), std::chrono::seconds(10)) == "40P01");
  REQUIRE(await_result(t1.get(), std::chrono::seconds(5)).empty());
  query(t2.get(), "rollback");
  query(t1.get(), "commit");

  auto s1 = connect(Cluster::get().direct(1));
  lock_cycle(t1.get(), t2.get(), a, b, [] { wait_for_lock_wait(1); });
  wait_for_lock_wait(0);
  PostmasterStopped stopped(0);
  REQUIRE(wait_until([&] { return victims_logged(proxy) == 2; }, std::chrono::seconds(10)));
  query(s1.get(),
        "select pg_cancel_backend(pid) from pg_stat_activity where state = 'active' and "
        "wait_event_type = 'Lock'");
  CHECK(await_result(t1.get(), std::chrono::seconds(5)) == "57014");
  query(t1.get(), "rollback");
  // T2's UPDATE got its lock; its servers roll back. Two statements take s0's two servers.
  CHECK(await_result(t2.get(), std::chrono::seconds(5)) != "timeout");
  for (PGconn* c : {c1.get(), c2.get()}) REQUIRE(PQsendQuery(c, "select pg_sleep(1)") == 1);
  std::this_thread::sleep_for(milliseconds(300));
  stopped.go_on();  // the cancel is delivered now
  CHECK(await_result(c1.get(), std::chrono::seconds(8)) == std::string());
  CHECK(await_result(c2.get(), std::chrono::seconds(8)) == std::string());
  // Nothing of the victim's committed.
  PGresult* r = PQexec(t2.get(), "commit");
  CHECK(std::string(PQcmdStatus(r)) == "ROLLBACK");
  PQclear(r);
  CHECK(total_balance() == 1202);
  CHECK(prepared_left() == 0);
}
