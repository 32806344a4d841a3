// Recovery of in-doubt two-phase commits (see recovery.hpp).
#include "proxy/txn/recovery.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <vector>

namespace pgshard::txn {

RecoveryResult recover(const config::Config& cfg, runtime::DecisionLog& log, bool at_startup,
                       const runtime::HostHealth* hosts) {
  RecoveryResult result;
  const std::string& mine = log.prefix();
  std::set<std::string> seen;  // global ids still prepared somewhere
  for (std::size_t i = 0; i < cfg.shards.size(); ++i) {
    const auto& shard = cfg.shards[i];
    const auto writer = hosts ? hosts->writer(static_cast<int>(i)) : runtime::Writer{};
    if (!writer.refusal.empty()) {
      spdlog::warn("recovery: {}", writer.refusal);
      ++result.errors;
      continue;
    }
    PGconn* c = PQconnectdb(
        runtime::maintenance_conninfo(cfg, shard, shard.host(writer.host), "pgshard-recovery")
            .c_str());
    if (PQstatus(c) != CONNECTION_OK) {
      spdlog::warn("recovery: cannot reach shard {}: {}", shard.name, PQerrorMessage(c));
      ++result.errors;
      PQfinish(c);
      continue;
    }
    PGresult* r = PQexec(c,
                         "SELECT gid FROM pg_prepared_xacts WHERE gid LIKE 'pgshard\\_%' "
                         "AND database = current_database()");
    std::vector<std::string> gids;
    if (PQresultStatus(r) == PGRES_TUPLES_OK)
      for (int i = 0; i < PQntuples(r); ++i) gids.emplace_back(PQgetvalue(r, i, 0));
    PQclear(r);
    for (const auto& gid : gids) {
      // "pgshard_<instance>_<n>_<shard>": the global id is everything before the last "_".
      // Other pgshard instances resolve their own transactions.
      if (!gid.starts_with(mine)) continue;
      const std::string global = gid.substr(0, gid.rfind('_'));
      // A session finishing this transaction decides it; recovery only takes over what no
      // session owns (a crash, a shard that was down, a session that gave up).
      if (log.live(global)) continue;
      seen.insert(global);
      const bool decided = log.decided(global);
      const std::string sql =
          std::string(decided ? "COMMIT PREPARED '" : "ROLLBACK PREPARED '") + gid + "'";
      PGresult* x = PQexec(c, sql.c_str());
      const char* state = PQresultErrorField(x, PG_DIAG_SQLSTATE);
      if (state && std::string_view(state) == "42704") {
        // Finished meanwhile by the session that owned it: nothing to do.
        seen.erase(global);
      } else if (PQresultStatus(x) == PGRES_COMMAND_OK) {
        spdlog::info("recovery: {} on shard {}", sql, shard.name);
        ++(decided ? result.committed : result.rolled_back);
      } else {
        spdlog::warn("recovery: {} on shard {} failed: {}", sql, shard.name,
                     PQresultErrorMessage(x));
        ++result.errors;
      }
      PQclear(x);
    }
    PQfinish(c);
  }
  // Decisions whose transactions are committed everywhere (no participant left prepared
  // on any shard, every shard reached) are finished.
  if (result.errors == 0) {
    for (const auto& g : log.pending())
      if (!seen.contains(g) && !log.live(g)) log.done(g);
    if (at_startup) log.compact();
  }
  return result;
}

bool RecoveryRounds::round(const config::Config& cfg, runtime::DecisionLog& log,
                           const runtime::HostHealth* hosts) {
  const bool sweep = ++idle_rounds_ >= kSweepEvery;
  if (!incomplete_ && !sweep && !log.needs_recovery()) return false;
  idle_rounds_ = 0;
  const auto started = std::chrono::steady_clock::now();
  const auto r = recover(cfg, log, false, hosts);
  incomplete_ = r.errors > 0;
  if (!incomplete_) log.settle(started - kSettle);
  return true;
}

}  // namespace pgshard::txn
