// What the failover tiers share: the map, SHOW HOSTS, the transfer load and its checks.
#include "failover_support.hpp"

#include <algorithm>
#include <random>
#include <set>

namespace harness {

std::string host_direct(int port) {
  return "host=127.0.0.1 port=" + std::to_string(port) +
         " user=app password=secret dbname=app options='-c lock_timeout=60s'";
}

std::string host_url(int port) {
  return "postgres://app:secret@127.0.0.1:" + std::to_string(port) + "/app";
}

std::string host_quoted_url(int port) {
  return "\"" + host_url(port) + "\"";
}

ProxyOptions failover_map(const std::string& s0, const std::string& s0_extra,
                          const std::string& accounts, const std::string& done) {
  ProxyOptions o;
  o.users =
      "  - { name: app, password: secret, pool_mode: transaction }\n"
      "  - { name: admin, password: adminpw }\n";
  o.shard_urls = {s0};
  if (!s0_extra.empty()) o.shard_extra = {s0_extra};
  o.sharded_tables = "  - { table: " + accounts + ", column: id, type: bigint }\n" +
                     "  - { table: " + done + ", column: acct, type: bigint }\n";
  o.extra_top =
      "admin: { users: [admin] }\nhealth: { interval: 100ms, timeout: 1s, ban_time: 1s }\n";
  return o;
}

std::vector<std::map<std::string, std::string>> s0_hosts(const Proxy& p) {
  auto c = connect(p.conninfo("dbname=pgshard", "admin", "adminpw"));
  std::vector<std::map<std::string, std::string>> out;
  for (auto& row : show(c.get(), "SHOW HOSTS"))
    if (row["shard"] == "s0") out.push_back(std::move(row));
  return out;
}

std::string host_column(const Proxy& p, int port, const std::string& column) {
  for (auto& row : s0_hosts(p))
    if (row["port"] == std::to_string(port)) return row[column];
  return "(no row)";
}

bool try_statement(const std::string& conninfo, const std::string& sql) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  bool ok = false;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, sql.c_str());
    ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
    PQclear(r);
  }
  PQfinish(c);
  return ok;
}

long long sum_over(const std::vector<std::string>& conninfos, const std::string& sql) {
  long long total = 0;
  for (const auto& ci : conninfos) {
    auto c = connect(ci);
    total += std::stoll(scalar(c.get(), sql));
  }
  return total;
}

void TransferLoad::create(PGconn* app) const {
  query(app, "CREATE TABLE " + accounts + " (id bigint PRIMARY KEY, balance bigint NOT NULL)");
  query(app, "CREATE TABLE " + done + " (acct bigint NOT NULL, tag bigint NOT NULL)");
  for (int id = 1; id <= kAccounts; ++id)
    query(app, "INSERT INTO " + accounts + " VALUES (" + std::to_string(id) + ", " +
                   std::to_string(kBalance) + ")");
}

void TransferLoad::start() {
  for (int i = 0; i < kClients; ++i) clients.emplace_back([this, i] { client(i); });
}

void TransferLoad::finish() {
  stop = true;
  for (auto& t : clients)
    if (t.joinable()) t.join();
}

void TransferLoad::client(int seed) {
  std::mt19937 rng(static_cast<unsigned>(seed));
  PGconn* c = nullptr;
  for (long long n = 0; !stop; ++n) {
    if (!c || PQstatus(c) != CONNECTION_OK) {
      if (c) PQfinish(c);
      c = PQconnectdb(conninfo.c_str());
      if (PQstatus(c) != CONNECTION_OK) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        continue;
      }
    }
    const int a = static_cast<int>(rng() % kAccounts) + 1;
    int b = static_cast<int>(rng() % (kAccounts - 1)) + 1;  // any other account
    if (b >= a) ++b;
    const int lo = std::min(a, b), hi = std::max(a, b);  // locks in id order: no deadlocks
    const int delta = lo == a ? -1 : 1;
    const long long tag = seed * 100000000LL + n;
    bool ok = true;
    auto run_sql = [&](const std::string& sql) {
      if (!ok) return;
      PGresult* r = PQexec(c, sql.c_str());
      ok = PQresultStatus(r) == PGRES_COMMAND_OK;
      if (ok && sql == "commit") ok = std::string(PQcmdStatus(r)) == "COMMIT";
      PQclear(r);
    };
    run_sql("begin");
    run_sql("update " + accounts + " set balance = balance + " + std::to_string(delta) +
            " where id = " + std::to_string(lo));
    run_sql("update " + accounts + " set balance = balance + " + std::to_string(-delta) +
            " where id = " + std::to_string(hi));
    run_sql("insert into " + done + " values (" + std::to_string(a) + ", " + std::to_string(tag) +
            ")");
    run_sql("commit");
    if (ok) {
      ++committed;
      std::lock_guard lock(mu);
      acknowledged.push_back(tag);
    } else {
      ++failed;
      PQfinish(c);
      c = nullptr;
    }
  }
  if (c) PQfinish(c);
}

long long TransferLoad::total(const std::vector<std::string>& primaries) const {
  return sum_over(primaries, "SELECT coalesce(sum(balance), 0) FROM " + accounts);
}

std::size_t TransferLoad::missing(const std::vector<std::string>& primaries) const {
  std::set<long long> present;
  for (const auto& ci : primaries) {
    auto c = connect(ci);
    for (const auto& row : query(c.get(), "SELECT tag FROM " + done))
      present.insert(std::stoll(row[0]));
  }
  std::size_t n = 0;
  for (long long tag : acknowledged) n += present.count(tag) == 0;
  return n;
}

bool wait_nothing_prepared(const std::vector<std::string>& primaries,
                           std::chrono::milliseconds limit) {
  return wait_until(
      [&] {
        return sum_over(primaries,
                        "SELECT count(*) FROM pg_prepared_xacts WHERE database = 'app'") == 0;
      },
      limit);
}

}  // namespace harness
