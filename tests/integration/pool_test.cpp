// Server connection pools across workers: pool_size bounds a shard's connections for the
// whole process, and an idle server on one worker serves a client waiting on another.
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace harness;
using namespace std::chrono_literals;

namespace {

// A connection straight to shard 0 that pool_connections does not count.
Conn probe() {
  return connect(Cluster::get().direct(0) + " application_name=pool-probe");
}

// The pool's connections to shard 0 now, counted on the shard itself (pgshard's own control
// connections name themselves pgshard-..., the test's own pool-probe).
int pool_connections(PGconn* probe) {
  return std::stoi(scalar(probe,
                          "select count(*) from pg_stat_activity where usename = 'app' and "
                          "backend_type = 'client backend' and application_name <> 'pool-probe' "
                          "and application_name not like 'pgshard-%'"));
}

// A probe once shard 0 has no pool connection left (an earlier case's pgshard's).
Conn quiet_probe() {
  auto p = probe();
  REQUIRE(wait_until([&] { return pool_connections(p.get()) == 0; }, 10s));
  return p;
}

// `workers` workers sharing pools of `pool_size` servers per shard.
ProxyOptions sharing(int workers, int pool_size, const std::string& pool_wait) {
  ProxyOptions o;
  o.workers = workers;
  o.pool_size = pool_size;
  o.extra_top = "timeouts: { pool_wait: " + pool_wait + " }\n";
  return o;
}

Conn client_on_s0(const Proxy& proxy) {
  auto c = connect(proxy.conninfo("application_name=pool-test"));
  query(c.get(), "SET pgshard.shard = 's0'");
  return c;
}

}  // namespace

TEST_CASE("pool_size bounds a shard's server connections across all workers", "[pool]") {
  Proxy proxy(sharing(8, 3, "30s"));
  auto direct = quiet_probe();

  // 24 clients, three on each worker, hold a server a moment in every transaction.
  constexpr int kClients = 24, kTransactions = 4;
  std::atomic<int> done{0}, failed{0}, running{kClients};
  std::atomic<int> most{0};
  std::thread watcher([&] {
    auto watch = probe();
    while (running.load() > 0) {
      const int n = pool_connections(watch.get());
      if (n > most.load()) most = n;
    }
  });
  std::vector<std::thread> clients;
  for (int i = 0; i < kClients; ++i)
    clients.emplace_back([&] {
      auto c = client_on_s0(proxy);
      for (int t = 0; t < kTransactions; ++t) {
        PGresult* r = PQexec(c.get(), "BEGIN; SELECT pg_sleep(0.05); COMMIT");
        if (PQresultStatus(r) == PGRES_COMMAND_OK) {
          ++done;
        } else {
          ++failed;
          std::cerr << "transaction failed: " << PQerrorMessage(c.get());
        }
        PQclear(r);
      }
      --running;
    });
  for (auto& t : clients) t.join();
  watcher.join();
  std::cout << "pool_size 3, 8 workers: at most " << most.load()
            << " server connections to s0 at once\n";
  CHECK(failed.load() == 0);
  CHECK(done.load() == kClients * kTransactions);
  CHECK(most.load() >= 1);
  CHECK(most.load() <= 3);
  CHECK(pool_connections(direct.get()) <= 3);
}

