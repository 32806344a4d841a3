// The shard map loader: defaults, every section, and file:line errors for bad input.
#include "config/config.hpp"

#include <catch2/catch.hpp>

using namespace pgshard::config;

namespace {
const char* kGood = R"(listen: { host: 0.0.0.0, port: 7432, workers: 2, max_client_conn: 50 }
tls: { mode: prefer, cert: server.crt, key: server.key }
users:
  - { name: app, password: secret, pool_mode: transaction }
  - { name: ro, password: "md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", auth: md5, pool_mode: session }
  - { name: t, auth: trust }
shards:
  - name: s0
    primary: postgres://app:secret@10.0.0.1:5432/app
    replicas: [postgres://app:secret@10.0.0.2/app]
    pool_size: 20
  - { name: s1, primary: "postgres://app:p%40ss@db1/app" }
sharded_tables:
  - { table: orders, column: customer_id, type: bigint, function: hash }
  - { table: public.customers, column: id }
reference_tables: [countries]
unsharded: { shard: s1 }
timeouts: { connect: 2s, pool_wait: 500ms, client_idle: 1min }
)";

std::string error_of(const std::string& yaml) {
  try {
    load_string(yaml, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("a complete map loads with its values", "[config]") {
  auto c = load_string(kGood, "t.yaml");
  CHECK(c->listen.port == 7432);
  CHECK(c->node_id == -1);  // leased
  CHECK(c->listen.workers == 2);
  CHECK(c->listen.max_client_conn == 50);
  CHECK(c->tls.mode == TlsMode::kPrefer);
  REQUIRE(c->users.size() == 3);
  CHECK(c->users[0].scram);
  CHECK(c->users[0].plaintext == "secret");
  CHECK(c->users[1].auth == AuthMethod::kMd5);
  CHECK(c->users[1].pool_mode == PoolMode::kSession);
  CHECK(c->users[2].auth == AuthMethod::kTrust);
  REQUIRE(c->shards.size() == 2);
  CHECK(c->shards[0].primary.host == "10.0.0.1");
  CHECK(c->shards[0].replicas.size() == 1);
  CHECK(c->shards[0].replicas[0].port == 5432);
  CHECK(c->shards[1].primary.password == "p@ss");
  CHECK(c->shards[1].pool_size == 20);
  CHECK(c->sharded_tables[1].schema == "public");
  CHECK(c->sharded_tables[1].type == KeyType::kInt8);
  CHECK(c->reference_tables == std::vector<std::string>{"countries"});
  CHECK(c->unsharded.policy == Unsharded::Policy::kShard);
  CHECK(c->unsharded.shard == 1);
  CHECK(c->timeouts.connect == Millis(2000));
  CHECK(c->timeouts.pool_wait == Millis(500));
  CHECK(c->timeouts.client_idle == Millis(60000));
}

TEST_CASE("unknown keys are errors with file and line", "[config]") {
  auto e = error_of(
      "users:\n  - { name: a, password: x }\nshards:\n  - { name: s0, primary: postgres://h/db, "
      "poolsize: 3 }\n");
  CHECK(e == "t.yaml:4: unknown key 'poolsize' in shard");
  CHECK(
      error_of(
          "bogus: 1\nusers: [{name: a, password: x}]\nshards: [{name: s, primary: postgres://h}]\n")
          .starts_with("t.yaml:1: unknown key 'bogus'"));
}

TEST_CASE("bad values are reported, all of them", "[config]") {
  auto e = error_of(R"(listen: { port: 99999 }
users:
  - { name: a, password: x, pool_mode: statement }
shards:
  - { name: s0, primary: "mysql://h" }
  - { name: s0, primary: "postgres://h:0/x" }
sharded_tables:
  - { table: t, column: c, type: float }
unsharded: { shard: nope }
node_id: 1024
)");
  CHECK_THAT(e, Catch::Contains("t.yaml:1: listen.port must be an integer between 1 and 65535"));
  CHECK_THAT(e, Catch::Contains("t.yaml:10: node_id must be an integer between 0 and 1023"));
  CHECK_THAT(e, Catch::Contains("t.yaml:3: user pool_mode must be one of session, transaction"));
  CHECK_THAT(e, Catch::Contains("t.yaml:5: shard s0 primary: URL must start with postgres://"));
  CHECK_THAT(e, Catch::Contains("duplicate shard s0"));
  CHECK_THAT(e, Catch::Contains("bad port in URL"));
  CHECK_THAT(e, Catch::Contains("t.yaml:8: type must be one of"));
  CHECK_THAT(e, Catch::Contains("unsharded.shard names unknown shard 'nope'"));
}

TEST_CASE("missing essentials and YAML syntax errors are reported", "[config]") {
  CHECK_THAT(error_of("listen: {}\n"), Catch::Contains("users must be a non-empty list"));
  CHECK_THAT(error_of("users: [{name: a, password: x}]\n"),
             Catch::Contains("shards must be a non-empty list"));
  CHECK_THAT(error_of("users: [{name: a}]\nshards: [{name: s, primary: postgres://h}]\n"),
             Catch::Contains("needs a password"));
  CHECK_THAT(error_of("users: [\n"), Catch::StartsWith("t.yaml:"));
  CHECK_THAT(error_of("tls: { mode: require }\nusers: [{name: a, password: x}]\nshards: [{name: s, "
                      "primary: postgres://h}]\n"),
             Catch::Contains("tls.cert and tls.key are required"));
}

TEST_CASE("durations accept ms, s and min", "[config]") {
  CHECK(parse_duration("250") == Millis(250));
  CHECK(parse_duration("250ms") == Millis(250));
  CHECK(parse_duration("3s") == Millis(3000));
  CHECK(parse_duration("2min") == Millis(120000));
  CHECK_FALSE(parse_duration("2h"));
  CHECK_FALSE(parse_duration("-1s"));
}

TEST_CASE("postgres URLs parse", "[config]") {
  std::string err;
  auto u = parse_pg_url("postgresql://u:p@host:6000/db", &err);
  REQUIRE(u);
  CHECK(u->user == "u");
  CHECK(u->password == "p");
  CHECK(u->host == "host");
  CHECK(u->port == 6000);
  CHECK(u->database == "db");
  CHECK(u->text() == "postgres://u@host:6000/db");
  CHECK_FALSE(parse_pg_url("postgres://u@/db", &err));
  CHECK_FALSE(parse_pg_url("postgres://h/db?sslmode=require", &err));
}

TEST_CASE("${NAME} in the map is an environment variable; unset ones are errors", "[config]") {
  ::setenv("PGSHARD_TEST_PW", "from-env", 1);
  ::unsetenv("PGSHARD_TEST_UNSET");
  const std::string map =
      "users: [{ name: app, password: \"${PGSHARD_TEST_PW}\" }]\n"
      "shards: [{ name: s0, primary: \"postgres://app:${PGSHARD_TEST_PW}@h/app\" }]\n"
      "sharded_tables: [{ table: t, column: id }]\n"
      "log_level: info # $${literal}\n";
  auto cfg = load_string(map, "t.yaml");
  CHECK(cfg->users[0].plaintext == "from-env");
  CHECK(cfg->shards[0].primary.password == "from-env");
  CHECK(error_of("users: [{ name: app, password: \"${PGSHARD_TEST_UNSET}\" }]\n") ==
        "t.yaml:1: environment variable PGSHARD_TEST_UNSET is not set");
  CHECK(
      error_of("\nusers: ${not valid}\n").find("t.yaml:2: ${ must name an environment variable") ==
      0);
}

TEST_CASE("atomic_visibility: true, false or cluster", "[config]") {
  const auto with = [](const std::string& v) {
    return load_string(std::string(kGood) + "atomic_visibility: " + v + "\n", "t.yaml");
  };
  CHECK(load_string(kGood, "t.yaml")->atomic_visibility);
  CHECK_FALSE(load_string(kGood, "t.yaml")->visibility_cluster);
  CHECK(with("cluster")->atomic_visibility);
  CHECK(with("cluster")->visibility_cluster);
  CHECK_FALSE(with("false")->atomic_visibility);
  CHECK_FALSE(with("true")->visibility_cluster);
  CHECK(error_of(std::string(kGood) + "atomic_visibility: global\n").find("atomic_visibility") !=
        std::string::npos);
}
