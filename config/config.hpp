// The shard map and proxy settings: YAML -> plain immutable structs, validated with file:line.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "config/url.hpp"
#include "protocol/auth.hpp"

namespace pgshard::config {

using Millis = std::chrono::milliseconds;

// Thrown by load(); what() is "file:line: message" (one line per problem).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class TlsMode { kDisable, kAllow, kPrefer, kRequire };
enum class PoolMode { kSession, kTransaction };
enum class AuthMethod { kScram, kMd5, kTrust };
enum class KeyType { kInt2, kInt4, kInt8, kText, kVarchar, kUuid };
enum class ShardFunction { kHash, kRing, kRange, kList, kDirectory };
// Where reads that may run on a replica go (see Replication).
enum class ReadFrom { kPrimary, kReplicas, kPreferReplicas };
enum class LoadBalance { kRoundRobin, kLeastActive, kRandom };
// What a read sees after the same client's writes: `session` never goes back in time for
// the client (read-your-writes), `eventual` reads any replica within the lag limit,
// `strong` reads the primary.
enum class ReadConsistency { kSession, kEventual, kStrong };

const char* to_string(TlsMode m);
const char* to_string(PoolMode m);
const char* to_string(AuthMethod m);
const char* to_string(KeyType t);
const char* to_string(ShardFunction f);
const char* to_string(ReadFrom r);
const char* to_string(LoadBalance b);
const char* to_string(ReadConsistency r);

struct Listen {
  std::string host = "127.0.0.1";
  uint16_t port = 6432;
  int workers = 0;             // 0: one per core
  int max_client_conn = 1000;  // logged-in clients
  int max_startups = 256;      // connections still in startup/authentication
  std::size_t max_message_size = 256u << 20;
  // Bytes all clients together may hold in requests not yet sent (extended batches before
  // their Sync, messages not yet whole), beyond the first 256 KiB of each client.
  std::size_t max_buffered_bytes = 512u << 20;
};

struct Tls {
  TlsMode mode = TlsMode::kDisable;
  std::string cert;
  std::string key;
};

struct User {
  std::string name;
  AuthMethod auth = AuthMethod::kScram;
  PoolMode pool_mode = PoolMode::kTransaction;
  std::optional<std::string> plaintext;        // when given in the file
  std::optional<protocol::ScramSecret> scram;  // for auth: scram
  std::string md5;                             // "md5..." for auth: md5
  std::optional<bool> partial_results;         // overrides the map-wide setting
  std::optional<ReadFrom> read_from;           // overrides the shard's and the map's
  // Set only on a session's own copy: the database it asked for, when not the shards' own
  // (pools are per user and database).
  std::string database;
};

struct Shard {
  std::string name;
  PgUrl primary;  // the map's primary: where writes go until a check finds another (failover)
  std::vector<PgUrl> replicas;
  // Every host of the shard: 0 is `primary`, i > 0 is replicas[i - 1] (health checks and
  // failover number them so).
  int host_count() const { return 1 + static_cast<int>(replicas.size()); }
  const PgUrl& host(int i) const {
    return i <= 0 ? primary : replicas[static_cast<std::size_t>(i - 1)];
  }
  int pool_size = 20;
  int weight = 1;                     // ring: virtual nodes scale with it
  std::optional<ReadFrom> read_from;  // overrides Replication::read_from for this shard
};

// range: keys in [from, to) live on `shard`.
struct RangeBound {
  int64_t from = 0;
  int64_t to = 0;
  int shard = 0;
  bool operator==(const RangeBound&) const = default;
};

struct ShardedTable {
  std::string schema;  // empty: any schema
  std::string table;
  std::string column;
  KeyType type = KeyType::kInt8;
  ShardFunction function = ShardFunction::kHash;
  int vnodes = 160;  // ring: virtual nodes per unit of shard weight
  // hash with `buckets: N`: PostgreSQL's partition hash of the key modulo N is the key's
  // bucket, and bucket_shard[bucket] its shard (from `bucket_shards`, or N/shards contiguous
  // buckets per shard). 0: no buckets, the hash modulo the shard count is the shard (as
  // PARTITION BY HASH with one partition per shard).
  int buckets = 0;
  std::vector<int> bucket_shard;
  std::vector<std::pair<uint64_t, int>> ring;      // ring: sorted (point, shard)
  std::vector<RangeBound> ranges;                  // range: sorted, no gaps or overlaps
  std::vector<std::pair<std::string, int>> lists;  // list: canonical key text -> shard
  // directory: key -> shard name rows in `directory_table` (columns key, shard) of the
  // database at `directory_url`, cached for `directory_ttl`; keys not listed use hash.
  std::optional<PgUrl> directory_url;
  std::string directory_table = "pgshard_directory";
  Millis directory_ttl{30000};
  int default_shard = -1;  // range/list: keys outside every range/list
  // "schema.table", or "table" when any schema.
  std::string qualified_name() const { return schema.empty() ? table : schema + "." + table; }
};

// Whether every key value lives on the same shard in both tables (same key type, function
// and placement: buckets and their shards, ring, ranges, lists, directory): only then does a
// join on their keys run shard by shard.
bool same_placement(const ShardedTable& a, const ShardedTable& b);

// `buckets` buckets spread over `shards` shards in contiguous blocks: shard i holds
// [i * buckets / shards, (i + 1) * buckets / shards).
std::vector<int> even_buckets(int buckets, int shards);
// `bucket_shard` spread evenly over `shards` shards (more than it uses: new shards last),
// moving the fewest buckets: every shard ends within one bucket of buckets / shards, and
// buckets move only from shards above their share to shards below it.
std::vector<int> rebalance_buckets(const std::vector<int>& bucket_shard, int shards);
// "0-255,300,512-1023": the buckets `shard` holds in `bucket_shard`.
std::string bucket_ranges(const std::vector<int>& bucket_shard, int shard);
// A bucket list as written in `bucket_shards` ("0-255,900") parsed into `out` (bucket
// numbers below `buckets`, ascending runs); an error message when it is not one.
std::optional<std::string> parse_bucket_list(std::string_view text, int buckets,
                                             std::vector<int>& out);

// The ring of virtual nodes for `shards` (consistent hashing).
std::vector<std::pair<uint64_t, int>> build_ring(const std::vector<Shard>& shards, int vnodes);
// The text a key compares by in list maps (integers normalised: " 042" -> "42").
std::string canonical_key(KeyType type, std::string_view text);

struct Unsharded {
  enum class Policy { kReject, kAll, kShard } policy = Policy::kReject;
  int shard = 0;  // for kShard
};

struct Timeouts {
  Millis client_startup{5000};
  // A new connection must send its whole startup packet within this (at most
  // client_startup); until it has, it is the first to give its place to a newer one when
  // max_startups are taken.
  Millis client_startup_packet{2000};
  Millis client_idle{0};  // 0: never
  Millis connect{5000};
  Millis pool_wait{120000};
  Millis shutdown{30000};
  Millis server_idle{600000};
  // Longest a shard may take to answer its part of a multi-shard statement (0: no limit).
  Millis shard_statement{0};
  // A transaction on several shards whose statement has waited this long has the shards'
  // lock waits checked for a cycle across shards (0: never), like deadlock_timeout.
  Millis deadlock{1000};
};

// Reads from replicas, their health checks and lag limits (top-level keys read_from,
// load_balance, read_consistency, health, max_replica_lag, read_your_writes).
struct Replication {
  ReadFrom read_from = ReadFrom::kPrimary;  // every shard's, unless it or the user says
  LoadBalance load_balance = LoadBalance::kRoundRobin;
  ReadConsistency consistency = ReadConsistency::kSession;
  // Every host (primary and replicas) is checked this often on a connection of its own;
  // a check not answered within `health_timeout` fails, and a host that fails its check is
  // kept from reads for `ban_time`.
  Millis health_interval{1000};
  Millis health_timeout{1000};
  Millis ban_time{10000};
  // A replica further behind its primary than either (0: no limit) serves no reads until
  // it is back under both.
  uint64_t max_lag_bytes = 0;
  Millis max_lag_time{0};
  // read_consistency session: how long a read waits for a replica to replay the client's
  // last commit before it goes to the primary.
  Millis read_your_writes_wait{20};
  // Functions outside pg_catalog that only read (as the statement names them: "name" or
  // "schema.name"): a read calling one may still go to a replica. Any other user function
  // keeps the statement on the primary.
  std::vector<std::string> read_safe_functions;
};

// The admin console (database "pgshard" on the client port) and the HTTP endpoint.
struct Admin {
  std::vector<std::string> users;        // every console command
  std::vector<std::string> stats_users;  // SHOW commands only
  std::string http_host;                 // empty: no HTTP endpoint
  uint16_t http_port = 0;
  // HTTP connections open at once; more are closed at once (the client port keeps its
  // descriptors), as are ones idle or sending a request for longer than http_idle_timeout.
  int http_max_connections = 64;
  Millis http_idle_timeout{10000};
  // When either is set, every path but /health and /ready needs it: a bearer token
  // (`Authorization: Bearer ...`) or basic auth "user:password". From the file, the
  // environment (${NAME}) or a file (`_file` keys: a mounted Secret).
  std::string http_auth_token;
  std::string http_basic_auth;
  std::string http_tls_cert;  // both set: the endpoint speaks HTTPS only
  std::string http_tls_key;
  bool stats = true;  // count requests per pool (false: only for comparing the cost)
  bool is_admin(std::string_view user) const;
  bool may_view(std::string_view user) const;
};

struct Config {
  std::string path;
  Admin admin;
  Listen listen;
  Tls tls;
  std::vector<User> users;
  std::vector<Shard> shards;
  std::vector<ShardedTable> sharded_tables;
  std::vector<std::string> reference_tables;
  Unsharded unsharded;
  Timeouts timeouts;
  Replication replication;
  std::string log_level = "info";
  bool log_json = false;  // log_format: json (one JSON object per line) instead of text
  // Multi-shard reads: when a shard fails or times out, answer from the others with a
  // WARNING instead of failing the statement.
  bool partial_results = false;
  // Transactions across shards commit with two-phase commit and a durable decision log in
  // this directory (false: best-effort COMMIT on each shard with a WARNING on failure).
  bool two_phase_commit = true;
  // A multi-shard read never sees part of a cross-shard commit (txn::VisibilityGate); false
  // turns the gate off (to measure what it costs).
  bool atomic_visibility = true;
  // `atomic_visibility: cluster`: several instances serve the same shards, so the gate is
  // also taken as a table lock on the first shard's postgres database (txn::ClusterGate).
  bool visibility_cluster = false;
  std::string two_phase_log = "pgshard-2pc";
  std::size_t router_cache_size = 10000;
  // false: route by hints and settings only, everything else to the first shard (the
  // parser-free mode; for comparisons and as an escape hatch).
  bool router_parse = true;  // parsed statements kept per worker
  // This instance's number in pgshard.unique_id() (0-1023; below 64 for unique_id_53):
  // every instance serving the same shards needs its own. -1: leased from the first shard.
  int node_id = -1;