TEST_CASE("a client waiting on one worker gets an idle server of another worker", "[pool]") {
  Proxy proxy(sharing(4, 2, "10s"));
  auto direct = quiet_probe();

  // Five clients accepted in a row: round robin puts the first and the fifth on one worker
  // (A), the others on the three other workers.
  std::vector<Conn> c;
  for (int i = 0; i < 5; ++i) c.push_back(client_on_s0(proxy));
  // A opens both servers (each client holds one in a transaction), then leaves them idle.
  query(c[0].get(), "BEGIN");
  query(c[0].get(), "SELECT 1");
  query(c[4].get(), "BEGIN");
  query(c[4].get(), "SELECT 1");
  CHECK(pool_connections(direct.get()) == 2);
  query(c[0].get(), "COMMIT");
  query(c[4].get(), "COMMIT");

  // Clients of the other workers, which have no server: each gets one of A's idle ones
  // at once (not after pool_wait), and no third connection opens.
  for (int i = 1; i <= 3; ++i) {
    const auto started = std::chrono::steady_clock::now();
    CHECK(scalar(c[static_cast<std::size_t>(i)].get(), "SELECT 40 + " + std::to_string(i)) ==
          std::to_string(40 + i));
    const auto took = std::chrono::steady_clock::now() - started;
    const int now = pool_connections(direct.get());
    std::cout << "client " << i << " (another worker): served in "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms, "
              << now << " server connections to s0\n";
    CHECK(took < 2s);
    CHECK(now == 2);
  }
  // Two of them in transactions hold both servers; a third client waits and is served as
  // soon as one commits, whichever worker it was on.
  query(c[1].get(), "BEGIN");
  query(c[1].get(), "SELECT 1");
  query(c[2].get(), "BEGIN");
  query(c[2].get(), "SELECT 1");
  REQUIRE(PQsendQuery(c[3].get(), "SELECT 3") == 1);
  query(c[1].get(), "COMMIT");
  CHECK(wait_until(
      [&] {
        PQconsumeInput(c[3].get());
        return PQisBusy(c[3].get()) == 0;
      },
      2s));
  PGresult* r = PQgetResult(c[3].get());
  CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
  PQclear(r);
  while ((r = PQgetResult(c[3].get())) != nullptr) PQclear(r);
  query(c[2].get(), "COMMIT");
  CHECK(pool_connections(direct.get()) == 2);
}

TEST_CASE("a client that leaves mid-statement leaves no statement running on the shard", "[pool]") {
  // Before: the server was closed without a cancel, PostgreSQL went on with the statement
  // (it notices a gone client only when it writes), and the pool opened new servers beside
  // it: each round of abandoned statements put pool_size more backends on the shard.
  Proxy proxy(sharing(2, 2, "5s"));
  auto direct = quiet_probe();
  auto sleeping = [&] {
    return std::stoi(scalar(direct.get(),
                            "select count(*) from pg_stat_activity where usename = 'app' and "
                            "query = 'select pg_sleep(60)'"));
  };
  for (int round = 0; round < 3; ++round) {
    std::vector<Conn> leaving;
    for (int i = 0; i < 2; ++i) {
      auto c = client_on_s0(proxy);
      REQUIRE(PQsendQuery(c.get(), "select pg_sleep(60)"));
      leaving.push_back(std::move(c));
    }
    REQUIRE(wait_until([&] { return sleeping() == 2; }, 10s));
    // The clients vanish without a Terminate (a killed process, a dropped network).
    for (auto& c : leaving) ::shutdown(PQsocket(c.get()), SHUT_RDWR);
    leaving.clear();
    CHECK(wait_until([&] { return sleeping() == 0; }, 5s));
  }
  CHECK(wait_until([&] { return pool_connections(direct.get()) <= 2; }, 5s));
}

namespace {

// One worker and one server per shard, a console user: a client in a transaction holds
// s0's only server, and the next client's statement waits for it.
ProxyOptions one_server(const std::string& pool_wait) {
  auto o = sharing(1, 1, pool_wait);
  o.users =
      "  - { name: app, password: secret, pool_mode: transaction }\n"
      "  - { name: admin, password: adminpw }\n";
  o.extra_top += "admin: { users: [admin] }\n";
  return o;
}

Conn console(const Proxy& proxy) {
  return connect(proxy.conninfo("dbname=pgshard", "admin", "adminpw"));
}

Conn named_client_on_s0(const Proxy& proxy, const std::string& name) {
  auto c = connect(proxy.conninfo("application_name=" + name));
  query(c.get(), "SET pgshard.shard = 's0'");
  return c;
}

int s0_waiting(PGconn* adm) {
  int n = 0;
  for (auto& row : show(adm, "SHOW POOLS"))
    if (row["database"] == "s0") n += std::stoi(row["cl_waiting"]);
  return n;
}

std::map<std::string, std::string> client_named(PGconn* adm, const std::string& name) {
  for (auto& row : show(adm, "SHOW CLIENTS"))
    if (row["application_name"] == name) return row;
  return {};
}

// `holder` takes s0's only server in a transaction; `waiter` sends `sql`, which waits.
void wait_behind(PGconn* adm, PGconn* holder, PGconn* waiter, const std::string& sql) {
  query(holder, "BEGIN");
  query(holder, "SELECT 1");
  REQUIRE(PQsendQuery(waiter, sql.c_str()) == 1);
  REQUIRE(wait_until([&] { return s0_waiting(adm) == 1; }, 5s));
}

// The SQLSTATE the statement `c` sent ends with ("" when it succeeded), if it ends within
// `limit` ("still waiting" otherwise).
std::string outcome(PGconn* c, std::chrono::milliseconds limit) {
  if (!wait_until(
          [&] {
            PQconsumeInput(c);
            return PQisBusy(c) == 0;
          },
          limit))
    return "still waiting";
  std::string code;
  while (PGresult* r = PQgetResult(c)) {
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
      // (The first: libpq adds its own error, without one, when the connection ends.)
      const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
      if (code.empty()) code = s ? s : "no SQLSTATE";
      std::cout << "outcome: " << PQresultErrorMessage(r);
    }
    PQclear(r);
  }
  return code;
}

