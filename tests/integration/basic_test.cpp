// Real clients through pgshard: queries, routing by hints, auth, startup settings, load.
#include <algorithm>
#include <catch2/catch.hpp>
#include <thread>

#include "harness.hpp"

using namespace harness;

namespace {
std::string port_of(PGconn* c) {
  return scalar(c, "select current_setting('port')");
}
}  // namespace

TEST_CASE("simple and extended queries return PostgreSQL's answers", "[basic]") {
  Proxy proxy;
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select 1 + 1") == "2");
  auto rows = query(c.get(), "select g, 'x' || g from generate_series(1, 3) g");
  REQUIRE(rows.size() == 3);
  CHECK(rows[2][1] == "x3");

  const char* values[] = {"41", "hello"};
  PGresult* r = PQexecParams(c.get(), "select $1::int + 1, upper($2)", 2, nullptr, values, nullptr,
                             nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(std::string(PQgetvalue(r, 0, 0)) == "42");
  CHECK(std::string(PQgetvalue(r, 0, 1)) == "HELLO");
  PQclear(r);

  // Binary results pass through untouched.
  r = PQexecParams(c.get(), "select 258::int4", 0, nullptr, nullptr, nullptr, nullptr, 1);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  REQUIRE(PQgetlength(r, 0, 0) == 4);
  CHECK(std::string(PQgetvalue(r, 0, 0), 4) == std::string("\0\0\x01\x02", 4));
  PQclear(r);

  // Errors from PostgreSQL reach the client unchanged, and the session goes on.
  std::string msg;
  CHECK(error_code(c.get(), "select * from no_such_table", &msg) == "42P01");
  CHECK(error_code(c.get(), "selec 1") == "42601");
  CHECK(scalar(c.get(), "select 'still fine'") == "still fine");
}

TEST_CASE("statements go to the shard named by SET, hints, or the first shard", "[basic]") {
  Proxy proxy;
  auto& cluster = Cluster::get();
  auto c = connect(proxy.conninfo());
  CHECK(port_of(c.get()) == std::to_string(cluster.port(0)));
  query(c.get(), "SET pgshard.shard = 's2'");
  CHECK(port_of(c.get()) == std::to_string(cluster.port(2)));
  CHECK(scalar(c.get(), "SHOW pgshard.shard") == "s2");
  CHECK(scalar(c.get(), "/* pgshard: shard=s1 */ select current_setting('port')") ==
        std::to_string(cluster.port(1)));
  query(c.get(), "RESET pgshard.shard");
  CHECK(port_of(c.get()) == std::to_string(cluster.port(0)));

  // SET LOCAL lasts for one transaction.
  query(c.get(), "BEGIN");
  query(c.get(), "SET LOCAL pgshard.shard = 's0'");
  CHECK(port_of(c.get()) == std::to_string(cluster.port(0)));
  query(c.get(), "COMMIT");

  // Bad names are refused with SQLSTATE and change nothing.
  CHECK(error_code(c.get(), "SET pgshard.shard = 's9'") == "22023");
  CHECK(error_code(c.get(), "SET pgshard.sharding_key = 'abc'") == "22023");
  CHECK(port_of(c.get()) == std::to_string(cluster.port(0)));

  // In a transaction, a statement routed to another shard brings that shard in; the
  // transaction then commits on both (two-phase commit).
  query(c.get(), "BEGIN");
  CHECK(port_of(c.get()) == std::to_string(cluster.port(0)));
  CHECK(scalar(c.get(), "/* pgshard: shard=s1 */ select current_setting('port')") ==
        std::to_string(cluster.port(1)));
  CHECK(PQtransactionStatus(c.get()) == PQTRANS_INTRANS);
  query(c.get(), "COMMIT");
}

TEST_CASE("SET pgshard.sharding_key lands rows where PARTITION BY HASH puts them", "[basic]") {
  Proxy proxy;
  auto& cluster = Cluster::get();
  auto c = connect(proxy.conninfo());
  // A hash-partitioned table on one server is the reference for placement.
  auto d = connect(cluster.direct(0));
  query(d.get(), "drop table if exists placement");
  query(d.get(), "create table placement (k bigint) partition by hash (k)");
  for (int i = 0; i < 3; ++i)
    query(d.get(), "create table placement_" + std::to_string(i) +
                       " partition of placement for values with (modulus 3, remainder " +
                       std::to_string(i) + ")");
  query(d.get(), "insert into placement select g from generate_series(-500, 500) g");
  auto rows = query(d.get(), "select k, tableoid::regclass::text from placement order by k");
  int checked = 0;
  for (int i = 0; i < static_cast<int>(rows.size()); i += 37) {
    const auto& k = rows[static_cast<std::size_t>(i)][0];
    const auto& part = rows[static_cast<std::size_t>(i)][1];
    query(c.get(), "SET pgshard.sharding_key = '" + k + "'");
    int shard = part.back() - '0';
    INFO("key " << k << " partition " << part);
    CHECK(port_of(c.get()) == std::to_string(cluster.port(shard)));
    ++checked;
  }
  CHECK(checked > 20);
  query(d.get(), "drop table placement");
}

TEST_CASE("wrong password gives 28P01 and the connection closes", "[basic]") {
  Proxy proxy;
  Conn c(PQconnectdb(proxy.conninfo("", "app", "wrong").c_str()), PQfinish);
  REQUIRE(PQstatus(c.get()) == CONNECTION_BAD);
  CHECK_THAT(PQerrorMessage(c.get()), Catch::Contains("password authentication failed"));
  RawClient raw(proxy.port());
  CHECK_FALSE(raw.login("app", "wrong"));
  CHECK(raw.closed());
  Conn u(PQconnectdb(proxy.conninfo("", "nobody", "x").c_str()), PQfinish);
  CHECK(PQstatus(u.get()) == CONNECTION_BAD);
  Conn db(PQconnectdb(("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                       " user=app password=secret dbname=other")
                          .c_str()),
          PQfinish);
  CHECK(PQstatus(db.get()) == CONNECTION_BAD);
  CHECK_THAT(PQerrorMessage(db.get()), Catch::Contains("database \"other\" does not exist"));
  // A database the shards do have is served from them, with pools of its own, as one
  // PostgreSQL serves it (node-postgres and asyncpg tests connect to template1 and to
  // databases they create; before: "does not exist").
  Conn t1(PQconnectdb(("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                       " user=app password=secret dbname=template1")
                          .c_str()),
          PQfinish);
  REQUIRE(PQstatus(t1.get()) == CONNECTION_OK);
  CHECK(scalar(t1.get(), "select current_database()") == "template1");
  t1.reset();  // (CREATE DATABASE copies template1: no session may be connected to it)
  auto app = connect(proxy.conninfo());
  CHECK(scalar(app.get(), "select current_database()") == "app");
  // CREATE DATABASE through pgshard makes it on every shard (before: on one, and a client
  // of it then failed on the others).
  query(app.get(), "drop database if exists pgshard_extra with (force)");
  query(app.get(), "create database pgshard_extra");
  for (int i = 0; i < Cluster::get().size(); ++i) {
    auto d = connect(Cluster::get().direct(i));
    CHECK(scalar(d.get(), "select count(*) from pg_database where datname = 'pgshard_extra'") ==
          "1");
  }
  {
    auto extra = connect("host=127.0.0.1 port=" + std::to_string(proxy.port()) +
                         " user=app password=secret dbname=pgshard_extra");
    query(extra.get(), "create table t (id int)");
    query(extra.get(), "insert into t values (1)");
    CHECK(scalar(extra.get(), "select count(*) from t") == "1");
  }
  query(app.get(), "drop database pgshard_extra with (force)");
}

TEST_CASE("md5 and trust users log in", "[basic]") {
  ProxyOptions o;
  o.users = "  - { name: app, password: secret, auth: md5 }\n  - { name: t, auth: trust }\n";
  o.shard_urls = {};
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  CHECK(scalar(c.get(), "select 1") == "1");
  Conn bad(PQconnectdb(proxy.conninfo("", "app", "nope").c_str()), PQfinish);
  CHECK(PQstatus(bad.get()) == CONNECTION_BAD);
  // A trust user without a password logs in to pgshard; servers use the shard URL's login.
  auto t = connect("host=127.0.0.1 port=" + std::to_string(proxy.port()) + " user=t dbname=app");
  CHECK(scalar(t.get(), "select current_user") == "app");
}

TEST_CASE("startup settings follow the client and never leak to other clients", "[basic]") {
  ProxyOptions o;
  o.pool_size = 1;  // every client shares one server per shard
  Proxy proxy(o);
  auto a = connect(proxy.conninfo(
      "application_name=alpha options='-c search_path=alpha_schema -c statement_timeout=12345'"));
  CHECK(scalar(a.get(), "show search_path") == "alpha_schema");
  CHECK(scalar(a.get(), "show statement_timeout") == "12345ms");
  CHECK(scalar(a.get(), "select current_setting('application_name')") == "alpha");
  CHECK(std::string(PQparameterStatus(a.get(), "application_name")) == "alpha");
  // The client's own SET of a reported setting is tracked too.
  query(a.get(), "SET TimeZone = 'America/New_York'");
  CHECK(std::string(PQparameterStatus(a.get(), "TimeZone")) == "America/New_York");
  for (int i = 0; i < 5; ++i) {
    auto b = connect(proxy.conninfo("application_name=beta"));
    CHECK(scalar(b.get(), "show search_path") == "\"$user\", public");
    CHECK(scalar(b.get(), "show statement_timeout") == "0");
    CHECK(scalar(b.get(), "show timezone") != "America/New_York");
    CHECK(scalar(b.get(), "select current_setting('application_name')") == "beta");
  }
  CHECK(scalar(a.get(), "show search_path") == "alpha_schema");
  CHECK(scalar(a.get(), "show timezone") == "America/New_York");
}

TEST_CASE("psql works through pgshard", "[basic]") {
  Proxy proxy;
  std::string out;
  int rc = run("PGPASSWORD=secret psql -X -At -h 127.0.0.1 -p " + std::to_string(proxy.port()) +
                   " -U app -d app -c 'select 40 + 2' -c '\\dt pg_catalog.pg_class'",
               &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::StartsWith("42\n"));
}

TEST_CASE("200 concurrent clients share a small pool", "[basic]") {
  ProxyOptions o;
  o.pool_size = 10;
  Proxy proxy(o);
  std::string out;
  // pgbench's own tables on the first shard.
  run("PGPASSWORD=secret pgbench -i -s 1 -q -h 127.0.0.1 -p " +
      std::to_string(Cluster::get().port(0)) + " -U app app");
  int rc = run("PGPASSWORD=secret pgbench -n -S -c 200 -j 4 -t 20 -M extended -h 127.0.0.1 -p " +
                   std::to_string(proxy.port()) + " -U app app",
               &out);
  INFO(out);
  CHECK(rc == 0);
  CHECK_THAT(out, Catch::Contains("number of transactions actually processed: 4000/4000"));
  CHECK_THAT(out, Catch::Contains("number of failed transactions: 0"));
}

TEST_CASE("threads hammering pgshard each see their own results", "[basic]") {
  Proxy proxy;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 20; ++t) {
    threads.emplace_back([&, t] {
      PGconn* c = PQconnectdb(proxy.conninfo().c_str());
      if (PQstatus(c) != CONNECTION_OK) {
        PQfinish(c);
        return;
      }
      int good = 0;
      for (int i = 0; i < 50; ++i) {
        std::string v = std::to_string(t * 1000 + i);
        const char* p[] = {v.c_str()};
        PGresult* r = PQexecParams(c, "select $1::int * 2", 1, nullptr, p, nullptr, nullptr, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK &&
            std::stoi(PQgetvalue(r, 0, 0)) == 2 * std::stoi(v))
          ++good;
        PQclear(r);
      }
      if (good == 50) ++ok;
      PQfinish(c);
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 20);
}

TEST_CASE("max_client_conn refuses extra clients with 53300", "[basic]") {
  ProxyOptions o;
  o.listen_extra = "max_client_conn: 2";
  Proxy proxy(o);
  auto a = connect(proxy.conninfo());
  auto b = connect(proxy.conninfo());
  Conn c(PQconnectdb(proxy.conninfo().c_str()), PQfinish);
  CHECK(PQstatus(c.get()) == CONNECTION_BAD);
  CHECK_THAT(PQerrorMessage(c.get()), Catch::Contains("too many clients"));
  a.reset();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  auto d = connect(proxy.conninfo());
  CHECK(scalar(d.get(), "select 1") == "1");
}

TEST_CASE("session pooling keeps one server per client", "[basic]") {
  ProxyOptions o;
  o.pool_mode = "session";
  Proxy proxy(o);
  auto c = connect(proxy.conninfo());
  auto pid = scalar(c.get(), "select pg_backend_pid()");
  query(c.get(), "create temp table t (x int)");
  query(c.get(), "insert into t values (1)");
  CHECK(scalar(c.get(), "select pg_backend_pid()") == pid);
  CHECK(scalar(c.get(), "select count(*) from t") == "1");
  // Named prepared statements work in session pooling.
  PGresult* r = PQprepare(c.get(), "st", "select $1::int + 1", 1, nullptr);
  REQUIRE(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  const char* v[] = {"1"};
  r = PQexecPrepared(c.get(), "st", 1, v, nullptr, nullptr, 0);
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  CHECK(std::string(PQgetvalue(r, 0, 0)) == "2");
  PQclear(r);
  c.reset();
  // The server was reset (DISCARD ALL) before the next client got it.
  auto d = connect(proxy.conninfo());
  CHECK(error_code(d.get(), "select count(*) from t") == "42P01");
}

TEST_CASE("more clients than a worker keeps waiting relays for all get their replies", "[basic]") {
  // A client's relay waits for its next server between transactions, up to
  // ParkedRelays::kMax (256) per worker; past that the oldest waiting relay is ended. Clients
  // whose relay was ended, clients with one waiting, and clients leaving with one waiting
  // must all be unaffected.
  Proxy proxy(one_worker(4));
  auto& cluster = Cluster::get();
  std::vector<Conn> clients;
  for (int i = 0; i < 300; ++i) clients.push_back(connect(proxy.conninfo()));
  auto round = [&](int turn) {
    for (std::size_t i = 0; i < clients.size(); ++i) {
      if (!clients[i]) continue;
      const int shard = static_cast<int>((i + static_cast<std::size_t>(turn)) % 3);
      INFO("client " << i << " turn " << turn);
      CHECK(scalar(clients[i].get(), "/* pgshard: shard=s" + std::to_string(shard) +
                                         " */ select current_setting('port')") ==
            std::to_string(cluster.port(shard)));
    }
  };
  round(0);
  round(1);
  std::reverse(clients.begin(), clients.end());  // the newest waiting relays go first now
  round(2);
  for (std::size_t i = 0; i < clients.size(); i += 2) clients[i].reset();  // leave waiting
  round(3);
  auto late = connect(proxy.conninfo());
  CHECK(scalar(late.get(), "select 1") == "1");
}
