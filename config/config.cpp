// The shard map and proxy settings: YAML -> plain immutable structs, validated with file:line.
#include "config/config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <set>
#include <sstream>

#include "config/checker.hpp"

namespace pgshard::config {

namespace {

using detail::Checker;

void load_listen(Checker& c, const YAML::Node& n, Listen& out) {
  if (!c.mapping(n, "listen",
                 {"host", "port", "workers", "max_client_conn", "max_startups", "max_message_size",
                  "max_buffered_bytes"}))
    return;
  if (n["host"]) out.host = c.string(n["host"], "listen.host").value_or(out.host);
  if (n["port"]) out.port = c.integer<uint16_t>(n["port"], "listen.port", 1, 65535).value_or(0);
  if (n["workers"])
    out.workers = c.integer<int>(n["workers"], "listen.workers", 0, 256).value_or(0);
  if (n["max_client_conn"])
    out.max_client_conn =
        c.integer<int>(n["max_client_conn"], "listen.max_client_conn", 1, 1000000).value_or(1);
  if (n["max_startups"])
    out.max_startups =
        c.integer<int>(n["max_startups"], "listen.max_startups", 1, 1000000).value_or(1);
  if (n["max_message_size"])
    out.max_message_size =
        c.integer<std::size_t>(n["max_message_size"], "listen.max_message_size", 1024, 0x3fffffff)
            .value_or(out.max_message_size);
  if (n["max_buffered_bytes"])
    out.max_buffered_bytes =
        c.integer<std::size_t>(n["max_buffered_bytes"], "listen.max_buffered_bytes", 1 << 20,
                               1ull << 40)
            .value_or(out.max_buffered_bytes);
}

void load_tls(Checker& c, const YAML::Node& n, Tls& out) {
  if (!c.mapping(n, "tls", {"mode", "cert", "key"})) return;
  if (n["mode"])
    out.mode = c.choice<TlsMode>(n["mode"], "tls.mode",
                                 {{"disable", TlsMode::kDisable},
                                  {"allow", TlsMode::kAllow},
                                  {"prefer", TlsMode::kPrefer},
                                  {"require", TlsMode::kRequire}})
                   .value_or(out.mode);
  if (n["cert"]) out.cert = c.string(n["cert"], "tls.cert").value_or("");
  if (n["key"]) out.key = c.string(n["key"], "tls.key").value_or("");
  if (out.mode != TlsMode::kDisable && (out.cert.empty() || out.key.empty()))
    c.fail(n, "tls.cert and tls.key are required unless tls.mode is disable");
}

void load_user(Checker& c, const YAML::Node& n, User& u) {
  if (!c.mapping(n, "user",
                 {"name", "password", "auth", "pool_mode", "partial_results", "read_from"}))
    return;
  if (n["read_from"]) u.read_from = detail::load_read_from(c, n["read_from"], "user read_from");
  if (n["partial_results"])
    u.partial_results = c.choice<bool>(n["partial_results"], "user partial_results",
                                       {{"true", true}, {"false", false}});
  if (!n["name"])
    c.fail(n, "user needs a name");
  else
    u.name = c.string(n["name"], "user name").value_or("");
  if (n["auth"])
    u.auth = c.choice<AuthMethod>(n["auth"], "user auth",
                                  {{"scram-sha-256", AuthMethod::kScram},
                                   {"md5", AuthMethod::kMd5},
                                   {"trust", AuthMethod::kTrust}})
                 .value_or(u.auth);
  if (n["pool_mode"])
    u.pool_mode = c.choice<PoolMode>(
                       n["pool_mode"], "user pool_mode",
                       {{"session", PoolMode::kSession}, {"transaction", PoolMode::kTransaction}})
                      .value_or(u.pool_mode);
  std::string password;
  if (n["password"]) password = c.string(n["password"], "user password").value_or("");
  if (password.starts_with("SCRAM-SHA-256$")) {
    u.scram = protocol::ScramSecret::parse(password);
    if (!u.scram) c.fail(n["password"], "malformed SCRAM-SHA-256 verifier for user " + u.name);
    if (u.auth == AuthMethod::kMd5)
      c.fail(n["password"], "user " + u.name + ": md5 auth needs a plaintext or md5 password");
  } else if (password.size() == 35 && password.starts_with("md5")) {
    u.md5 = password;
    if (u.auth == AuthMethod::kScram)
      c.fail(n["password"],
             "user " + u.name + ": scram-sha-256 auth needs a plaintext or SCRAM password");
  } else if (!password.empty()) {
    u.plaintext = password;
    u.md5 = protocol::md5_stored(u.name, password);
    u.scram = protocol::ScramSecret::from_password(password, protocol::random_bytes(16), 4096);
  } else if (u.auth != AuthMethod::kTrust) {
    c.fail(n, "user " + u.name + " needs a password (or auth: trust)");
  }
}

void load_shard(Checker& c, const YAML::Node& n, Shard& s) {
  if (!c.mapping(n, "shard",
                 {"name", "primary", "replicas", "hosts", "pool_size", "weight", "read_from"}))
    return;
  if (n["weight"]) s.weight = c.integer<int>(n["weight"], "shard weight", 1, 100).value_or(1);
  if (!n["name"])
    c.fail(n, "shard needs a name");
  else
    s.name = c.string(n["name"], "shard name").value_or("");
  auto url = [&](const YAML::Node& u, const std::string& what) -> std::optional<PgUrl> {
    auto text = c.string(u, what);
    if (!text) return std::nullopt;
    std::string err;
    auto parsed = parse_pg_url(*text, &err);
    if (!parsed) c.fail(u, what + ": " + err);
    return parsed;
  };
  // `hosts: [url...]` is another spelling of primary + replicas: the first is where writes
  // go until the health checks find the host out of recovery (failover), the rest replicas.
  if (auto h = n["hosts"]) {
    if (n["primary"] || n["replicas"])
      c.fail(h, "shard " + s.name + ": give either hosts or primary/replicas, not both");
    else if (!h.IsSequence() || h.size() == 0)
      c.fail(h, "shard " + s.name + ": hosts must be a non-empty list of URLs");
    else
      for (std::size_t i = 0; i < h.size(); ++i)
        if (auto u = url(h[i], "shard " + s.name + " host")) {
          if (i == 0)
            s.primary = *u;
          else
            s.replicas.push_back(*u);
        }
  } else if (!n["primary"]) {
    c.fail(n, "shard " + s.name + " needs a primary URL (or hosts)");
  } else if (auto u = url(n["primary"], "shard " + s.name + " primary")) {
    s.primary = *u;
  }
  if (auto r = n["replicas"]; r && !n["hosts"]) {
    if (!r.IsSequence())
      c.fail(r, "replicas must be a list of URLs");
    else
      for (const auto& item : r)
        if (auto u = url(item, "shard " + s.name + " replica")) s.replicas.push_back(*u);
  }
  if (n["pool_size"])
    s.pool_size = c.integer<int>(n["pool_size"], "shard pool_size", 1, 10000).value_or(1);
  if (n["read_from"]) {
    s.read_from = detail::load_read_from(c, n["read_from"], "shard " + s.name + " read_from");
    if (s.read_from == ReadFrom::kReplicas && s.replicas.empty())
      c.fail(n["read_from"], "shard " + s.name + ": read_from replicas needs replicas");
  }
}

void load_sharded_table(Checker& c, const YAML::Node& n, ShardedTable& t) {
  if (!c.mapping(n, "sharded table",
                 {"table", "column", "type", "function", "vnodes", "ranges", "lists", "default",
                  "directory", "buckets", "bucket_shards"}))
    return;
  if (!n["table"] || !n["column"]) {
    c.fail(n, "sharded table needs table and column");
    return;
  }
  auto name = c.string(n["table"], "table").value_or("");
  if (auto dot = name.find('.'); dot != std::string::npos) {
    t.schema = name.substr(0, dot);
    t.table = name.substr(dot + 1);
  } else {
    t.table = name;
  }
  t.column = c.string(n["column"], "column").value_or("");
  if (n["type"])
    t.type = c.choice<KeyType>(n["type"], "type",
                               {{"bigint", KeyType::kInt8},
                                {"int8", KeyType::kInt8},
                                {"integer", KeyType::kInt4},
                                {"int", KeyType::kInt4},
                                {"int4", KeyType::kInt4},
                                {"smallint", KeyType::kInt2},
                                {"int2", KeyType::kInt2},
                                {"text", KeyType::kText},
                                {"varchar", KeyType::kVarchar},
                                {"uuid", KeyType::kUuid}})
                 .value_or(t.type);
  if (n["function"])
    t.function = c.choice<ShardFunction>(n["function"], "function",
                                         {{"hash", ShardFunction::kHash},
                                          {"ring", ShardFunction::kRing},
                                          {"range", ShardFunction::kRange},
                                          {"list", ShardFunction::kList},
                                          {"directory", ShardFunction::kDirectory}})
                     .value_or(t.function);
  if (n["vnodes"]) t.vnodes = c.integer<int>(n["vnodes"], "vnodes", 1, 10000).value_or(160);
}

void load_timeouts(Checker& c, const YAML::Node& n, Timeouts& t) {
  if (!c.mapping(n, "timeouts",
                 {"client_startup", "client_startup_packet", "client_idle", "connect", "pool_wait",
                  "shutdown", "server_idle", "shard_statement", "deadlock"}))
    return;
  auto set = [&](const char* key, Millis& field) {
    if (!n[key]) return;
    auto s = c.string(n[key], std::string("timeouts.") + key);
    if (!s) return;
    auto d = parse_duration(*s);
    if (!d)
      c.fail(n[key],
             std::string("timeouts.") + key + ": bad duration '" + *s + "' (use 5s, 200ms, 2min)");
    else
      field = *d;
  };
  set("client_startup", t.client_startup);
  set("client_startup_packet", t.client_startup_packet);
  set("client_idle", t.client_idle);
  set("connect", t.connect);
  set("pool_wait", t.pool_wait);
  set("shutdown", t.shutdown);
  set("server_idle", t.server_idle);
  set("shard_statement", t.shard_statement);
  set("deadlock", t.deadlock);
}

// A credential given in the file (or ${NAME}) under `key`, or read from the file named under
// `key`_file (a mounted Secret; one trailing line break dropped). Never both.
void load_secret(Checker& c, const YAML::Node& n, const std::string& key, std::string& out) {
  const std::string what = "admin." + key;
  const auto inline_value = n[key];
  const auto file = n[key + "_file"];
  if (inline_value && file) {
    c.fail(file, what + " and " + what + "_file are exclusive");
    return;
  }
  if (inline_value) out = c.string(inline_value, what).value_or("");
  if (file) {
    const auto path = c.string(file, what + "_file").value_or("");
    std::ifstream in(path, std::ios::binary);
    if (!in) {
      c.fail(file, what + "_file: cannot read '" + path + "'");
      return;
    }
    std::stringstream ss;
    ss << in.rdbuf();
    out = ss.str();
    if (out.ends_with('\n')) out.pop_back();
    if (out.ends_with('\r')) out.pop_back();
  }
  const auto& at = inline_value ? inline_value : file;
  const bool control = std::any_of(out.begin(), out.end(), [](char ch) {
    return static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f;
  });
  if ((inline_value || file) && (out.empty() || control))
    c.fail(at, what + " must be a non-empty value without control characters or line breaks");
}

// The HTTP endpoint's limits, credentials and TLS (admin.http_*).
void load_admin_http(Checker& c, const YAML::Node& n, Admin& out) {
  if (n["http_max_connections"])
    out.http_max_connections =
        c.integer<int>(n["http_max_connections"], "admin.http_max_connections", 1, 10000)
            .value_or(out.http_max_connections);
  if (auto t = n["http_idle_timeout"]) {
    const auto text = c.string(t, "admin.http_idle_timeout").value_or("");
    const auto d = parse_duration(text);
    if (!d || d->count() < 100 || *d > std::chrono::minutes(10))
      c.fail(t,
             "admin.http_idle_timeout must be a duration from 100ms to 10min, got '" + text + "'");
    else
      out.http_idle_timeout = *d;
  }
  load_secret(c, n, "http_auth_token", out.http_auth_token);
  if (!out.http_auth_token.empty() && out.http_auth_token.find(' ') != std::string::npos)
    c.fail(n["http_auth_token"] ? n["http_auth_token"] : n["http_auth_token_file"],
           "admin.http_auth_token must not contain spaces");
  load_secret(c, n, "http_basic_auth", out.http_basic_auth);
  const auto colon = out.http_basic_auth.find(':');
  if (!out.http_basic_auth.empty() && (colon == std::string::npos || colon == 0))
    c.fail(n["http_basic_auth"] ? n["http_basic_auth"] : n["http_basic_auth_file"],
           "admin.http_basic_auth must be user:password");
  if (n["http_tls_cert"])
    out.http_tls_cert = c.string(n["http_tls_cert"], "admin.http_tls_cert").value_or("");
  if (n["http_tls_key"])
    out.http_tls_key = c.string(n["http_tls_key"], "admin.http_tls_key").value_or("");
  if (out.http_tls_cert.empty() != out.http_tls_key.empty())
    c.fail(n, "admin.http_tls_cert and admin.http_tls_key go together");
}

void load_admin(Checker& c, const YAML::Node& n, Admin& out) {
  if (!c.mapping(n, "admin",
                 {"users", "stats_users", "http", "stats", "http_max_connections",
                  "http_idle_timeout", "http_auth_token", "http_auth_token_file", "http_basic_auth",
                  "http_basic_auth_file", "http_tls_cert", "http_tls_key"}))
    return;
  load_admin_http(c, n, out);
  if (n["stats"])
    out.stats = c.choice<bool>(n["stats"], "admin.stats", {{"true", true}, {"false", false}})
                    .value_or(true);
  auto names = [&](const char* key, std::vector<std::string>& into) {
    auto list = n[key];
    if (!list) return;
    if (!list.IsSequence()) {
      c.fail(list, std::string("admin.") + key + " must be a list of user names");
      return;
    }
    for (const auto& item : list)
      if (auto name = c.string(item, std::string("admin.") + key)) into.push_back(*name);
  };
  names("users", out.users);
  names("stats_users", out.stats_users);
  if (auto h = n["http"]) {
    auto text = c.string(h, "admin.http").value_or("");
    const auto colon = text.rfind(':');
    int port = 0;
    if (colon != std::string::npos) {
      auto [p, ec] = std::from_chars(text.data() + colon + 1, text.data() + text.size(), port);
      if (ec != std::errc() || p != text.data() + text.size()) port = 0;
    }
    if (colon == std::string::npos || colon == 0 || port < 1 || port > 65535)
      c.fail(h, "admin.http must be host:port, got '" + text + "'");
    else {
      out.http_host = text.substr(0, colon);
      out.http_port = static_cast<uint16_t>(port);
    }
  }
}

// ring / range / list placement of one table; needs the shard list.
void load_placement(Checker& c, const YAML::Node& n, ShardedTable& t, const Config& cfg) {
  auto shard_named = [&](const YAML::Node& v) {
    auto name = c.string(v, "shard").value_or("");
    int i = cfg.shard_index(name);
    if (i < 0) c.fail(v, "unknown shard '" + name + "'");
    return i;
  };
  const bool integer =
      t.type == KeyType::kInt2 || t.type == KeyType::kInt4 || t.type == KeyType::kInt8;
  if (n["default"]) {
    if (t.function != ShardFunction::kRange && t.function != ShardFunction::kList)
      c.fail(n["default"], "default applies to range and list tables only");
    t.default_shard = shard_named(n["default"]);
  }
  if (static_cast<bool>(n["ranges"]) != (t.function == ShardFunction::kRange))
    c.fail(n, "table " + t.table + ": ranges go with function: range (and it needs them)");
  if (static_cast<bool>(n["lists"]) != (t.function == ShardFunction::kList))
    c.fail(n, "table " + t.table + ": lists go with function: list (and it needs them)");
  if (t.function == ShardFunction::kRing) t.ring = build_ring(cfg.shards, t.vnodes);
  if (static_cast<bool>(n["directory"]) != (t.function == ShardFunction::kDirectory))
    c.fail(n, "table " + t.table + ": directory goes with function: directory (and it needs it)");
  if (auto d = n["directory"]; d && c.mapping(d, "directory", {"url", "table", "ttl"})) {
    if (!d["url"]) {
      c.fail(d, "directory needs url: postgres://... of the database holding the lookup table");
    } else if (auto text = c.string(d["url"], "directory url")) {
      std::string err;
      t.directory_url = parse_pg_url(*text, &err);
      if (!t.directory_url) c.fail(d["url"], "directory url: " + err);
    }
    if (d["table"])
      t.directory_table = c.string(d["table"], "directory table").value_or(t.directory_table);
    if (d["ttl"]) {
      auto ttl = parse_duration(c.string(d["ttl"], "directory ttl").value_or(""));
      if (!ttl)
        c.fail(d["ttl"], "directory ttl: bad duration");
      else
        t.directory_ttl = *ttl;
    }
  }
  if (auto r = n["ranges"]; r && t.function == ShardFunction::kRange) {
    if (!integer) c.fail(n, "range sharding needs an integer key type");
    if (!r.IsSequence() || r.size() == 0) {
      c.fail(r, "ranges must be a non-empty list of { shard, from, to }");
      return;
    }
    for (const auto& item : r) {
      if (!c.mapping(item, "range", {"shard", "from", "to"})) continue;
      if (!item["shard"] || !item["from"] || !item["to"]) {
        c.fail(item, "a range needs shard, from and to");
        continue;
      }
      RangeBound b;
      b.shard = shard_named(item["shard"]);
      b.from = c.integer<int64_t>(item["from"], "from", INT64_MIN, INT64_MAX).value_or(0);
      b.to = c.integer<int64_t>(item["to"], "to", INT64_MIN, INT64_MAX).value_or(0);
      if (b.from >= b.to) c.fail(item, "range from must be below to (to is exclusive)");
      t.ranges.push_back(b);
    }
    std::sort(t.ranges.begin(), t.ranges.end(),
              [](const RangeBound& a, const RangeBound& b) { return a.from < b.from; });
    for (std::size_t i = 1; i < t.ranges.size(); ++i) {
      if (t.ranges[i].from < t.ranges[i - 1].to)
        c.fail(r, "table " + t.table + ": ranges overlap at " + std::to_string(t.ranges[i].from));
      else if (t.ranges[i].from > t.ranges[i - 1].to)
        c.fail(r, "table " + t.table + ": gap between ranges [" +
                      std::to_string(t.ranges[i - 1].to) + ", " + std::to_string(t.ranges[i].from) +
                      ")");
    }
  }
  if (auto l = n["lists"]; l && t.function == ShardFunction::kList) {
    if (!l.IsSequence() || l.size() == 0) {
      c.fail(l, "lists must be a non-empty list of { shard, values }");
      return;
    }
    for (const auto& item : l) {
      if (!c.mapping(item, "list", {"shard", "values"})) continue;
      if (!item["shard"] || !item["values"] || !item["values"].IsSequence()) {
        c.fail(item, "a list needs shard and values: [...]");
        continue;
      }
      int shard = shard_named(item["shard"]);
      for (const auto& v : item["values"]) {
        auto text = c.string(v, "list value").value_or("");
        auto key = canonical_key(t.type, text);
        for (const auto& [k, s] : t.lists)
          if (k == key) c.fail(v, "value '" + text + "' is listed twice");
        t.lists.emplace_back(key, shard);
      }
    }
    std::sort(t.lists.begin(), t.lists.end());
  }
}

std::shared_ptr<const Config> build(const YAML::Node& root, const std::string& file) {
  Checker c(file);
  auto cfg = std::make_shared<Config>();
  cfg->path = file;
  if (!c.mapping(root, "the top level",
                 {"listen",
                  "tls",
                  "users",
                  "shards",
                  "sharded_tables",
                  "reference_tables",
                  "unsharded",
                  "timeouts",
                  "log_level",
                  "router",
                  "partial_results",
                  "two_phase_commit",
                  "two_phase_log",
                  "admin",
                  "log_format",
                  "node_id",
                  "atomic_visibility",
                  "read_from",
                  "load_balance",
                  "read_consistency",
                  "health",
                  "max_replica_lag",
                  "read_your_writes",
                  "read_safe_functions"})) {
    c.throw_if_failed();
  }
  if (root["admin"]) load_admin(c, root["admin"], cfg->admin);
  if (root["log_format"])
    cfg->log_json =
        c.choice<bool>(root["log_format"], "log_format", {{"text", false}, {"json", true}})
            .value_or(false);
  if (root["listen"]) load_listen(c, root["listen"], cfg->listen);
  if (root["tls"]) load_tls(c, root["tls"], cfg->tls);
  if (root["timeouts"]) load_timeouts(c, root["timeouts"], cfg->timeouts);
  detail::load_replication(c, root, cfg->replication);
  if (auto r = root["router"];
      r && c.mapping(r, "router", {"cache_size", "parse"}) && r["cache_size"])
    cfg->router_cache_size =
        c.integer<std::size_t>(r["cache_size"], "router.cache_size", 0, 10000000).value_or(10000);
  if (auto r = root["router"]; r && r.IsMap() && r["parse"])
    cfg->router_parse =
        c.choice<bool>(r["parse"], "router.parse", {{"true", true}, {"false", false}})
            .value_or(true);
  if (root["two_phase_commit"])
    cfg->two_phase_commit = c.choice<bool>(root["two_phase_commit"], "two_phase_commit",
                                           {{"true", true}, {"false", false}})
                                .value_or(true);
  if (root["atomic_visibility"]) {
    const int v = c.choice<int>(root["atomic_visibility"], "atomic_visibility",
                                {{"true", 1}, {"false", 0}, {"cluster", 2}})
                      .value_or(1);
    cfg->atomic_visibility = v != 0;
    cfg->visibility_cluster = v == 2;
  }
  if (root["node_id"])
    cfg->node_id = c.integer<int>(root["node_id"], "node_id", 0, 1023).value_or(-1);
  if (root["two_phase_log"])
    cfg->two_phase_log = c.string(root["two_phase_log"], "two_phase_log").value_or("pgshard-2pc");
  if (root["partial_results"])
    cfg->partial_results = c.choice<bool>(root["partial_results"], "partial_results",
                                          {{"true", true}, {"false", false}})
                               .value_or(false);
  if (root["log_level"])
    cfg->log_level = c.choice<std::string>(root["log_level"], "log_level",
                                           {{"trace", "trace"},
                                            {"debug", "debug"},
                                            {"info", "info"},
                                            {"warn", "warn"},
                                            {"error", "error"}})
                         .value_or("info");

  std::set<std::string> names;
  if (auto users = root["users"]; !users || !users.IsSequence() || users.size() == 0) {
    c.fail(users ? users : root, "users must be a non-empty list");
  } else {
    for (const auto& n : users) {
      User u;
      load_user(c, n, u);
      if (!u.name.empty() && !names.insert(u.name).second) c.fail(n, "duplicate user " + u.name);
      cfg->users.push_back(std::move(u));
    }
  }
  if (auto a = root["admin"]; a && a.IsMap())
    for (const auto* key : {"users", "stats_users"})
      if (auto list = a[key]; list && list.IsSequence())
        for (const auto& item : list)
          if (item.IsScalar() && !names.count(item.Scalar()))
            c.fail(item, "admin." + std::string(key) + ": '" + item.Scalar() +
                             "' is not one of the users (the console logs in as them)");

  names.clear();
  if (auto shards = root["shards"]; !shards || !shards.IsSequence() || shards.size() == 0) {
    c.fail(shards ? shards : root, "shards must be a non-empty list");
  } else {
    for (const auto& n : shards) {
      Shard s;
      load_shard(c, n, s);
      if (!s.name.empty() && !names.insert(s.name).second) c.fail(n, "duplicate shard " + s.name);
      cfg->shards.push_back(std::move(s));
    }
  }

  if (auto tables = root["sharded_tables"]) {
    if (!tables.IsSequence())
      c.fail(tables, "sharded_tables must be a list");
    else
      for (const auto& n : tables) {
        ShardedTable t;
        load_sharded_table(c, n, t);
        load_placement(c, n, t, *cfg);
        detail::load_buckets(c, n, t, *cfg);
        for (const auto& other : cfg->sharded_tables)
          if (other.table == t.table && other.schema == t.schema)
            c.fail(n, "table " + t.table + " is listed twice in sharded_tables");
        cfg->sharded_tables.push_back(std::move(t));
      }
  }
  if (auto refs = root["reference_tables"]) {
    if (!refs.IsSequence())
      c.fail(refs, "reference_tables must be a list of table names");
    else
      for (const auto& n : refs)
        if (auto s = c.string(n, "reference table")) {
          for (const auto& t : cfg->sharded_tables)
            if (t.table == *s) c.fail(n, "table " + *s + " is both sharded and a reference table");
          cfg->reference_tables.push_back(*s);
        }
  }
  if (auto u = root["unsharded"]) {
    if (u.IsMap()) {
      if (c.mapping(u, "unsharded", {"shard"}) && u["shard"]) {
        auto name = c.string(u["shard"], "unsharded.shard").value_or("");
        cfg->unsharded.policy = Unsharded::Policy::kShard;
        cfg->unsharded.shard = cfg->shard_index(name);
        if (cfg->unsharded.shard < 0)
          c.fail(u["shard"], "unsharded.shard names unknown shard '" + name + "'");
      }
    } else {
      cfg->unsharded.policy = c.choice<Unsharded::Policy>(u, "unsharded",
                                                          {{"reject", Unsharded::Policy::kReject},
                                                           {"all", Unsharded::Policy::kAll}})
                                  .value_or(Unsharded::Policy::kReject);
    }
  }
  c.throw_if_failed();
  return cfg;
}

}  // namespace

const char* to_string(TlsMode m) {
  switch (m) {
    case TlsMode::kDisable:
      return "disable";
    case TlsMode::kAllow:
      return "allow";
    case TlsMode::kPrefer:
      return "prefer";
    case TlsMode::kRequire:
      return "require";
  }
  return "?";
}

const char* to_string(PoolMode m) {
  return m == PoolMode::kSession ? "session" : "transaction";
}

const char* to_string(AuthMethod m) {
  switch (m) {
    case AuthMethod::kScram:
      return "scram-sha-256";
    case AuthMethod::kMd5:
      return "md5";
    case AuthMethod::kTrust:
      return "trust";
  }
  return "?";
}

const char* to_string(KeyType t) {
  switch (t) {
    case KeyType::kInt2:
      return "smallint";
    case KeyType::kInt4:
      return "integer";
    case KeyType::kInt8:
      return "bigint";
    case KeyType::kText:
      return "text";
    case KeyType::kVarchar:
      return "varchar";
    case KeyType::kUuid:
      return "uuid";
  }
  return "?";
}

const char* to_string(ShardFunction f) {
  switch (f) {
    case ShardFunction::kHash:
      return "hash";
    case ShardFunction::kRing:
      return "ring";
    case ShardFunction::kRange:
      return "range";
    case ShardFunction::kList:
      return "list";
    case ShardFunction::kDirectory:
      return "directory";
  }
  return "?";
}

const User* Config::find_user(std::string_view name) const {
  for (const auto& u : users)
    if (u.name == name) return &u;
  return nullptr;
}

std::vector<std::string> reload_refusals(const Config& a, const Config& b) {
  std::vector<std::string> out;
  auto differs = [&](bool changed, std::string what) {
    if (changed) out.push_back(std::move(what));
  };
  auto url = [](const PgUrl& u) { return u.text() + "\n" + u.password; };
  differs(a.listen.host != b.listen.host || a.listen.port != b.listen.port,
          "listen address " + a.listen.host + ":" + std::to_string(a.listen.port) + " -> " +
              b.listen.host + ":" + std::to_string(b.listen.port));
  differs(a.listen.workers != b.listen.workers, "listen.workers " +
                                                    std::to_string(a.listen.workers) + " -> " +
                                                    std::to_string(b.listen.workers));
  differs(a.listen.max_message_size != b.listen.max_message_size, "listen.max_message_size");
  differs(a.tls.mode != b.tls.mode,
          std::string("tls.mode ") + to_string(a.tls.mode) + " -> " + to_string(b.tls.mode));
  if (a.shards.size() != b.shards.size()) {
    out.push_back("the number of shards " + std::to_string(a.shards.size()) + " -> " +
                  std::to_string(b.shards.size()) + " (rows would move: reshard)");
  } else {
    for (std::size_t i = 0; i < a.shards.size(); ++i) {
      const auto &x = a.shards[i], &y = b.shards[i];
      differs(x.name != y.name, "shard " + std::to_string(i) + " renamed or reordered: " + x.name +
                                    " -> " + y.name + " (rows would move: reshard)");
      differs(url(x.primary) != url(y.primary),
              "shard " + x.name + " primary " + x.primary.text() + " -> " + y.primary.text());
      differs(x.replicas.size() != y.replicas.size(), "shard " + x.name + " replicas");
      differs(x.weight != y.weight, "shard " + x.name + " weight (ring placement would move rows)");
    }
  }
  for (const auto& x : a.sharded_tables) {
    const ShardedTable* y = nullptr;
    for (const auto& t : b.sharded_tables)
      if (t.qualified_name() == x.qualified_name()) y = &t;
    if (!y) {
      out.push_back("sharded table " + x.qualified_name() + " removed (reshard)");
      continue;
    }
    const std::string n = "sharded table " + x.qualified_name() + ": ";
    differs(x.column != y->column,
            n + "key column " + x.column + " -> " + y->column + " (reshard)");
    differs(x.type != y->type,
            n + "key type " + to_string(x.type) + " -> " + to_string(y->type) + " (reshard)");
    differs(x.function != y->function, n + "function " + to_string(x.function) + " -> " +
                                           to_string(y->function) + " (reshard)");
    differs(x.vnodes != y->vnodes, n + "vnodes (reshard)");
    differs(x.buckets != y->buckets || x.bucket_shard != y->bucket_shard,
            n + "buckets or bucket_shards (rows would move: reshard)");
    bool ranges = x.ranges.size() != y->ranges.size();
    for (std::size_t i = 0; !ranges && i < x.ranges.size(); ++i)
      ranges = x.ranges[i].from != y->ranges[i].from || x.ranges[i].to != y->ranges[i].to ||
               x.ranges[i].shard != y->ranges[i].shard;
    differs(ranges, n + "ranges (rows would move: reshard)");
    differs(x.lists != y->lists, n + "lists (rows would move: reshard)");
    differs(x.default_shard != y->default_shard, n + "default shard (reshard)");
    differs(x.directory_url.has_value() != y->directory_url.has_value() ||
                (x.directory_url && url(*x.directory_url) != url(*y->directory_url)) ||
                x.directory_table != y->directory_table,
            n + "directory");
  }
  for (const auto& t : b.sharded_tables) {
    bool known = false;
    for (const auto& x : a.sharded_tables) known |= x.qualified_name() == t.qualified_name();
    differs(!known, "sharded table " + t.qualified_name() +
                        " added (its rows live where unsharded ones do: "
                        "reshard)");
  }
  for (const auto& r : a.reference_tables)
    differs(std::find(b.reference_tables.begin(), b.reference_tables.end(), r) ==
                b.reference_tables.end(),
            "reference table " + r + " removed");
  differs(a.unsharded.policy != b.unsharded.policy || a.unsharded.shard != b.unsharded.shard,
          "unsharded");
  differs(a.two_phase_commit != b.two_phase_commit || a.two_phase_log != b.two_phase_log,
          "two_phase_commit / two_phase_log");
  differs(a.router_cache_size != b.router_cache_size || a.router_parse != b.router_parse,
          "router settings");
  differs(a.admin.http_host != b.admin.http_host || a.admin.http_port != b.admin.http_port,
          "admin.http address");
  differs(a.admin.http_tls_cert != b.admin.http_tls_cert ||
              a.admin.http_tls_key != b.admin.http_tls_key,
          "admin.http_tls_cert / admin.http_tls_key");
  differs(a.log_json != b.log_json, "log_format");
  return out;
}

bool Admin::is_admin(std::string_view user) const {
  return std::find(users.begin(), users.end(), user) != users.end();
}

bool Admin::may_view(std::string_view user) const {
  return is_admin(user) ||
         std::find(stats_users.begin(), stats_users.end(), user) != stats_users.end();
}

int Config::shard_index(std::string_view name) const {
  for (std::size_t i = 0; i < shards.size(); ++i)
    if (shards[i].name == name) return static_cast<int>(i);
  return -1;
}

KeyType Config::default_key_type() const {
  return sharded_tables.empty() ? KeyType::kInt8 : sharded_tables.front().type;
}

std::vector<std::pair<uint64_t, int>> build_ring(const std::vector<Shard>& shards, int vnodes) {
  // Points are a 64-bit mix of "shard-name#n"; keys are placed by their PostgreSQL hash, so
  // both are uniform over the same space.
  std::vector<std::pair<uint64_t, int>> ring;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    const int points = vnodes * shards[i].weight;
    for (int v = 0; v < points; ++v) {
      uint64_t h = 1469598103934665603ULL;
      std::string label = shards[i].name + "#" + std::to_string(v);
      for (unsigned char ch : label) h = (h ^ ch) * 1099511628211ULL;
      h += 0x9e3779b97f4a7c15ULL;  // splitmix64 finaliser
      h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
      h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
      h ^= h >> 31;
      ring.emplace_back(h, static_cast<int>(i));
    }
  }
  std::sort(ring.begin(), ring.end());
  return ring;
}

