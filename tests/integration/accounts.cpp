// The accounts table the transaction and deadlock cases share (accounts.hpp).
#include "accounts.hpp"

#include <catch2/catch.hpp>
#include <thread>

namespace accounts {

using namespace harness;

ProxyOptions accounts_map() {
  ProxyOptions o;
  o.sharded_tables = "  - { table: accounts, column: id, type: bigint }\n";
  return o;
}

ProxyOptions small_pools_with_console(const std::string& pool_wait) {
  ProxyOptions o = accounts_map();
  o.pool_sizes = {1, 1};
  o.users =
      "  - { name: app, password: secret, pool_mode: transaction }\n"
      "  - { name: admin, password: adminpw }\n";
  o.extra_top = "timeouts: { pool_wait: " + pool_wait + " }\nadmin: { users: [admin] }\n";
  return o;
}

void make_accounts(int n, int balance) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    query(d.get(), "drop table if exists accounts");
    query(d.get(), "create table accounts (id bigint primary key, balance bigint not null)");
  }
  Proxy p(accounts_map());
  auto c = connect(p.conninfo());
  for (int id = 1; id <= n; ++id)
    query(c.get(), "insert into accounts (id, balance) values (" + std::to_string(id) + ", " +
                       std::to_string(balance) + ")");
}

long long total_balance() {
  auto& cluster = Cluster::get();
  long long sum = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    sum += std::stoll(scalar(d.get(), "select coalesce(sum(balance), 0) from accounts"));
  }
  return sum;
}

int prepared_left() {
  auto& cluster = Cluster::get();
  int n = 0;
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    n += std::stoi(scalar(d.get(), "select count(*) from pg_prepared_xacts"));
  }
  return n;
}

int shard_of(int id) {
  auto& cluster = Cluster::get();
  for (int i = 0; i < cluster.size(); ++i) {
    auto d = connect(cluster.direct(i));
    if (scalar(d.get(), "select count(*) from accounts where id = " + std::to_string(id)) == "1")
      return i;
  }
  return -1;
}

int account_on(int shard, const std::set<int>& taken) {
  for (int id = 1;; ++id)
    if (!taken.contains(id) && shard_of(id) == shard) return id;
}

std::string add_to(int id) {
  return "update accounts set balance = balance + 1 where id = " + std::to_string(id);
}

std::string await_result(PGconn* c, std::chrono::milliseconds limit) {
  std::string code = "timeout";
  const auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    PQconsumeInput(c);
    if (!PQisBusy(c)) {
      code.clear();
      while (PGresult* r = PQgetResult(c)) {
        if (const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE)) code = s;
        PQclear(r);
      }
      return code;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return code;
}

void wait_for_lock_wait(int shard) {
  auto d = connect(Cluster::get().direct(shard));
  REQUIRE(wait_until(
      [&] { return scalar(d.get(), "select count(*) from pg_locks where not granted") != "0"; },
      std::chrono::seconds(5)));
}

std::chrono::steady_clock::time_point lock_cycle(PGconn* first, PGconn* second, int a, int b,
                                                 const std::function<void()>& until_waiting,
                                                 CycleOptions options) {
  auto lock = [](PGconn* c, int id) {
    query(c, "begin");
    query(c, add_to(id));
  };
  if (options.first_younger) {
    lock(second, b);
    lock(first, a);
  } else {
    lock(first, a);
    lock(second, b);
  }
  const std::string wait_on_b = add_to(b);
  if (options.extended)
    REQUIRE(PQsendQueryParams(first, wait_on_b.c_str(), 0, nullptr, nullptr, nullptr, nullptr, 0) ==
            1);
  else
    REQUIRE(PQsendQuery(first, wait_on_b.c_str()) == 1);
  until_waiting();
  const auto formed = std::chrono::steady_clock::now();
  REQUIRE(PQsendQuery(second, add_to(a).c_str()) == 1);
  return formed;
}

}  // namespace accounts
