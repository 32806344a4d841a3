// Failures: a shard dies mid-query, shards that do not answer, slow and idle clients,
// and graceful shutdown.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <iostream>
#include <thread>

#include "harness.hpp"
#include "protocol/errors.hpp"

using namespace harness;
using namespace std::chrono_literals;

TEST_CASE("a shard killed mid-query fails only its clients; they work again once it is back",
          "[resilience]") {
  Proxy proxy;
  auto& cluster = Cluster::get();
  auto on_s1 = connect(proxy.conninfo());
  auto on_s0 = connect(proxy.conninfo());
  query(on_s1.get(), "SET pgshard.shard = 's1'");
  CHECK(scalar(on_s1.get(), "select current_setting('port')") == std::to_string(cluster.port(1)));

  std::thread killer([&] {
    std::this_thread::sleep_for(500ms);
    cluster.kill(1);
  });
  std::string message;
  std::string code = error_code(on_s1.get(), "select pg_sleep(10)", &message);
  killer.join();
  INFO(message);
  CHECK((code.starts_with("08") || code.starts_with("57P")));
  CHECK_THAT(message, Catch::Contains("s1"));

  // Clients on other shards never noticed.
  for (int i = 0; i < 10; ++i) CHECK(scalar(on_s0.get(), "select 7") == "7");
  // While s1 is down its clients get a clear error naming it, and keep their session.
  code = error_code(on_s1.get(), "select 1", &message);
  CHECK(code == "08001");
  CHECK_THAT(message, Catch::Contains("shard s1"));

  cluster.restart(1);
  CHECK(scalar(on_s1.get(), "select current_setting('port')") == std::to_string(cluster.port(1)));
  CHECK(scalar(on_s0.get(), "select 8") == "8");
}

TEST_CASE("a shard that accepts but never answers times out with 08001", "[resilience]") {
  // A listener that never speaks.
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int port = free_port();
  a.sin_port = htons(static_cast<uint16_t>(port));
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  listen(fd, 16);
  ProxyOptions o;
  o.shard_urls = {
      "postgres://app:secret@127.0.0.1:" + std::to_string(Cluster::get().port(0)) + "/app",
      "postgres://app:secret@127.0.0.1:" + std::to_string(port) + "/app"};
  o.extra_top = "timeouts: { connect: 500ms }\n";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  std::string message;
  auto t0 = std::chrono::steady_clock::now();
  CHECK(error_code(c.get(), "/* pgshard: shard=s1 */ select 1", &message) == "08001");
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  CHECK_THAT(message, Catch::Contains("timeout connecting to shard s1"));
  CHECK(scalar(c.get(), "select 'first shard fine'") == "first shard fine");
  close(fd);
}

TEST_CASE("clients that do not finish startup, or idle too long, are dropped", "[resilience]") {
  ProxyOptions o;
  o.extra_top = "timeouts: { client_startup: 500ms, client_idle: 700ms }\n";
  Proxy proxy(o);
  RawClient silent(proxy.port());
  auto t0 = std::chrono::steady_clock::now();
  CHECK(silent.closed(3000));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);

  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select 1") == "1");
  std::this_thread::sleep_for(1200ms);
  PGresult* r = PQexec(c.get(), "select 1");
  CHECK(PQresultStatus(r) != PGRES_TUPLES_OK);
  PQclear(r);
  CHECK_THAT(proxy.log_tail(), Catch::Contains("closing idle client"));
}

