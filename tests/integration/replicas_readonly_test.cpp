// READ ONLY transactions on shards with streaming replicas: where each shard's part runs
// (a replica chosen as a plain read, or the primary), what is refused there, how the
// transaction's modes reach every shard, and pipelined transactions.
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "harness.hpp"
#include "replicas_support.hpp"

using namespace harness;

namespace {

// Where the statements of one transaction ran: "port:in_recovery" for each of `sqls` run
// after `begin` (each selects inet_server_port(), pg_is_in_recovery()), then COMMIT, which
// must answer COMMIT.
std::vector<std::string> hosts_in_transaction(PGconn* c, const std::string& begin, int statements) {
  query(c, begin);
  if (PQtransactionStatus(c) != PQTRANS_INTRANS) return {"not in a transaction"};
  std::vector<std::string> hosts;
  for (int i = 0; i < statements; ++i) {
    auto row = query(c, "SELECT inet_server_port(), pg_is_in_recovery()").at(0);
    hosts.push_back(row.at(0) + ":" + row.at(1));
  }
  PGresult* r = PQexec(c, "COMMIT");
  CHECK(std::string(PQcmdStatus(r)) == "COMMIT");
  PQclear(r);
  return hosts;
}

int replica_reads(const Proxy& p) {
  return std::stoi(replicas(p).at(0)["reads"]);
}

}  // namespace

