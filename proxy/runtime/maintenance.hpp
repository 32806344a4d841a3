// How pgshard logs in to a shard for its own work (recovery, deadlock detection, the
// visibility coordinator, node leases, checks): shared by the layers above.
#pragma once

#include <string>

#include "config/config.hpp"

namespace pgshard::runtime {

// How pgshard logs in to a shard for maintenance: the URL's credentials, else the first
// user with a plaintext password; the URL's database, else the user's name.
struct MaintenanceLogin {
  std::string user, password, database;
};
MaintenanceLogin maintenance_login(const config::Config& cfg, const config::Shard& shard);
// The same for another host of the shard (a replica): its URL's credentials first.
MaintenanceLogin maintenance_login(const config::Config& cfg, const config::Shard& shard,
                                   const config::PgUrl& url);
// The same as a libpq conninfo.
std::string maintenance_conninfo(const config::Config& cfg, const config::Shard& shard,
                                 const std::string& application_name);
// The same for another host of the shard (a replica's URL).
std::string maintenance_conninfo(const config::Config& cfg, const config::Shard& shard,
                                 const config::PgUrl& url, const std::string& application_name);

}  // namespace pgshard::runtime
