// Session-level fuzzing over the socket: after login, random and mutated protocol messages
// (valid templates with flipped bytes, wrong lengths and types, cut short) from many
// connections. The proxy must survive, a well-behaved client must keep working throughout,
// and every fuzzed connection must be closed within a few seconds of its client leaving,
// with no server left in a transaction.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <thread>

#include "harness.hpp"
#include "protocol/messages.hpp"

using namespace harness;
using namespace std::chrono_literals;
namespace p = pgshard::protocol;

namespace {

const char* const kSql[] = {
    "select 1",
    "select count(*) from fz_items",
    "select k, v from fz_items where k = 3",
    "select * from fz_items order by k desc limit 2",
    "insert into fz_items (k, v) values (100, 'x') on conflict (k) do nothing",
    "update fz_items set v = 'y' where k = 2",
    "update fz_items set v = 'z'",
    "begin",
    "commit",
    "rollback",
    "savepoint a",
    "select 1/0",
    "selec broken",
    "copy fz_items from stdin",
    "copy fz_items to stdout",
    "set pgshard.sharding_key = '5'",
    "reset all",
    "set statement_timeout = '5s'",
    "listen fz",
    "select count(*) from fz_items; select 2",
    "explain (route) select * from fz_items where k = 1",
    "",
};

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  // One input: a message, perhaps mutated.
  std::string next() {
    std::string m = valid();
    if (pick(10) < 3) mutate(m);
    return m;
  }
  int pick(int n) { return static_cast<int>(rng_() % static_cast<uint32_t>(n)); }

 private:
  std::string sql() { return kSql[pick(std::size(kSql))]; }
  std::string valid() {
    std::string out;
    switch (pick(12)) {
      case 0:
      case 1:
      case 2:
        p::Query{sql()}.write(out);
        break;
      case 3: {
        std::string name = pick(2) ? "" : "s" + std::to_string(pick(3));
        std::string text = pick(3) ? "select $1::int8 + 1" : sql();
        p::Parse{name, text, {}}.write(out);
        break;
      }
      case 4: {
        std::string value = std::to_string(pick(1000));
        std::string stmt = pick(2) ? "" : "s" + std::to_string(pick(3));
        p::Bind b{"", stmt, {}, {}, {}};
        if (pick(2)) b.params.emplace_back(value);
        b.write(out);
        break;
      }
      case 5:
        p::Describe{pick(2) ? 'S' : 'P', ""}.write(out);
        break;
      case 6:
        p::Execute{"", pick(3)}.write(out);
        break;
      case 7:
      case 8:
        p::write_empty(out, p::msg::kSync);
        break;
      case 9:
        p::write_empty(out, p::msg::kFlush);
        break;
      case 10:
        p::CopyData{std::to_string(pick(50)) + "\tfz\n"}.write(out);
        if (pick(2)) p::write_empty(out, p::msg::kCopyDone);
        break;
      default:
        p::Close{pick(2) ? 'S' : 'P', ""}.write(out);
    }
    return out;
  }
  void mutate(std::string& m) {
    switch (pick(5)) {
      case 0:  // flip a byte
        m[static_cast<std::size_t>(pick(static_cast<int>(m.size())))] ^=
            static_cast<char>(1 + pick(255));
        break;
      case 1:  // cut short
        m.resize(static_cast<std::size_t>(pick(static_cast<int>(m.size()))));
        break;
      case 2:  // a length that lies
        if (m.size() >= 5) m[1 + pick(4)] = static_cast<char>(pick(256));
        break;
      case 3:  // another type byte
        m[0] = static_cast<char>(pick(256));
        break;
      default:  // garbage appended
        for (int i = pick(16); i > 0; --i) m.push_back(static_cast<char>(pick(256)));
    }
  }
  std::mt19937 rng_;
};

// Reads whatever the proxy has sent within `ms`; false once it closed the connection.
bool drain(int fd, int ms) {
  char buf[65536];
  for (;;) {
    pollfd pfd{fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) <= 0) return true;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    ms = 0;
  }
}

// What every session of the proxy waits on (SIGUSR2 dump), for the failure message.
std::string session_dump(Proxy& proxy) {
  kill(proxy.pid(), SIGUSR2);
  std::this_thread::sleep_for(300ms);
  return proxy.log_tail(40);
}

