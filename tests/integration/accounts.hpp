// The accounts table the transaction and deadlock cases share: one bigint key sharded by
// hash, helpers that read each shard directly, and a statement's result awaited.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <set>
#include <string>

#include "harness.hpp"

namespace accounts {

// The map: accounts sharded by id (bigint, hash).
harness::ProxyOptions accounts_map();
// accounts_map() with one server on s0 and one on s1 (for the whole process), timeouts.pool_wait
// `pool_wait`, and an admin console user (admin, password adminpw).
harness::ProxyOptions small_pools_with_console(const std::string& pool_wait);
// accounts(id, balance) made anew on every shard, with ids 1..n holding `balance` each.
void make_accounts(int n, int balance);
// The sum of every shard's balances, read directly.
long long total_balance();
// Prepared transactions left on the shards.
int prepared_left();
// The shard holding account `id` (-1: none).
int shard_of(int id);
// An account on `shard`, from 1 up, other than those in `taken`.
int account_on(int shard, const std::set<int>& taken = {});
// An UPDATE adding 1 to account `id`.
std::string add_to(int id);
// The result of a statement sent with PQsendQuery, waiting up to `limit`: its SQLSTATE
// ("" for success, "timeout" if none came).
std::string await_result(PGconn* c, std::chrono::milliseconds limit);
// Until a statement waits for a row lock on shard `shard` (fails the case after 5 s).
void wait_for_lock_wait(int shard);

// How lock_cycle's transactions start.
struct CycleOptions {
  bool extended = false;       // `first`'s UPDATE of b over the extended protocol
  bool first_younger = false;  // `second` begins first: `first` is the younger
};
// Two transactions locking rows on two shards in opposite orders: `first` locks `a` and
// `second` locks `b` (each in a transaction block), `first` sends an UPDATE of `b` and
// `until_waiting` returns once it waits (for `second`'s row, or for a pooled server), then
// `second` sends an UPDATE of `a`. Returns when the cycle closed; both UPDATEs are running.
std::chrono::steady_clock::time_point lock_cycle(PGconn* first, PGconn* second, int a, int b,
                                                 const std::function<void()>& until_waiting,
                                                 CycleOptions options = {});

}  // namespace accounts
