// postgres:// connection URLs for shard primaries and replicas.
#include "config/url.hpp"

#include <charconv>

namespace pgshard::config {

namespace {
std::optional<std::string> percent_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) return std::nullopt;
    int v = 0;
    auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
    if (ec != std::errc() || p != s.data() + i + 3) return std::nullopt;
    out.push_back(static_cast<char>(v));
    i += 2;
  }
  return out;
}
}  // namespace

std::string PgUrl::text() const {
  std::string s = "postgres://";
  if (!user.empty()) s += user + "@";
  s += host + ":" + std::to_string(port);
  if (!database.empty()) s += "/" + database;
  return s;
}

std::optional<PgUrl> parse_pg_url(std::string_view url, std::string* error) {
  PgUrl u;
  for (std::string_view scheme : {"postgres://", "postgresql://"}) {
    if (url.starts_with(scheme)) {
      url.remove_prefix(scheme.size());
      goto scheme_ok;
    }
  }
  *error = "URL must start with postgres://";
  return std::nullopt;
scheme_ok:
  if (auto q = url.find('?'); q != url.npos) {
    *error = "URL query parameters are not supported";
    return std::nullopt;
  }
  if (auto at = url.rfind('@'); at != url.npos) {
    auto cred = url.substr(0, at);
    url.remove_prefix(at + 1);
    auto colon = cred.find(':');
    auto user = percent_decode(cred.substr(0, colon));
    auto pass = colon == cred.npos ? std::optional<std::string>("")
                                   : percent_decode(cred.substr(colon + 1));
    if (!user || !pass) {
      *error = "bad percent-escape in URL credentials";
      return std::nullopt;
    }
    u.user = *user;
    u.password = *pass;
  }
  auto slash = url.find('/');
  auto hostport = url.substr(0, slash);
  if (slash != url.npos) {
    auto db = percent_decode(url.substr(slash + 1));
    if (!db) {
      *error = "bad percent-escape in URL database";
      return std::nullopt;
    }
    u.database = *db;
  }
  auto colon = hostport.rfind(':');
  if (colon != hostport.npos && hostport.find(']') == hostport.npos) {
    auto port = hostport.substr(colon + 1);
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      *error = "bad port in URL";
      return std::nullopt;
    }
    u.port = static_cast<uint16_t>(v);
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) {
    *error = "URL has no host";
    return std::nullopt;
  }
  u.host = hostport;
  return u;
}

}  // namespace pgshard::config
