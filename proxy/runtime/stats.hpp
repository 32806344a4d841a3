// What the admin console and /metrics report: per-worker counters kept on the data path
// (plain integers, one thread each) and the snapshot a worker gives of itself when asked.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "proxy/pool/counters.hpp"
#include "proxy/pool/pool.hpp"
#include "proxy/runtime/health.hpp"

namespace pgshard::router {
struct Route;
}  // namespace pgshard::router

namespace pgshard::runtime {

// How statements were routed, counted per worker.
struct RouteCounters {
  uint64_t single = 0;   // one shard
  uint64_t multi = 0;    // several shards (fan-out, DDL, split COPY)
  uint64_t local = 0;    // answered by pgshard itself
  uint64_t refused = 0;  // refused with an error
  // Multi-shard statements by how their results combine.
  static constexpr std::array<const char*, 6> kMergeKinds{"concat",   "sort",  "aggregate",
                                                          "distinct", "limit", "write"};
  std::array<uint64_t, kMergeKinds.size()> merges{};
  std::map<std::string, uint64_t> refusals;  // by SQLSTATE

  void count(const router::Route& route);
  void add(const RouteCounters& o);
};

struct PoolRow {
  int shard = 0;  // -1 - table for a directory's pool
  std::string shard_name;
  std::string user;
  std::string host;
  uint16_t port = 0;
  std::string database;
  pool::PoolStats stats;
  pool::Counters counters;
  pool::PoolHealth health;
  int clients = 0;  // clients holding one of its servers now
};

struct ClientRow {
  uint64_t id = 0;
  std::string user;
  std::string database;
  // active (a server attached or work in flight), waiting (for a pooled server), idle, login
  std::string state;
  uint64_t wait_us = 0;  // how long it has waited for a pooled server (0: not waiting)
  std::string addr;
  uint16_t port = 0;
  std::string application_name;
  bool tls = false;
  char txn = 'I';
  std::string waiting_on;
  Clock::time_point connected;
  Clock::time_point last_request;
  std::vector<uint64_t> servers;  // ids of the server connections it holds
};

struct ServerRow {
  uint64_t id = 0;
  int shard = 0;
  std::string shard_name;
  std::string user;
  std::string database;
  std::string state;  // active (held by a client), idle (in its pool)
  std::string addr;
  uint16_t port = 0;
  int32_t pid = 0;
  uint64_t client = 0;  // the client holding it (0: none)
  char txn = 'I';
  Clock::time_point connected;
  Clock::time_point since;  // idle since / held since
};

// A multi-shard transaction open now.
struct TxnRow {
  uint64_t session = 0;
  std::string user;
  std::vector<std::string> shards;
  std::string state;
};

struct WorkerSnapshot {
  int worker = 0;
  std::vector<PoolRow> pools;
  std::vector<ClientRow> clients;
  std::vector<ServerRow> servers;
  std::vector<TxnRow> transactions;
  RouteCounters routes;
  std::vector<int> paused;  // shards paused on this worker
  uint64_t cache_size = 0;
  uint64_t cache_hits = 0;
  uint64_t cache_misses = 0;
};

// A shard's running totals at one moment, for averages over a stats period.
struct ShardTotals {
  uint64_t xacts = 0, queries = 0, bytes_sent = 0, bytes_received = 0;
  uint64_t xact_us = 0, query_us = 0, wait_us = 0, waits = 0;
  static ShardTotals of(const pool::Counters& c) {
    return {c.xacts,
            c.queries,
            c.bytes_sent,
            c.bytes_received,
            c.xact_time.sum_us,
            c.query_time.sum_us,
            c.wait_us,
            c.waits};
  }
};

// Totals per shard index taken at the end of a stats period.
struct PeriodMark {
  Clock::time_point at;
  std::map<int, ShardTotals> shards;
};

// The whole process at one moment (the workers answer one after another).
struct Snapshot {
  std::vector<WorkerSnapshot> workers;
  Clock::time_point taken = Clock::now();
  Clock::time_point started;
  int clients_total = 0;  // every connection, logged in or not
  int logged_in = 0;
  int startups = 0;
  std::size_t in_doubt = 0;  // two-phase commits decided, not yet finished everywhere
  uint64_t committed_2pc = 0;
  uint64_t rolled_back_2pc = 0;
  // The last two stats period marks (SHOW STATS averages are over the period between
  // them); empty until two periods have passed (averages then run from the start).
  std::optional<std::pair<PeriodMark, PeriodMark>> period;
  std::vector<HostState> hosts;  // every host's last health check (with replicas only)

  // Pools of every worker added up per (shard, user), in shard order.
  std::vector<PoolRow> pools() const;
  // Per shard, over its users.
  std::vector<PoolRow> shards() const;
  RouteCounters routes() const;
};

}  // namespace pgshard::runtime