TEST_CASE("silent or stalled connections reopened as they are dropped do not lock out logins",
          "[resilience]") {
  // 300 silent connections reopened as they were dropped kept every max_startups place
  // taken: 0 of 14 logins in 15 s, two log lines per refusal; 64 that send a startup
  // packet and never answer the SCRAM challenge, likewise (found from outside).
  std::string hello;  // what each flooding connection sends, then nothing more
  std::size_t count = 100;
  SECTION("silent") {}
  SECTION("stalled in SCRAM") {
    const std::string params = std::string("user\0nosuchuser\0database\0app\0\0", 30);
    const uint32_t len = htonl(static_cast<uint32_t>(8 + params.size()));
    const uint32_t version = htonl(196608);
    hello.append(reinterpret_cast<const char*>(&len), 4);
    hello.append(reinterpret_cast<const char*>(&version), 4);
    hello += params;
    count = 64;  // as many as max_startups (more, refused at once, reconnect in a loop)
  }
  ProxyOptions o;
  o.listen_extra = "max_startups: 64";
  Proxy proxy(o);
  std::atomic<bool> stop{false};
  std::atomic<int> opened{0};
  std::thread flood([&] {
    std::vector<int> fds;
    while (!stop) {
      // Keep `count` such connections; replace those pgshard closed.
      std::erase_if(fds, [](int fd) {
        char b[256];
        const ssize_t n = ::recv(fd, b, sizeof b, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
          ::close(fd);
          return true;
        }
        return false;
      });
      while (fds.size() < count) {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(static_cast<uint16_t>(proxy.port()));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
          ::close(fd);
          break;
        }
        if (!hello.empty()) (void)!::send(fd, hello.data(), hello.size(), MSG_NOSIGNAL);
        fds.push_back(fd);
        ++opened;
      }
      std::this_thread::sleep_for(5ms);
    }
    for (int fd : fds) ::close(fd);
  });
  std::this_thread::sleep_for(hello.empty() ? 500ms : 1500ms);
  int ok = 0;
  for (int i = 0; i < 10; ++i) {
    PGconn* c = PQconnectdb(proxy.conninfo("connect_timeout=3").c_str());
    ok += PQstatus(c) == CONNECTION_OK;
    if (PQstatus(c) != CONNECTION_OK) std::cerr << "login failed: " << PQerrorMessage(c);
    PQfinish(c);
    std::this_thread::sleep_for(100ms);
  }
  stop = true;
  flood.join();
  INFO("flooding connections opened: " << opened);
  CHECK(opened >= static_cast<int>(count));
  CHECK(ok == 10);
  // However many were refused, the log has at most a line a second about it.
  const std::string log = read_file(proxy.log_path());
  std::size_t lines = 0;
  for (std::size_t at = 0; (at = log.find("max_startups", at)) != std::string::npos; ++at) ++lines;
  CHECK(lines < 10);
}

TEST_CASE("SIGTERM lets running statements finish, refuses new clients, then exits",
          "[resilience]") {
  Proxy proxy;
  auto busy = connect(proxy.conninfo());
  auto idle = connect(proxy.conninfo());
  CHECK(scalar(idle.get(), "select 1") == "1");
  std::string result;
  std::thread runner([&] { result = scalar(busy.get(), "select pg_sleep(1.5)::text || 'done'"); });
  std::this_thread::sleep_for(300ms);
  kill(proxy.pid(), SIGTERM);
  std::this_thread::sleep_for(200ms);
  Conn late(PQconnectdb(proxy.conninfo().c_str()), PQfinish);
  CHECK(PQstatus(late.get()) == CONNECTION_BAD);
  runner.join();
  CHECK(result == "done");
  // The idle client was told why it was closed.
  PGresult* r = PQexec(idle.get(), "select 1");
  CHECK(PQresultStatus(r) == PGRES_FATAL_ERROR);
  PQclear(r);
  int status = proxy.signal_and_wait(0, 5000);
  CHECK(status >= 0);
}

TEST_CASE("a second signal exits at once", "[resilience]") {
  ProxyOptions o;
  o.extra_top = "timeouts: { shutdown: 60s }\n";
  Proxy proxy(o);
  auto busy = connect(proxy.conninfo());
  std::thread runner([&] {
    PGresult* r = PQexec(busy.get(), "select pg_sleep(5)");
    PQclear(r);
  });
  std::this_thread::sleep_for(300ms);
  kill(proxy.pid(), SIGTERM);
  std::this_thread::sleep_for(200ms);
  auto t0 = std::chrono::steady_clock::now();
  int status = proxy.signal_and_wait(SIGINT, 3000);
  CHECK(status >= 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
  runner.join();
}