TEST_CASE("read-only transactions: each spelling runs on the replica; SERIALIZABLE on the primary",
          "[replicas]") {
  // Before: every statement of a transaction block went to the primary, READ ONLY or not.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const std::string on_replica = std::to_string(replica) + ":t";
  const std::string on_primary = std::to_string(cluster.port(0)) + ":f";
  // (eventual: a COMMIT of a READ WRITE transaction below would send the next reads to the
  // primary until a check reports its position; read-your-writes has a case of its own.)
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  const std::vector<std::string> both_replica{on_replica, on_replica};
  const std::vector<std::string> both_primary{on_primary, on_primary};
  int reads = replica_reads(proxy);
  for (const std::string begin :
       {"BEGIN READ ONLY", "START TRANSACTION READ ONLY",
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", "BEGIN TRANSACTION READ ONLY"}) {
    INFO(begin);
    CHECK(hosts_in_transaction(c.get(), begin, 2) == both_replica);
    // The host's counter: one read chosen per transaction (its first statement).
    CHECK(replica_reads(proxy) == ++reads);
  }
  // SET TRANSACTION before the transaction's first statement.
  query(c.get(), "BEGIN");
  CHECK(hosts_in_transaction(c.get(), "SET TRANSACTION READ ONLY", 2) == both_replica);
  query(c.get(), "BEGIN");
  CHECK(hosts_in_transaction(c.get(), "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY",
                             1) == std::vector<std::string>{on_primary});
  // The same modes in a setting's words (attacker, MEDIUM: they went to the hot standby,
  // which refuses read-write and SERIALIZABLE transactions).
  query(c.get(), "BEGIN READ ONLY");
  CHECK(hosts_in_transaction(c.get(), "SET transaction_read_only = off", 2) == both_primary);
  query(c.get(), "BEGIN READ ONLY");
  CHECK(hosts_in_transaction(c.get(), "SET LOCAL transaction_isolation = 'serializable'", 1) ==
        std::vector<std::string>{on_primary});
  query(c.get(), "BEGIN");
  CHECK(hosts_in_transaction(c.get(), "SET transaction_read_only TO on", 2) == both_replica);
  // The session's default for its later transactions, either spelling.
  query(c.get(), "SET default_transaction_read_only = on");
  CHECK(hosts_in_transaction(c.get(), "BEGIN", 2) == both_replica);
  CHECK(hosts_in_transaction(c.get(), "BEGIN READ WRITE", 2) == both_primary);
  query(c.get(), "RESET default_transaction_read_only");
  CHECK(hosts_in_transaction(c.get(), "BEGIN", 2) == both_primary);
  query(c.get(), "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY");
  CHECK(hosts_in_transaction(c.get(), "BEGIN", 2) == both_replica);
  query(c.get(), "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE");
  // SERIALIZABLE: a hot standby refuses it, the primary answers.
  CHECK(hosts_in_transaction(c.get(), "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", 2) ==
        both_primary);
  query(c.get(), "SET default_transaction_isolation = 'serializable'");
  CHECK(hosts_in_transaction(c.get(), "BEGIN READ ONLY", 1) ==
        std::vector<std::string>{on_primary});
  query(c.get(), "RESET default_transaction_isolation");
  // Session pooling keeps the client's server: the primary.
  auto keeper = connect(proxy.conninfo("", "keeper"));
  CHECK(hosts_in_transaction(keeper.get(), "BEGIN READ ONLY", 1) ==
        std::vector<std::string>{on_primary});
}

TEST_CASE("read-only transactions: writes answer 25006, locks keep the primary or are refused",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const std::string on_replica = std::to_string(replica) + ":t";
  const std::string on_primary = std::to_string(cluster.port(0)) + ":f";
  one_row_table(cluster, "ro_write_probe");
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  const std::string read = "/* pgshard: shard=s0 */ SELECT count(*) FROM ro_write_probe";
  REQUIRE(wait_until(  // (until the replica has replayed the row)
      [&] { return error_code(c.get(), read).empty() && scalar(c.get(), read) == "1"; },
      std::chrono::seconds(10)));
  // A write: PostgreSQL's own 25006 (from the replica, as the primary would answer it).
  query(c.get(), "BEGIN READ ONLY");
  CHECK(query(c.get(), "SELECT inet_server_port(), pg_is_in_recovery()").at(0).at(1) == "t");
  CHECK(error_code(c.get(), "/* pgshard: shard=s0 */ INSERT INTO ro_write_probe VALUES (2, 0)") ==
        "25006");
  query(c.get(), "ROLLBACK");
  query(c.get(), "BEGIN READ ONLY");
  CHECK(error_code(c.get(), "/* pgshard: shard=s0 */ UPDATE ro_write_probe SET v = 1") == "25006");
  query(c.get(), "ROLLBACK");
  CHECK(scalar(c.get(), "/* pgshard: shard=s0 */ SELECT sum(v) FROM ro_write_probe") == "0");
  // An advisory lock in the transaction's first statement: its part stays on the primary.
  query(c.get(), "BEGIN READ ONLY");
  auto row = query(c.get(), "SELECT inet_server_port(), pg_advisory_xact_lock(77)").at(0);
  CHECK(row.at(0) == std::to_string(cluster.port(0)));
  CHECK(hosts_in_transaction(c.get(), "SELECT 1", 1) == std::vector<std::string>{on_primary});
  // ... and later, on a replica: refused (its lock would exclude nobody on the primary).
  query(c.get(), "BEGIN READ ONLY");
  CHECK(query(c.get(), "SELECT inet_server_port(), pg_is_in_recovery()").at(0).at(1) == "t");
  std::string message;
  CHECK(error_code(c.get(), "SELECT pg_advisory_xact_lock(77)", &message) == "0A000");
  CHECK(message.find("runs on a replica") != std::string::npos);
  CHECK(error_code(c.get(), "SELECT 1") == "25P02");  // the transaction failed, as on an ERROR
  query(c.get(), "ROLLBACK");
  // The refused transaction left nothing behind: the next one's first statement chooses.
  query(c.get(), "BEGIN READ ONLY");
  CHECK(query(c.get(), "SELECT inet_server_port(), pg_advisory_xact_lock(78)").at(0).at(0) ==
        std::to_string(cluster.port(0)));
  query(c.get(), "ROLLBACK");
  CHECK(hosts_in_transaction(c.get(), "BEGIN READ ONLY", 1) ==
        std::vector<std::string>{on_replica});
  // What outlives the transaction in the server session (a cursor WITH HOLD, SQL PREPARE):
  // later on a replica, refused (the client's later statements run on the primary)...
  const std::string hold =
      "/* pgshard: shard=s0 */ DECLARE h CURSOR WITH HOLD FOR SELECT v FROM ro_write_probe";
  query(c.get(), "BEGIN READ ONLY");
  CHECK(query(c.get(), "SELECT pg_is_in_recovery()").at(0).at(0) == "t");
  CHECK(error_code(c.get(), hold, &message) == "0A000");
  CHECK(message.find("runs on a replica") != std::string::npos);
  query(c.get(), "ROLLBACK");
  // ... first, on the primary: found after COMMIT (attacker: 34000, it was on the replica).
  query(c.get(), "BEGIN READ ONLY");
  query(c.get(), hold);
  query(c.get(), "PREPARE pp AS SELECT 42");
  query(c.get(), "COMMIT");
  CHECK(query(c.get(), "FETCH h").size() == 1);
  CHECK(scalar(c.get(), "EXECUTE pp") == "42");
  query(c.get(), "CLOSE h");
  auto direct = connect(cluster.direct(0));
  query(direct.get(), "DROP TABLE ro_write_probe");
}

TEST_CASE("read-only transactions: read-your-writes, never stale under read_consistency: session",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0, 400);
  one_row_table(cluster, "ro_ryw_probe");
  CHECK(stale_reads(replica, "ro_ryw_probe", "session", "BEGIN READ ONLY") == 0);
  // (The transactions did read the replica.)
  CHECK(stale_reads(replica, "ro_ryw_probe", "eventual", "BEGIN READ ONLY") > 0);
}