  const User* find_user(std::string_view name) const;
  int shard_index(std::string_view name) const;  // -1 when unknown
  // Key type used to hash `SET pgshard.sharding_key` / hint values when the statement does
  // not name a table: the type of the first sharded table (bigint without any).
  KeyType default_key_type() const;
  // Where reads of `user` that may run on a replica go on `shard` (user, shard, map-wide).
  ReadFrom read_from(const User& user, int shard) const;
  // Pools and server connections are kept per target: shards are targets 0..N-1, then each
  // shard's replicas in map order (shard 0's first). A reload cannot change the replicas, so
  // a target means the same host for the life of the process.
  int replica_target(int shard, int replica) const;
  struct Host {
    int shard = 0;
    int replica = -1;  // -1: the shard's primary
  };
  Host host_of(int target) const;
  int targets() const;  // shards and replicas
};

// What a reload of `running` into `next` may not change without a restart (listen address,
// workers, shards and their order, TLS mode, 2PC, the HTTP address) or without resharding
// (a sharded table's key, type, function, ranges, lists, directory, default shard; a
// reference table dropped): one message naming each change, empty when it may apply.
std::vector<std::string> reload_refusals(const Config& running, const Config& next);

// Loads and validates; throws ConfigError listing every problem found. ${NAME} anywhere in
// the text is the environment variable NAME (an unset one is an error); $${ is a literal ${.
std::shared_ptr<const Config> load_file(const std::string& path);
std::shared_ptr<const Config> load_string(const std::string& yaml, const std::string& name);

// "5s", "200ms", "2min", or a bare number of milliseconds.
std::optional<Millis> parse_duration(std::string_view text);

}  // namespace pgshard::config
