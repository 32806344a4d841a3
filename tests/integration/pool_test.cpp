// Server connection pools across workers: pool_size bounds a shard's connections for the
// whole process, and an idle server on one worker serves a client waiting on another.
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>
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