TEST_CASE("read-only transactions: several shards each on a replica, committed without 2PC",
          "[replicas]") {
  auto& cluster = Cluster::get();
  const int r0 = cluster.replica(0), r1 = cluster.replica(1);
  fan_table(cluster, "ro_fan_probe");
  auto run = [&](const std::string& visibility, std::vector<std::string>& hosts) {
    Proxy proxy(two_replicas(r0, r1, "ro_fan_probe", visibility));
    REQUIRE(wait_until([&] { return both_replicas_up(proxy); }, std::chrono::seconds(15)));
    for (const int i : {0, 1}) {  // (until the replicas have replayed the rows)
      auto direct = connect("host=127.0.0.1 port=" + std::to_string(i == 0 ? r0 : r1) +
                            " user=app password=secret dbname=app");
      const std::string count = "SELECT count(*) FROM ro_fan_probe";
      REQUIRE(wait_until(
          [&] {
            return error_code(direct.get(), count).empty() &&
                   scalar(direct.get(), count) == std::to_string(i + 2);
          },
          std::chrono::seconds(10)));
    }
    auto c = connect(proxy.conninfo());
    hosts.clear();
    query(c.get(), "BEGIN READ ONLY");
    const std::string port = "SELECT inet_server_port()";
    hosts.push_back(scalar(c.get(), "/* pgshard: shard=s0 */ " + port));
    hosts.push_back(scalar(c.get(), "/* pgshard: shard=s1 */ " + port));
    hosts.push_back(scalar(c.get(), "/* pgshard: shard=s0 */ " + port));
    CHECK(scalar(c.get(), "SELECT count(*) FROM ro_fan_probe") == "9");  // both shards
    CHECK(error_code(c.get(), "COMMIT").empty());
    // Nothing was left prepared anywhere, and the session goes on.
    for (int i = 0; i < cluster.size(); ++i) {
      auto direct = connect(cluster.direct(i));
      CHECK(scalar(direct.get(), "SELECT count(*) FROM pg_prepared_xacts") == "0");
    }
    CHECK(scalar(c.get(), "SELECT count(*) FROM ro_fan_probe") == "9");
  };
  std::vector<std::string> hosts;
  run("atomic_visibility: false\n", hosts);
  CHECK(hosts ==
        std::vector<std::string>{std::to_string(r0), std::to_string(r1), std::to_string(r0)});
  // With the visibility gate a multi-shard statement reads the primaries; single-shard ones
  // still go to each shard's replica.
  run("", hosts);
  CHECK(hosts ==
        std::vector<std::string>{std::to_string(r0), std::to_string(r1), std::to_string(r0)});
}