std::string canonical_key(KeyType type, std::string_view text) {
  if (type == KeyType::kInt2 || type == KeyType::kInt4 || type == KeyType::kInt8) {
    std::string_view t = text;
    while (!t.empty() && t.front() == ' ') t.remove_prefix(1);
    while (!t.empty() && t.back() == ' ') t.remove_suffix(1);
    if (!t.empty() && t.front() == '+') t.remove_prefix(1);
    int64_t v = 0;
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec == std::errc() && p == t.data() + t.size()) return std::to_string(v);
  }
  return std::string(text);
}

std::optional<Millis> parse_duration(std::string_view text) {
  long long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || v < 0) return std::nullopt;
  std::string_view unit(p, static_cast<std::size_t>(text.data() + text.size() - p));
  while (unit.starts_with(' ')) unit.remove_prefix(1);
  if (unit.empty() || unit == "ms") return Millis(v);
  if (unit == "s") return Millis(v * 1000);
  if (unit == "min") return Millis(v * 60000);
  return std::nullopt;
}

// ${NAME} in the file is the environment variable NAME (passwords from a Kubernetes Secret,
// say); $${ is a literal ${. An unset variable is an error at its line.
std::string expand_environment(const std::string& text, const std::string& name) {
  std::string out;
  std::vector<std::string> errors;
  int line = 1;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') ++line;
    if (text.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 2;
      continue;
    }
    if (text.compare(i, 2, "${") != 0) {
      out += text[i];
      continue;
    }
    const auto end = text.find('}', i + 2);
    const std::string var = end == std::string::npos ? "" : text.substr(i + 2, end - i - 2);
    const bool valid = !var.empty() && !std::isdigit(static_cast<unsigned char>(var[0])) &&
                       std::all_of(var.begin(), var.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                       });
    if (!valid) {
      errors.push_back(name + ":" + std::to_string(line) +
                       ": ${ must name an environment variable: ${NAME} (write $${ for a literal)");
      out += text[i];
      continue;
    }
    const char* value = std::getenv(var.c_str());
    if (!value)
      errors.push_back(name + ":" + std::to_string(line) + ": environment variable " + var +
                       " is not set");
    else if (std::strchr(value, '\n'))
      errors.push_back(name + ":" + std::to_string(line) + ": environment variable " + var +
                       " holds a line break");
    else
      out += value;
    i = end;
  }
  if (!errors.empty()) {
    std::string all;
    for (const auto& e : errors) all += (all.empty() ? "" : "\n") + e;
    throw ConfigError(all);
  }
  return out;
}

std::shared_ptr<const Config> load_string(const std::string& text, const std::string& name) {
  YAML::Node root;
  const std::string yaml = expand_environment(text, name);
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(name + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  return build(root, name);
}

std::shared_ptr<const Config> load_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ":0: cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  return load_string(ss.str(), path);
}

}  // namespace pgshard::config
