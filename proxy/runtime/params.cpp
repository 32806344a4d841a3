// Client settings that must follow the client from one server connection to the next.
#include "proxy/runtime/params.hpp"

#include <cctype>
#include <utility>

#include "proxy/pool/server_conn.hpp"

namespace pgshard::runtime {

bool is_synced_startup_parameter(std::string_view n) {
  // Everything but the protocol's own keys is a setting (PostgreSQL applies any GUC given in
  // a startup packet; drivers send statement_timeout, work_mem, search_path... this way).
  return n != "user" && n != "database" && n != "options" && n != "replication" &&
         !n.starts_with("_pq_.");
}

namespace {

// PostgreSQL's encoding names by their letters and digits in lower case (encnames.c).
constexpr std::pair<std::string_view, std::string_view> kEncodingAliases[] = {
    {"unicode", "UTF8"},
    {"utf8", "UTF8"},
    {"sqlascii", "SQL_ASCII"},
    {"latin1", "LATIN1"},
    {"latin2", "LATIN2"},
    {"latin3", "LATIN3"},
    {"latin4", "LATIN4"},
    {"latin5", "LATIN5"},
    {"latin6", "LATIN6"},
    {"latin7", "LATIN7"},
    {"latin8", "LATIN8"},
    {"latin9", "LATIN9"},
    {"latin10", "LATIN10"},
    {"iso88591", "LATIN1"},
    {"iso88592", "LATIN2"},
    {"iso88593", "LATIN3"},
    {"iso88594", "LATIN4"},
    {"iso88599", "LATIN5"},
    {"iso885910", "LATIN6"},
    {"iso885913", "LATIN7"},
    {"iso885914", "LATIN8"},
    {"iso885915", "LATIN9"},
    {"iso885916", "LATIN10"},
    {"iso88595", "ISO_8859_5"},
    {"iso88596", "ISO_8859_6"},
    {"iso88597", "ISO_8859_7"},
    {"iso88598", "ISO_8859_8"},
    {"eucjp", "EUC_JP"},
    {"euccn", "EUC_CN"},
    {"euckr", "EUC_KR"},
    {"euctw", "EUC_TW"},
    {"eucjis2004", "EUC_JIS_2004"},
    {"sjis", "SJIS"},
    {"shiftjis", "SJIS"},
    {"mskanji", "SJIS"},
    {"win932", "SJIS"},
    {"windows932", "SJIS"},
    {"shiftjis2004", "SHIFT_JIS_2004"},
    {"big5", "BIG5"},
    {"win950", "BIG5"},
    {"windows950", "BIG5"},
    {"gbk", "GBK"},
    {"win936", "GBK"},
    {"windows936", "GBK"},
    {"gb18030", "GB18030"},
    {"uhc", "UHC"},
    {"win949", "UHC"},
    {"windows949", "UHC"},
    {"johab", "JOHAB"},
    {"koi8", "KOI8R"},
    {"koi8r", "KOI8R"},
    {"koi8u", "KOI8U"},
    {"muleinternal", "MULE_INTERNAL"},
    {"win", "WIN1251"},
    {"win866", "WIN866"},
    {"windows866", "WIN866"},
    {"alt", "WIN866"},
    {"win874", "WIN874"},
    {"windows874", "WIN874"},
    {"abc", "WIN1258"},
    {"tcvn", "WIN1258"},
    {"tcvn5712", "WIN1258"},
    {"vscii", "WIN1258"},
    {"win1250", "WIN1250"},
    {"win1251", "WIN1251"},
    {"win1252", "WIN1252"},
    {"win1253", "WIN1253"},
    {"win1254", "WIN1254"},
    {"win1255", "WIN1255"},
    {"win1256", "WIN1256"},
    {"win1257", "WIN1257"},
    {"win1258", "WIN1258"},
    {"windows1250", "WIN1250"},
    {"windows1251", "WIN1251"},
    {"windows1252", "WIN1252"},
    {"windows1253", "WIN1253"},
    {"windows1254", "WIN1254"},
    {"windows1255", "WIN1255"},
    {"windows1256", "WIN1256"},
    {"windows1257", "WIN1257"},
    {"windows1258", "WIN1258"}};

// The letters and digits of an encoding name, in lower case: how encnames.c compares them.
std::string encoding_key(std::string_view name) {
  std::string clean;
  for (char c : name)
    if (std::isalnum(static_cast<unsigned char>(c)))
      clean.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  return clean;
}

}  // namespace

std::string canonical_encoding(std::string_view name) {
  // PostgreSQL's spelling of an encoding name; unknown names are left for the server to
  // refuse.
  const auto key = encoding_key(name);
  for (const auto& [alias, pg] : kEncodingAliases)
    if (alias == key) return std::string(pg);
  return std::string(name);
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

}  // namespace pgshard::runtime
