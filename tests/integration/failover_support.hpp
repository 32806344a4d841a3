// What the failover tiers share: a map whose shard s0 has hosts of the case's own, its SHOW
// HOSTS rows, and the bank-style transfer load with the checks that follow a failover (the
// sum kept, nothing left prepared, every acknowledged COMMIT present).
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace harness {

// A host of shard s0 on `port`: libpq conninfo straight to it (as app), its URL for the map,
// and the URL quoted for a YAML list.
std::string host_direct(int port);
std::string host_url(int port);
std::string host_quoted_url(int port);

// A proxy whose s0 is `s0` (a URL, or a "[...]" list of hosts), its hosts checked every 100 ms;
// users app/secret and admin/adminpw; `accounts` and `done` sharded by their first column.
ProxyOptions failover_map(const std::string& s0, const std::string& s0_extra = "",
                          const std::string& accounts = "fo_accounts",
                          const std::string& done = "fo_done");

// SHOW HOSTS rows of shard s0, and one column of the row of the host on `port`.
std::vector<std::map<std::string, std::string>> s0_hosts(const Proxy& p);
std::string host_column(const Proxy& p, int port, const std::string& column);

// Runs `sql` on a fresh libpq connection (off the test's thread: no Catch macros); true when
// it succeeded.
bool try_statement(const std::string& conninfo, const std::string& sql);

// The sum of `sql`'s single bigint value over the servers `conninfos` name.
long long sum_over(const std::vector<std::string>& conninfos, const std::string& sql);

// The transfer load: clients moving amounts between random accounts (most transfers span two
// shards: two-phase commit), each transfer also writing its tag into the `done` table on the
// debited account's shard. Tags whose COMMIT answered COMMIT are `acknowledged`.
struct TransferLoad {
  static constexpr int kAccounts = 12, kClients = 6, kBalance = 1000;
  std::string conninfo;
  std::string accounts = "fo_accounts", done = "fo_done";
  std::atomic<bool> stop{false};
  std::atomic<int> committed{0}, failed{0};
  std::mutex mu;
  std::vector<long long> acknowledged;
  std::vector<std::thread> clients;

  // Creates both tables through pgshard (`app`) and the accounts, kBalance each.
  void create(PGconn* app) const;
  static long long start_total() { return static_cast<long long>(kBalance) * kAccounts; }
  void start();
  void finish();
  ~TransferLoad() { finish(); }  // (a case that failed half way)
  void client(int seed);

  // After finish(), read on the shards' primaries: the balances' sum, and how many
  // acknowledged tags are missing.
  long long total(const std::vector<std::string>& primaries) const;
  std::size_t missing(const std::vector<std::string>& primaries) const;
};

// Waits up to `limit` until no primary holds a prepared transaction of database app.
bool wait_nothing_prepared(const std::vector<std::string>& primaries,
                           std::chrono::milliseconds limit);

}  // namespace harness
