// Client settings that must follow the client from one server connection to the next.
#include "proxy/session/params.hpp"

#include <cctype>

#include "proxy/pool/server_conn.hpp"

namespace pgshard::session {

bool is_synced_startup_parameter(std::string_view n) {
  static constexpr std::string_view kNames[] = {
      "application_name", "client_encoding",    "DateStyle", "TimeZone", "IntervalStyle",
      "search_path",      "extra_float_digits", "datestyle", "timezone", "intervalstyle"};
  for (auto k : kNames)
    if (k == n) return true;
  return false;
}

std::optional<std::string> parse_options(std::string_view s, Params& out) {
  // Split on unescaped whitespace (postmaster.c pg_split_opts).
  std::vector<std::string> words;
  std::string cur;
  bool have = false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (have) words.push_back(cur);
      cur.clear();
      have = false;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur.push_back(s[++i]);
      have = true;
    } else {
      cur.push_back(c);
      have = true;
    }
  }
  if (have) words.push_back(cur);
  for (std::size_t i = 0; i < words.size(); ++i) {
    std::string setting;
    if (words[i] == "-c" && i + 1 < words.size()) {
      setting = words[++i];
    } else if (words[i].starts_with("-c")) {
      setting = words[i].substr(2);
    } else if (words[i].starts_with("--")) {
      setting = words[i].substr(2);
    } else {
      return "unsupported startup option \"" + words[i] + "\" (only -c name=value)";
    }
    auto eq = setting.find('=');
    if (eq == std::string::npos || eq == 0)
      return "invalid startup option \"" + setting + "\" (expected name=value)";
    std::string name = setting.substr(0, eq);
    for (char& ch : name)
      if (ch == '-') ch = '_';
    for (char ch : name)
      if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '.')
        return "invalid parameter name \"" + name + "\"";
    out[name] = setting.substr(eq + 1);
  }
  return std::nullopt;
}

uint64_t fingerprint(const Params& p) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over "k\0v\0..."
  for (const auto& [k, v] : p) {
    for (std::string_view part : {std::string_view(k), std::string_view(v)}) {
      for (unsigned char c : part) h = (h ^ c) * 1099511628211ULL;
      h = (h ^ 0xff) * 1099511628211ULL;
    }
  }
  return h == 0 ? 1 : h;
}

std::string quote_literal(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'') out.push_back('\'');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string quote_ident(std::string_view v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string sync_statements(const Params& client, const Params& server) {
  std::string sql;
  for (const auto& [name, value] : client) {
    auto it = server.find(name);
    if (it != server.end() && it->second == value) continue;
    // set_config takes the value as SHOW prints it, lists (search_path) included.
    sql += "SELECT pg_catalog.set_config(" + quote_literal(name) + ", " + quote_literal(value) +
           ", false);";
  }
  for (const auto& [name, value] : server) {
    if (client.contains(name) || pool::is_reported_parameter(name)) continue;
    sql += "RESET " + quote_ident(name) + ";";
  }
  return sql;
}

}  // namespace pgshard::session