// The well-behaved client's query, answered within 15 s (else the proxy's session dump).
std::string good_answer(PGconn* c, Proxy& proxy) {
  REQUIRE(PQsendQuery(c, "select count(*) from fz_items where k <= 4") == 1);
  auto deadline = std::chrono::steady_clock::now() + 15s;
  while (PQisBusy(c)) {
    pollfd pfd{PQsocket(c), POLLIN, 0};
    poll(&pfd, 1, 100);
    PQconsumeInput(c);
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("the well-behaved client got no answer in 15 s:\n" << session_dump(proxy));
    }
  }
  std::string value;
  while (PGresult* r = PQgetResult(c)) {
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
      value = PQgetvalue(r, 0, 0);
    else
      value = PQresultErrorMessage(r);
    PQclear(r);
  }
  return value;
}

// 50,000 inputs from `seed` (PGSHARD_FUZZ_SEED, when set, replaces it to explore others).
void fuzz_session(uint32_t seed) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists fz_items");
    query(d.get(), "create table fz_items (k bigint primary key, v text)");
  }
  ProxyOptions o;
  o.sharded_tables = "  - { table: fz_items, column: k, type: bigint }\n";
  o.users = "  - { name: app, password: secret, pool_mode: transaction }\n";
  o.pool_size = 4;
  o.extra_top = "timeouts: { pool_wait: 10s }\n";
  Proxy proxy(o);
  auto good = connect(proxy.conninfo());
  query(good.get(), "insert into fz_items (k, v) values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd')");

  if (const char* seed_env = std::getenv("PGSHARD_FUZZ_SEED"))
    seed = static_cast<uint32_t>(std::stoul(seed_env));
  INFO("seed " << seed);
  Generator gen(seed);
  const int kInputs = 50000;
  int connections = 0;
  std::unique_ptr<RawClient> c;
  int left_on_this = 0;
  for (int i = 0; i < kInputs;) {
    if (!c || left_on_this <= 0) {
      c = std::make_unique<RawClient>(proxy.port());
      REQUIRE(c->login());
      ++connections;
      left_on_this = 20 + gen.pick(200);
    }
    std::string burst;
    for (int n = 1 + gen.pick(8); n > 0 && i < kInputs; --n, ++i, --left_on_this)
      burst += gen.next();
    bool open = c->send(burst) && drain(c->fd(), gen.pick(4));
    if (!open) c.reset();
    if (i % 5000 < 8) {
      INFO("after " << i << " inputs");
      CHECK(good_answer(good.get(), proxy) == "4");
    }
  }
  c.reset();
  INFO(connections << " connections");
  REQUIRE(proxy.running());
  // Every fuzzed connection is closed once its client has gone (none in CLOSE-WAIT), and
  // no shard keeps a server in a transaction for a client that left.
  const bool closed =
      wait_until([&] { return sockets_in_state(proxy.port(), "close-wait") == 0; }, 5s);
  const std::string dump = closed ? std::string() : session_dump(proxy);
  INFO(dump);
  CHECK(closed);
  // Which servers are left in a transaction, with their last statement, for the message.
  auto in_transaction = [&] {
    std::string out;
    for (int s = 0; s < cluster.size(); ++s) {
      auto d = connect(cluster.direct(s));
      out +=
          scalar(d.get(), "select coalesce(string_agg(format('shard %s pid %s %s since %s: %s', " +
                              std::to_string(s) +
                              ", pid, state, now() - state_change, query), E'\\n'), '') "
                              "from pg_stat_activity where usename = 'app' and "
                              "state like 'idle in transaction%' and pid <> pg_backend_pid()");
    }
    return out;
  };
  const bool none_in_transaction = wait_until([&] { return in_transaction().empty(); }, 5s);
  const std::string left = none_in_transaction ? std::string() : in_transaction();
  const std::string dump2 = none_in_transaction ? std::string() : session_dump(proxy);
  INFO(left << "\n" << dump2);
  CHECK(none_in_transaction);
  CHECK(good_answer(good.get(), proxy) == "4");
  auto fresh = connect(proxy.conninfo());
  CHECK(scalar(fresh.get(), "select 'alive'") == "alive");
}

}  // namespace

TEST_CASE("50,000 random and mutated messages do not crash or wedge the proxy", "[fuzz]") {
  fuzz_session(20261129);
}

TEST_CASE("fuzz inputs that left servers in a transaction for good", "[fuzz]") {
  // With this seed a session whose client left while its transaction's servers were lent
  // to a multi-shard statement kept those servers, idle in their transaction and holding
  // their locks, for as long as pgshard ran (in most runs; the relays started a read after
  // finish() had found none to cancel). Seed 8 showed the same and, under ASan, once left
  // the well-behaved client without an answer for 15 s while a fuzzed session sat in
  // drain() with an open batch (a wait that only its client leaving ended; the protocol
  // test "a protocol violation after a Flush..." covers it). It passes 3 runs of 3 under
  // ASan before and after that fix, so it is not run here.
  fuzz_session(6);
}