TEST_CASE("reads: a BEGIN pipelined ahead of a read opens its transaction on the primary",
          "[replicas]") {
  // Before: the batch (BEGIN, SELECT, Sync: JDBC sends it so) was routed as the read alone
  // and went to the replica, holding the read-write transaction there: its writes got 25006.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  one_row_table(cluster, "pipelined_begin_probe");
  Proxy proxy(reading_replica(replica, "eventual"));
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  REQUIRE(PQenterPipelineMode(c.get()) == 1);
  REQUIRE(PQsendQueryParams(c.get(), "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
  REQUIRE(PQsendQueryParams(c.get(), "SELECT inet_server_port()", 0, nullptr, nullptr, nullptr,
                            nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c.get()) == 1);
  std::string port;
  for (int results = 0; results < 3;) {
    PGresult* r = PQgetResult(c.get());
    if (!r) continue;  // (between one query's results and the next)
    if (PQresultStatus(r) == PGRES_TUPLES_OK) port = PQgetvalue(r, 0, 0);
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) FAIL(PQresultErrorMessage(r));
    ++results;
    PQclear(r);
  }
  REQUIRE(PQexitPipelineMode(c.get()) == 1);
  CHECK(port == std::to_string(cluster.port(0)));
  CHECK(error_code(c.get(), "/* pgshard: shard=s0 */ UPDATE pipelined_begin_probe SET v = 1") ==
        "");
  query(c.get(), "COMMIT");
  auto direct = connect(cluster.direct(0));
  query(direct.get(), "DROP TABLE pipelined_begin_probe");
}

TEST_CASE("reads: a READ ONLY transaction's errors name shards, and START TRANSACTION spreads",
          "[replicas]") {
  // Attacker (READ ONLY, savepoints): the 0A000 for a statement on another shard named a
  // replica's target as a shard, reading past the shard list (garbage in the message).
  // START TRANSACTION then a statement on several shards: 08006 "could not open the
  // transaction" (the joining shard answered START TRANSACTION, pgshard expected BEGIN).
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  fan_table(cluster, "st_fan");
  ProxyOptions o = reading_replica(replica, "eventual");
  o.sharded_tables = "  - { table: st_fan, column: id, type: bigint }\n";
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  query(c.get(), "BEGIN READ ONLY");
  query(c.get(), "/* pgshard: shard=s1 */ SELECT 1");
  query(c.get(), "SAVEPOINT a");
  std::string message;
  CHECK(error_code(c.get(), "/* pgshard: shard=s0 */ SELECT 1", &message) == "0A000");
  CHECK(message.find("this transaction has savepoints on shard s1 and the statement needs "
                     "shard s0") != std::string::npos);
  query(c.get(), "ROLLBACK");
  for (const std::string begin : {"START TRANSACTION", "START TRANSACTION READ ONLY",
                                  "START TRANSACTION ISOLATION LEVEL REPEATABLE READ"}) {
    INFO(begin);
    query(c.get(), begin);
    query(c.get(), "/* pgshard: shard=s1 */ SELECT 1");
    CHECK(error_code(c.get(), "SELECT count(*) FROM st_fan") == "");
    query(c.get(), "COMMIT");
  }
}

TEST_CASE("txn: a pinned client's BEGIN modes reach the shards that join its transaction",
          "[replicas]") {
  // Attacker (READ ONLY): after a session advisory lock pinned the client, BEGIN READ ONLY
  // went to its server, and a shard joining later opened a plain BEGIN: writes committed
  // there, and REPEATABLE READ ran as READ COMMITTED.
  Proxy proxy(reading_replica(Cluster::get().replica(0), "eventual"));
  auto c = connect(proxy.conninfo());
  query(c.get(), "SELECT pg_advisory_lock(99)");
  query(c.get(), "BEGIN READ ONLY");
  CHECK(scalar(c.get(),
               "/* pgshard: shard=s1 */ SELECT current_setting('transaction_read_only')") == "on");
  query(c.get(), "ROLLBACK");
  query(c.get(), "BEGIN ISOLATION LEVEL REPEATABLE READ");
  CHECK(
      scalar(c.get(), "/* pgshard: shard=s2 */ SELECT current_setting('transaction_isolation')") ==
      "repeatable read");
  CHECK(scalar(c.get(),
               "/* pgshard: shard=s2 */ SELECT current_setting('transaction_read_only')") == "off");
  query(c.get(), "COMMIT");
  // The next transaction is its own: no mode carried over.
  query(c.get(), "BEGIN");
  CHECK(
      scalar(c.get(), "/* pgshard: shard=s1 */ SELECT current_setting('transaction_isolation')") ==
      "read committed");
  query(c.get(), "COMMIT");
  query(c.get(), "SELECT pg_advisory_unlock(99)");
}

TEST_CASE(
    "read-only transactions: a first statement that may lock or write keeps its shard's part on "
    "the primary; on a part already on a replica it is refused",
    "[replicas]") {
  // Attacker (READ ONLY, MEDIUM): a READ ONLY transaction's first statement ran on the replica
  // when it called a function outside read_safe_functions, a procedure, txid_current...
  // (outside a transaction the same statement goes to the primary): its advisory lock there
  // excluded nobody on the primary, txid_current failed where one PostgreSQL answers it.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  const std::string primary = std::to_string(cluster.port(0));
  auto direct = connect(cluster.direct(0));
  query(direct.get(),
        "CREATE OR REPLACE FUNCTION ro_lock_port(k bigint) RETURNS int LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_advisory_xact_lock(k); RETURN inet_server_port(); END$$");
  query(direct.get(),
        "CREATE OR REPLACE PROCEDURE ro_lock_proc(k bigint) LANGUAGE plpgsql AS "
        "$$BEGIN PERFORM pg_advisory_xact_lock(k); END$$");
  query(direct.get(),
        "CREATE OR REPLACE FUNCTION ro_port() RETURNS int LANGUAGE sql STABLE AS "
        "'SELECT inet_server_port()'");
  ProxyOptions o = reading_replica(replica, "eventual");
  o.extra_top += "read_safe_functions: [ro_port]\n";
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  const std::string s0 = "/* pgshard: shard=s0 */ ";
  REQUIRE(wait_until(  // (until the replica has replayed the functions)
      [&] { return error_code(c.get(), s0 + "SELECT ro_port()").empty(); },
      std::chrono::seconds(10)));
  CHECK(ran_on(c.get(), s0 + "SELECT ro_port()") == replica);  // (listed: a plain read)
  auto held_on_primary = [&](int key) {
    return scalar(direct.get(),
                  "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = " +
                      std::to_string(key));
  };
  // First statements: on the primary, as outside a transaction; the lock holds there.
  query(c.get(), "BEGIN READ ONLY");
  CHECK(scalar(c.get(), s0 + "SELECT ro_lock_port(41)") == primary);
  CHECK(held_on_primary(41) == "1");
  CHECK(scalar(c.get(), s0 + "SELECT inet_server_port()") == primary);  // (it stays there)
  query(c.get(), "COMMIT");
  query(c.get(), "BEGIN READ ONLY");
  query(c.get(), s0 + "CALL ro_lock_proc(42)");
  CHECK(held_on_primary(42) == "1");
  query(c.get(), "COMMIT");
  query(c.get(), "BEGIN READ ONLY");
  CHECK(query(c.get(), s0 + "SELECT inet_server_port(), txid_current() > 0").at(0) ==
        std::vector<std::string>{primary, "t"});
  query(c.get(), "COMMIT");
  // A read-safe first statement puts the part on the replica; then each of these is refused
  // (0A000, the transaction fails), never run there.
  for (const std::string later :
       {"SELECT ro_lock_port(43)", "CALL ro_lock_proc(43)", "SELECT txid_current()",
        "NOTIFY ro_channel", "SELECT pg_advisory_xact_lock(43)"}) {
    INFO(later);
    query(c.get(), "BEGIN READ ONLY");
    CHECK(ran_on(c.get(), s0 + "SELECT ro_port()") == replica);
    std::string message;
    CHECK(error_code(c.get(), s0 + later, &message) == "0A000");
    CHECK(message.find("its part on shard s0 runs on a replica") != std::string::npos);
    CHECK(error_code(c.get(), s0 + "SELECT 1") == "25P02");
    query(c.get(), "ROLLBACK");
  }
  // Clocks, random values, its own recovery state: the replica answers them as the primary.
  query(c.get(), "BEGIN READ ONLY");
  CHECK(ran_on(c.get(), s0 + "SELECT ro_port()") == replica);
  CHECK(query(c.get(), s0 + "SELECT random() < 2, clock_timestamp() IS NOT NULL, "
                            "pg_is_in_recovery()")
            .at(0) == std::vector<std::string>{"t", "t", "t"});
  query(c.get(), "COMMIT");
  query(direct.get(), "DROP FUNCTION ro_lock_port, ro_port");
  query(direct.get(), "DROP PROCEDURE ro_lock_proc");
}

TEST_CASE(
    "read-only transactions: SET TRANSACTION READ ONLY before the first statement is BEGIN READ "
    "ONLY on every shard",
    "[replicas]") {
  // Attacker (LOW): BEGIN; SET TRANSACTION READ ONLY; then a read over several shards ran
  // shard s0's part on the replica (the SET had opened s0's part there), where BEGIN READ
  // ONLY's read stays on the primaries.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  fan_table(cluster, "ro_set_fan");
  ProxyOptions o = reading_replica(replica, "eventual");
  o.sharded_tables = "  - { table: ro_set_fan, column: id, type: bigint }\n";
  Proxy proxy(o);
  REQUIRE(wait_until([&] { return replica_state(proxy) == "up"; }, std::chrono::seconds(10)));
  auto c = connect(proxy.conninfo());
  const std::string on_s0 = "/* pgshard: shard=s0 */ SELECT count(*) FROM ro_set_fan";
  REQUIRE(wait_until(  // (until the replica has replayed the table)
      [&] { return error_code(c.get(), on_s0).empty() && scalar(c.get(), on_s0) == "2"; },
      std::chrono::seconds(10)));
  // Where a multi-shard read, then s0 alone, ran, and s1's access mode.
  auto run = [&](const std::vector<std::string>& opening) {
    for (const auto& sql : opening) query(c.get(), sql);
    std::vector<std::string> seen;
    std::string ports;
    for (const auto& row : query(c.get(), "SELECT DISTINCT inet_server_port() FROM ro_set_fan"))
      ports += row.at(0) + " ";
    seen.push_back(ports);
    seen.push_back(scalar(c.get(), "/* pgshard: shard=s0 */ SELECT inet_server_port()"));
    seen.push_back(
        scalar(c.get(), "/* pgshard: shard=s1 */ SELECT current_setting('transaction_read_only')"));
    CHECK(error_code(c.get(), "COMMIT").empty());
    return seen;
  };
  const auto set = run({"BEGIN", "SET TRANSACTION READ ONLY"});
  CHECK(set == run({"BEGIN READ ONLY"}));
  CHECK(set.at(0).find(std::to_string(replica)) == std::string::npos);
  CHECK(set.at(1) == std::to_string(replica));
  CHECK(set.at(2) == "on");
  // Sent in the extended protocol (as drivers do), and the isolation level likewise.
  query(c.get(), "BEGIN");
  PGresult* r =
      PQexecParams(c.get(), "SET TRANSACTION READ ONLY", 0, nullptr, nullptr, nullptr, nullptr, 0);
  CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
  PQclear(r);
  CHECK(ran_on(c.get(), "/* pgshard: shard=s0 */ SELECT inet_server_port()") == replica);
  query(c.get(), "COMMIT");
  query(c.get(), "BEGIN");
  query(c.get(), "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
  for (const std::string shard : {"s1", "s2"})
    CHECK(scalar(c.get(), "/* pgshard: shard=" + shard +
                              " */ SELECT current_setting('transaction_isolation')") ==
          "repeatable read");
  query(c.get(), "COMMIT");
}

namespace {

// BEGIN, `statement` with the parameter `key`, then `end` (COMMIT or ROLLBACK) sent as one
// pipeline with one Sync: the statement's one value, or "ERROR <sqlstate>" of the first error.
std::string pipelined_transaction(PGconn* c, const std::string& statement, const std::string& key,
                                  const std::string& end) {
  const char* values[] = {key.c_str()};
  REQUIRE(PQenterPipelineMode(c) == 1);
  REQUIRE(PQsendQueryParams(c, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
  REQUIRE(PQsendQueryParams(c, statement.c_str(), 1, nullptr, values, nullptr, nullptr, 0) == 1);
  REQUIRE(PQsendQueryParams(c, end.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) == 1);
  REQUIRE(PQpipelineSync(c) == 1);
  std::string out;
  for (int results = 0; results < 4;) {
    PGresult* r = PQgetResult(c);
    if (!r) continue;  // (between one query's results and the next)
    const auto status = PQresultStatus(r);
    if (status == PGRES_TUPLES_OK && PQntuples(r) == 1) out = PQgetvalue(r, 0, 0);
    if (status == PGRES_FATAL_ERROR && out.rfind("ERROR", 0) != 0)
      out = std::string("ERROR ") + PQresultErrorField(r, PG_DIAG_SQLSTATE);
    ++results;
    PQclear(r);
  }
  REQUIRE(PQexitPipelineMode(c) == 1);
  return out;
}

}  // namespace

TEST_CASE("reads: BEGIN, a keyed statement and COMMIT or ROLLBACK pipelined run on the key's shard",
          "[replicas]") {
  // Attacker: psycopg 3's pipeline (BEGIN; UPDATE ... WHERE id = %s; ROLLBACK; one Sync) was
  // refused with 0A000 "statements in one pipelined batch route to different shards" unless
  // the key was on s0 (where COMMIT/ROLLBACK, which name no table, were placed); with
  // replicas or without.
  auto& cluster = Cluster::get();
  const int replica = cluster.replica(0);
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE IF EXISTS pipe_kv");
    query(direct.get(), "CREATE TABLE pipe_kv (id bigint PRIMARY KEY, v int)");
  }
  ProxyOptions with_replicas = reading_replica(replica, "eventual");
  ProxyOptions without;
  for (auto* o : {&with_replicas, &without}) {
    o->sharded_tables = "  - { table: pipe_kv, column: id, type: bigint }\n";
    Proxy proxy(*o);
    auto c = connect(proxy.conninfo());
    query(c.get(), "DELETE FROM pipe_kv");
    query(c.get(), "INSERT INTO pipe_kv SELECT g, 0 FROM generate_series(1, 12) g");
    const std::string update =
        "UPDATE pipe_kv SET v = v + 1 WHERE id = $1 RETURNING inet_server_port()";
    std::set<std::string> ports;
    for (int key = 1; key <= 12; ++key) {
      INFO("key " << key);
      const auto port = pipelined_transaction(c.get(), update, std::to_string(key), "ROLLBACK");
      CHECK(port.rfind("ERROR", 0) != 0);
      ports.insert(port);
      CHECK(PQtransactionStatus(c.get()) == PQTRANS_IDLE);
    }
    CHECK(ports.size() == 3);  // every shard's primary
    CHECK(ports.count(std::to_string(replica)) == 0);
    CHECK(scalar(c.get(), "SELECT sum(v) FROM pipe_kv") == "0");  // all rolled back
    for (int key = 1; key <= 12; ++key)
      CHECK(
          pipelined_transaction(c.get(), update, std::to_string(key), "COMMIT").rfind("ERROR", 0) !=
          0);
    CHECK(scalar(c.get(), "SELECT sum(v) FROM pipe_kv") == "12");
  }
  for (int i = 0; i < cluster.size(); ++i) {
    auto direct = connect(cluster.direct(i));
    query(direct.get(), "DROP TABLE pipe_kv");
  }
}
