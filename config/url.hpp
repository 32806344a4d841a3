// postgres:// connection URLs for shard primaries and replicas.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgshard::config {

struct PgUrl {
  std::string user;      // empty: the client's user name
  std::string password;  // empty: the client's password (from the users list)
  std::string host;
  uint16_t port = 5432;
  std::string database;      // empty: the client's database name
  std::string text() const;  // without the password, for logs
};

// postgres://[user[:password]@]host[:port][/database]; percent-escapes decoded.
std::optional<PgUrl> parse_pg_url(std::string_view url, std::string* error);

}  // namespace pgshard::config
