// Snowflake-style ids and the node lease: see unique_id.hpp.
#include "proxy/runtime/unique_id.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <utility>

#include "proxy/runtime/health.hpp"
#include "proxy/runtime/maintenance.hpp"

namespace pgshard::runtime {

namespace {

constexpr int64_t kEpochMillis = 1735689600000;  // 2025-01-01T00:00:00Z
constexpr int64_t kLeaseClass = 1885827944;      // 'pgsh': the advisory lock's first key
constexpr auto kBeat = std::chrono::milliseconds(250);
constexpr auto kValidFor = std::chrono::seconds(1);  // since the last confirmation was sent
constexpr auto kGrace = std::chrono::seconds(2);     // before a new lease is used

struct Layout {
  int node_bits;
  int sequence_bits;
};
constexpr Layout kWide{10, 12};
constexpr Layout kJsSafe{6, 6};

using Steady = std::chrono::steady_clock;
int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch())
      .count();
}

}  // namespace

std::optional<int64_t> GlobalIds::next(int node, bool js_safe) {
  const Layout l = js_safe ? kJsSafe : kWide;
  if (node < 0 || node >= (1 << l.node_bits)) return std::nullopt;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() -
                      kEpochMillis;
  auto& g = js_safe ? safe_ : wide_;
  std::lock_guard lock(g.mu);
  if (now > g.last_millis) {
    g.last_millis = now;
    g.sequence = 0;
  } else if (++g.sequence == (int64_t{1} << l.sequence_bits)) {
    ++g.last_millis;  // this millisecond is used up: borrow the next
    g.sequence = 0;
  }
  return (g.last_millis << (l.node_bits + l.sequence_bits)) | (int64_t{node} << l.sequence_bits) |
         g.sequence;
}

UniqueIdParts unique_id_parts(int64_t id, bool js_safe) {
  const Layout l = js_safe ? kJsSafe : kWide;
  return {id >> (l.node_bits + l.sequence_bits),
          static_cast<int>((id >> l.sequence_bits) & ((1 << l.node_bits) - 1)),
          static_cast<int>(id & ((1 << l.sequence_bits) - 1))};
}

std::optional<int> GlobalIds::current_node(const config::Config& cfg) const {
  if (cfg.node_id >= 0) return cfg.node_id;
  const int node = node_.load();
  const int64_t now = steady_ns();
  if (node < 0 || now < usable_from_.load() ||
      now - confirmed_.load() > std::chrono::nanoseconds(kValidFor).count())
    return std::nullopt;
  return node;
}

void GlobalIds::start_lease(const config::Config& cfg, const HostHealth* hosts) {
  if (cfg.node_id >= 0 || cfg.shards.empty() || thread_.joinable()) return;
  stopping_ = false;
  auto conninfo = [&cfg, hosts] {
    const auto& shard = cfg.shards.front();
    const int host = hosts ? hosts->writer(0).host : 0;
    return maintenance_conninfo(cfg, shard, shard.host(host), "pgshard-node-lease") +
           // In the maintenance database: the lock is not among the application database's
           // pg_locks (what one PostgreSQL would show there), and every instance takes it in
           // the same place.
           " dbname=postgres keepalives=1 keepalives_idle=1 "
           "keepalives_interval=1 keepalives_count=2 tcp_user_timeout=1500";
  };
  thread_ = std::thread(&GlobalIds::run_lease, this, std::move(conninfo));
}

void GlobalIds::stop_lease() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void GlobalIds::run_lease(std::function<std::string()> conninfo) {
  auto pause = [&](Steady::duration d) {
    std::unique_lock lock(mu_);
    return !wake_.wait_for(lock, d, [&] { return stopping_; });
  };
  bool warned = false;  // once per outage
  do {
    std::unique_ptr<PGconn, void (*)(PGconn*)> conn(PQconnectdb(conninfo().c_str()), PQfinish);
    if (PQstatus(conn.get()) != CONNECTION_OK) {
      if (!std::exchange(warned, true))
        spdlog::warn("node id lease: cannot reach the postgres database of shard 0: {}",
                     PQerrorMessage(conn.get()));
      continue;
    }
    // Never on a standby (hot standby grants advisory locks too): at start, before the first
    // checks have found shard 0's primary, the host is the map's first, which under Patroni
    // may be a replica; a lease there stayed while instances that leased later on the
    // primary took the same node. (A server never goes back into recovery while connected.)
    std::unique_ptr<PGresult, void (*)(PGresult*)> recovery(
        PQexec(conn.get(), "SELECT pg_catalog.pg_is_in_recovery()"), PQclear);
    if (PQresultStatus(recovery.get()) != PGRES_TUPLES_OK || PQntuples(recovery.get()) != 1 ||
        std::string_view(PQgetvalue(recovery.get(), 0, 0)) != "f") {
      if (!std::exchange(warned, true))
        spdlog::warn(
            "node id lease: shard 0's {}:{} is a standby (or did not say): waiting for "
            "its primary",
            PQhost(conn.get()), PQport(conn.get()));
      continue;
    }
    warned = false;
    // The lowest node no other instance holds.
    std::unique_ptr<PGresult, void (*)(PGresult*)> got(
        PQexec(conn.get(), ("SELECT n FROM pg_catalog.generate_series(0, 1023) n WHERE "
                            "pg_catalog.pg_try_advisory_lock(" +
                            std::to_string(kLeaseClass) + ", n) LIMIT 1")
                               .c_str()),
        PQclear);
    if (PQresultStatus(got.get()) != PGRES_TUPLES_OK || PQntuples(got.get()) != 1) {
      spdlog::warn("node id lease: no node id free on shard 0 ({})", PQerrorMessage(conn.get()));
      continue;
    }
    const int node = std::stoi(PQgetvalue(got.get(), 0, 0));
    confirmed_ = steady_ns();
    usable_from_ = steady_ns() + std::chrono::nanoseconds(kGrace).count();
    node_ = node;
    spdlog::info("node id lease: node {} for pgshard.unique_id()", node);
    while (pause(kBeat)) {
      const int64_t sent = steady_ns();
      std::unique_ptr<PGresult, void (*)(PGresult*)> beat(PQexec(conn.get(), "SELECT 1"), PQclear);
      if (PQresultStatus(beat.get()) != PGRES_TUPLES_OK) {
        spdlog::warn("node id lease: lost node {} ({})", node, PQerrorMessage(conn.get()));
        break;
      }
      confirmed_ = sent;
    }
    node_ = -1;
  } while (pause(std::chrono::milliseconds(500)));
  node_ = -1;
}

}  // namespace pgshard::runtime