// In a transaction block, `sql` waits for `holder`'s server and is cancelled: 57014, and the
// transaction fails (25P02) until ROLLBACK, as PostgreSQL's cancel does.
void cancel_fails_transaction(PGconn* adm, PGconn* holder, PGconn* waiter, const std::string& sql) {
  query(waiter, "BEGIN");
  wait_behind(adm, holder, waiter, sql);
  REQUIRE(send_cancel(waiter));
  CHECK(outcome(waiter, 2s) == "57014");
  CHECK(PQtransactionStatus(waiter) == PQTRANS_INERROR);
  query(holder, "COMMIT");
  CHECK(error_code(waiter, "select 1") == "25P02");
  query(waiter, "ROLLBACK");
}

}  // namespace

TEST_CASE("a CancelRequest ends a client's wait for a pooled server with 57014 at once", "[pool]") {
  // Before: the cancel found no server running the statement and was dropped; the
  // statement ran once a server came free (or the client got the pool timeout).
  Proxy proxy(one_server("10s"));
  auto direct = probe();
  query(direct.get(), "drop table if exists pool_cancelled");
  query(direct.get(), "create table pool_cancelled (n int)");
  auto adm = console(proxy);
  auto holder = named_client_on_s0(proxy, "holder");
  auto waiter = named_client_on_s0(proxy, "waiter");

  wait_behind(adm.get(), holder.get(), waiter.get(), "insert into pool_cancelled values (1)");
  REQUIRE(send_cancel(waiter.get()));
  CHECK(outcome(waiter.get(), 2s) == "57014");
  CHECK(s0_waiting(adm.get()) == 0);
  query(holder.get(), "COMMIT");
  // The session goes on, and the cancelled statement never ran.
  CHECK(scalar(waiter.get(), "select count(*) from pool_cancelled") == "0");

  // In a transaction block the cancel fails the transaction, as PostgreSQL's does.
  cancel_fails_transaction(adm.get(), holder.get(), waiter.get(),
                           "insert into pool_cancelled values (2)");
  CHECK(scalar(waiter.get(), "select count(*) from pool_cancelled") == "0");
}

