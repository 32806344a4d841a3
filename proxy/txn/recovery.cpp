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

namespace {

std::string conninfo_value(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

}  // namespace

MaintenanceLogin maintenance_login(const config::Config& cfg, const config::Shard& shard) {
  const auto& u = shard.primary;
  MaintenanceLogin m{u.user, u.password, {}};
  for (const auto& cu : cfg.users)
    if (m.user.empty() || (cu.name == m.user && m.password.empty()))
      if (cu.plaintext) {
        if (m.user.empty()) m.user = cu.name;
        if (m.password.empty()) m.password = *cu.plaintext;
        break;
      }
  m.database = u.database.empty() ? m.user : u.database;
  return m;
}

std::string maintenance_conninfo(const config::Config& cfg, const config::Shard& shard,
                                 const std::string& application_name) {
  const auto& u = shard.primary;
  const auto m = maintenance_login(cfg, shard);
  return "host=" + conninfo_value(u.host) + " port=" + std::to_string(u.port) +
         " user=" + conninfo_value(m.user) + " password=" + conninfo_value(m.password) +
         " dbname=" + conninfo_value(m.database) + " connect_timeout=" +
         std::to_string(std::max<long long>(2, (cfg.timeouts.connect.count() + 999) / 1000)) +
         " application_name=" + conninfo_value(application_name);
}

RecoveryResult recover(const config::Config& cfg, DecisionLog& log, bool at_startup) {
  RecoveryResult result;
  const std::string& mine = log.prefix();
  std::set<std::string> seen;  // global ids still prepared somewhere
  for (const auto& shard : cfg.shards) {
    PGconn* c = PQconnectdb(maintenance_conninfo(cfg, shard, "pgshard-recovery").c_str());
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

}  // namespace pgshard::txn
