// How pgshard logs in to a shard for its own work (see maintenance.hpp).
#include "proxy/runtime/maintenance.hpp"

#include <algorithm>

namespace pgshard::runtime {

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
  return maintenance_login(cfg, shard, shard.primary);
}

MaintenanceLogin maintenance_login(const config::Config& cfg, const config::Shard&,
                                   const config::PgUrl& u) {
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
  return maintenance_conninfo(cfg, shard, shard.primary, application_name);
}

std::string maintenance_conninfo(const config::Config& cfg, const config::Shard& shard,
                                 const config::PgUrl& u, const std::string& application_name) {
  const auto m = maintenance_login(cfg, shard, u);
  return "host=" + conninfo_value(u.host) + " port=" + std::to_string(u.port) +
         " user=" + conninfo_value(m.user) + " password=" + conninfo_value(m.password) +
         " dbname=" + conninfo_value(m.database) + " connect_timeout=" +
         std::to_string(std::max<long long>(2, (cfg.timeouts.connect.count() + 999) / 1000)) +
         " application_name=" + conninfo_value(application_name) +
         // libpq's default gssencmode=prefer first asks for GSSAPI encryption (a Kerberos
         // credential lookup on every login). pgshard's own server connections never use it,
         // so a shard pgshard can serve accepts a login without it: ask for none.
         " gssencmode=disable";
}

}  // namespace pgshard::runtime