TEST_CASE("SHOW CLIENTS and SHOW POOLS show a client waiting for a server as waiting", "[pool]") {
  // Before: SHOW CLIENTS said idle (no server attached), and a client held by PAUSE was in
  // no pool's cl_waiting.
  Proxy proxy(one_server("10s"));
  auto adm = console(proxy);
  auto holder = named_client_on_s0(proxy, "holder");
  auto waiter = named_client_on_s0(proxy, "waiter");

  wait_behind(adm.get(), holder.get(), waiter.get(), "select 7");
  auto row = client_named(adm.get(), "waiter");
  CHECK(row["state"] == "waiting");
  CHECK(row["waiting_on"] == "a pooled server (attach)");
  CHECK(client_named(adm.get(), "holder")["state"] == "active");
  query(holder.get(), "COMMIT");
  CHECK(outcome(waiter.get(), 2s).empty());
  CHECK(client_named(adm.get(), "waiter")["state"] == "idle");
  CHECK(s0_waiting(adm.get()) == 0);

  // Held by PAUSE: waiting too, and its wait (wait, wait_us) grows.
  query(adm.get(), "PAUSE s0");
  REQUIRE(PQsendQuery(waiter.get(), "select 8") == 1);
  CHECK(wait_until([&] { return s0_waiting(adm.get()) == 1; }, 5s));
  CHECK(wait_until(
      [&] {
        row = client_named(adm.get(), "waiter");
        return row["state"] == "waiting" &&
               std::stoll(row["wait_us"]) + std::stoll(row["wait"]) * 1000000 >= 100000;
      },
      5s));
  // A CancelRequest ends a paused wait too.
  REQUIRE(send_cancel(waiter.get()));
  CHECK(outcome(waiter.get(), 2s) == "57014");
  CHECK(s0_waiting(adm.get()) == 0);
  query(adm.get(), "RESUME s0");
  CHECK(scalar(waiter.get(), "select 9") == "9");
}

namespace {

// one_server() with pool_spread, a table on every shard (one row of v = 0 on each).
ProxyOptions one_server_spread() {
  auto o = one_server("10s");
  o.sharded_tables = "  - { table: pool_spread, column: id, type: bigint }\n";
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    query(d.get(), "drop table if exists pool_spread");
    query(d.get(), "create table pool_spread (id bigint primary key, v int)");
    query(d.get(), "insert into pool_spread values (" + std::to_string(i) + ", 0)");
  }
  return o;
}

// What the statements on pool_spread changed, read on the shards themselves: the sum of v
// and its indexes, over every shard.
std::string spread_changes() {
  long sum = 0, indexes = 0;
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    sum += std::stol(scalar(d.get(), "select sum(v) from pool_spread"));
    indexes += std::stol(
        scalar(d.get(), "select count(*) from pg_indexes where tablename = 'pool_spread'"));
  }
  return "sum " + std::to_string(sum) + ", indexes " + std::to_string(indexes);
}

}  // namespace

TEST_CASE("a CancelRequest ends a multi-shard statement's wait for a server: nothing runs",
          "[pool]") {
  // Before: only a keyed statement's wait (attach) heard the cancel. A statement on every
  // shard waited on, and ran once the holder let go: a cancelled UPDATE committed.
  Proxy proxy(one_server_spread());
  auto adm = console(proxy);
  auto holder = named_client_on_s0(proxy, "holder");
  auto waiter = connect(proxy.conninfo("application_name=waiter"));
  const std::string before = spread_changes();  // (the primary key's index on each shard)

  for (const std::string sql :
       {"update pool_spread set v = v + 1", "select count(*) from pool_spread",
        "copy pool_spread from stdin", "create index pool_spread_v on pool_spread (v)"}) {
    INFO(sql);
    wait_behind(adm.get(), holder.get(), waiter.get(), sql);
    REQUIRE(send_cancel(waiter.get()));
    // (REQUIRE: a COPY that went on would leave the connection in COPY state.)
    REQUIRE(outcome(waiter.get(), 2s) == "57014");
    CHECK(s0_waiting(adm.get()) == 0);
    query(holder.get(), "COMMIT");
    // The statement never runs, and the session goes on.
    CHECK(scalar(waiter.get(), "select 5") == "5");
    CHECK(spread_changes() == before);
  }

  // In a transaction block the cancel fails the transaction, as PostgreSQL's does.
  cancel_fails_transaction(adm.get(), holder.get(), waiter.get(),
                           "update pool_spread set v = v + 1");
  CHECK(spread_changes() == before);

  // pg_terminate_backend ends it with FATAL 57P01, as a keyed statement's wait.
  auto other = connect(proxy.conninfo("application_name=other"));
  wait_behind(adm.get(), holder.get(), waiter.get(), "update pool_spread set v = v + 1");
  CHECK(scalar(other.get(), "select pg_terminate_backend(" +
                                std::to_string(PQbackendPID(waiter.get())) + ")") == "t");
  CHECK(outcome(waiter.get(), 2s) == "57P01");
  query(holder.get(), "COMMIT");
  CHECK(spread_changes() == before);
}

TEST_CASE("SHOW CLIENTS shows a multi-shard statement waiting for a server as waiting", "[pool]") {
  // Before: only attach()'s wait was the client's; a statement on every shard waiting for a
  // server showed as idle, with no wait.
  Proxy proxy(one_server_spread());
  auto adm = console(proxy);
  auto holder = named_client_on_s0(proxy, "holder");
  auto waiter = connect(proxy.conninfo("application_name=waiter"));

  wait_behind(adm.get(), holder.get(), waiter.get(), "select count(*) from pool_spread");
  std::map<std::string, std::string> row;
  CHECK(wait_until(
      [&] {
        row = client_named(adm.get(), "waiter");
        return row["state"] == "waiting" &&
               std::stoll(row["wait_us"]) + std::stoll(row["wait"]) * 1000000 >= 100000;
      },
      5s));
  CHECK(row["state"] == "waiting");
  query(holder.get(), "COMMIT");
  CHECK(outcome(waiter.get(), 2s).empty());
  CHECK(client_named(adm.get(), "waiter")["state"] == "idle");
}

TEST_CASE("terminating a client that waits for a server sends it FATAL 57P01 first", "[pool]") {
  Proxy proxy(one_server("10s"));
  auto adm = console(proxy);
  auto holder = named_client_on_s0(proxy, "holder");
  auto other = connect(proxy.conninfo("application_name=other"));

  SECTION("pg_terminate_backend through pgshard") {
    auto waiter = named_client_on_s0(proxy, "waiter");
    wait_behind(adm.get(), holder.get(), waiter.get(), "select 7");
    CHECK(scalar(other.get(), "select pg_terminate_backend(" +
                                  std::to_string(PQbackendPID(waiter.get())) + ")") == "t");
    CHECK(outcome(waiter.get(), 2s) == "57P01");
  }
  SECTION("the console's KILL_CLIENT") {
    auto waiter = named_client_on_s0(proxy, "waiter");
    wait_behind(adm.get(), holder.get(), waiter.get(), "select 7");
    query(adm.get(), "KILL_CLIENT " + client_named(adm.get(), "waiter")["id"]);
    CHECK(outcome(waiter.get(), 2s) == "57P01");
  }
  SECTION("the console's KILL of its shard") {
    auto waiter = named_client_on_s0(proxy, "waiter");
    wait_behind(adm.get(), holder.get(), waiter.get(), "select 7");
    query(adm.get(), "KILL s0");
    CHECK(outcome(waiter.get(), 2s) == "57P01");
    holder = named_client_on_s0(proxy, "holder");  // (KILL closed it too)
  }
  CHECK(s0_waiting(adm.get()) == 0);
  PQclear(PQexec(holder.get(), "COMMIT"));
  auto after = named_client_on_s0(proxy, "after");
  CHECK(scalar(after.get(), "select 3") == "3");
}

TEST_CASE("a server killed while idle in the pool is not handed to the next client", "[pool]") {
  // Before: a server idle for less than 100 ms was lent without a look at its socket, and
  // the client got "connection lost" instead of a new server.
  Proxy proxy(sharing(1, 1, "5s"));
  auto direct = quiet_probe();
  auto c = client_on_s0(proxy);
  CHECK(scalar(c.get(), "select 1") == "1");
  for (int round = 0; round < 5; ++round) {
    const std::string pid = scalar(direct.get(),
                                   "select pid from pg_stat_activity where usename = 'app' and "
                                   "backend_type = 'client backend' and application_name <> "
                                   "'pool-probe' and application_name not like 'pgshard-%'");
    // The server comes back idle just before it is killed.
    CHECK(scalar(c.get(), "select 1") == "1");
    // (Returns once the server has exited: its FATAL and end of file are on the socket.)
    CHECK(scalar(direct.get(), "select pg_terminate_backend(" + pid + ", 5000)") == "t");
    std::string message;
    const std::string code = error_code(c.get(), "select 2", &message);
    INFO("round " << round << ": " << message);
    CHECK(code.empty());
  }
}
