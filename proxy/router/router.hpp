// Routing: a pure function of (statement text, session hints, config) -> Route. No I/O.
//
// Precedence, highest first (documented in README):
//   1. a comment hint in the statement: /* pgshard: shard=s1 */ or /* pgshard: sharding_key=42 */
//   2. SET LOCAL pgshard.shard / pgshard.sharding_key (until the transaction ends)
//   3. SET pgshard.shard / pgshard.sharding_key (session)
//   4. the shard key found by PostgreSQL's parser in the statement (WHERE, VALUES, Bind
//      parameters), reference tables, and the `unsharded` policy
//   5. statements that name no table: the shard the client is on, else the first shard
// At each level an explicit shard beats a sharding key.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/router/placement.hpp"

namespace pgshard::router {

// pgshard.* settings a client made with SET / SET LOCAL.
struct Hints {
  std::optional<std::string> shard;
  std::optional<std::string> sharding_key;
  std::optional<std::string> partial_results;  // "on"/"off"...: see parse_bool
  bool empty() const { return !shard && !sharding_key; }
  bool operator==(const Hints&) const = default;
};

struct SessionHints {
  Hints session;
  Hints local;  // cleared when the client's transaction ends
  bool operator==(const SessionHints&) const = default;
  bool empty() const { return session.empty() && local.empty(); }
};

enum class RouteKind {
  kShard,   // forward to `shard`
  kAnswer,  // pgshard answers itself with `answer` (no ReadyForQuery included)
  kError,   // pgshard answers with `error`
  kLookup,  // directory keys must be looked up first (`lookups`), then route again
};

struct Route {
  RouteKind kind = RouteKind::kShard;
  int shard = 0;
  // More than one shard: the statement runs on all of these (multi-shard execution).
  std::vector<int> shards;
  // kLookup: (sharded table index, canonical key) pairs to find in the directory, and
  // sharded tables whose key position (column order) to read from the catalog.
  std::vector<std::pair<int, std::string>> lookups;
  std::vector<int> column_lookups;
  // kLookup: an INSERT leaving the key of sharded table `generate_table` to its default in
  // `generate_count` rows: generate that many keys, put them in, route again.
  int generate_table = -1;
  int generate_count = 0;
  // kLookup: generated columns of that table other than the key (serial, identity, nextval
  // defaults) that `count` rows leave to the database: pgshard draws their values from the
  // sequences' home (the first shard) too, so they are unique across shards.
  struct GenerateColumn {
    GeneratedColumn column;
    int count = 0;
    bool positional = false;  // INSERT without a column list: the column's place counts
  };
  std::vector<GenerateColumn> generate_columns;
  // kError: a pipeline (extended batch) whose statements go to different shards; the
  // session may run it statement by statement in one transaction instead.
  bool split_pipeline = false;
  // kLookup: INSERT ... SELECT into a sharded table: run the SELECT, put its rows in as
  // VALUES, route again.
  bool insert_select = false;
  // kLookup: the statement calls pgshard.unique_id(): put the ids in, route again.
  bool unique_ids = false;
  // The statement names pgshard.unique_id() (the shards need the functions declared).
  bool names_unique_id = false;
  // COPY FROM STDIN whose rows pgshard splits by key over every shard.
  std::optional<CopySplit> copy_in;
  int copy_table = -1;            // the sharded table it splits by (-1: copy_in->replicate)
  bool copy_out_header = false;   // COPY ... TO with HEADER: one header line in the stream
  std::string transaction_modes;  // see Analysis::transaction_modes
  // When set, shard i runs its own statement instead (a split multi-row INSERT).
  std::vector<std::pair<int, std::string>> per_shard_sql;
  std::vector<int> insert_row_shards;  // split INSERT: the shard of each VALUES row, in order
  // Split INSERT: each VALUES row's shard-key value (as key_identity gives it), the key
  // column and type, to tell which rows a shard returned when it skipped some.
  std::vector<std::string> insert_row_keys;
  std::string insert_key_column;
  config::KeyType insert_key_type = config::KeyType::kInt8;
  bool write = false;
  bool ddl = false;                    // runs on every shard in order, not atomically
  bool takes_snapshot = false;         // see Analysis::takes_snapshot
  bool replicated = false;             // every shard holds a copy: one shard's reply stands
  bool concat_safe = true;             // see Analysis::concat_safe
  TxnControl txn = TxnControl::kNone;  // set only when the parser placed the statement
  std::string gid;                     // see Analysis::gid
  bool controls_txn = false;           // see Analysis::controls_txn
  std::string merge_blocker;
  std::shared_ptr<const merge::MergePlan> merge;  // multi-shard SELECT: how rows combine
  std::vector<SettingChange> settings;            // session settings the statement changes
  bool pins = false;  // needs the same server for the rest of the session (Analysis::pins)
  bool prepared_statements_view = false;            // reads pg_prepared_statements
  std::vector<std::string> user_functions;          // see Analysis::user_functions
  std::optional<Analysis::SignalCall> signal_call;  // see Analysis::signal_call
  std::vector<std::string> temp_tables;             // see Analysis::temp_tables
  std::vector<std::string> schema_objects;          // see Analysis::schema_objects
  bool drops = false;                               // see Analysis::drops
  // SQL cursors (Analysis::cursor_op): the session remembers the server a cursor was
  // declared on and sends its FETCH, MOVE and CLOSE there.
  Analysis::CursorOp cursor_op = Analysis::CursorOp::kNone;
  std::string cursor;
  bool cursor_hold = false;
  std::string reason;  // why this shard, for logs and EXPLAIN
  protocol::ErrorInfo error;
  std::string answer;
  // The hints in force after this statement (SET/RESET pgshard.* applied).
  SessionHints hints;
};

// What the session does with a request: the closed set its handler dispatches on.
enum class Action : uint8_t {
  kForward,  // relay to one shard's server, replies back untouched
  kFanOut,   // run on several shards, replies combined (executor::fan_out)
  kDdl,      // run on every shard in order (executor::run_ddl, via fan_out's checks)
  kCopyIn,   // COPY FROM STDIN split by key over the shards (executor::copy_in_split)
  kAnswer,   // pgshard answers itself (`answer`)
  kRefuse,   // pgshard answers with `error`
  kLookup,   // look up directory keys (`lookups`), then route again
};
Action action(const Route& r);
const char* to_string(Action a);

// Everything routing may look at besides the session hints and the config.
// The statement text a session routed last over the extended protocol, when it names no
// pgshard setting or hint, with its analysis: drivers bind one statement again and again
// (the unnamed one re-parsed with the same text, or a named one), and a repeat then skips
// the scan for pgshard words and the cache look-up (hashing the text).
struct StatementMemo {
  std::string sql;
  const config::Config* cfg = nullptr;
  std::shared_ptr<const Analysis> analysis;  // null: nothing remembered
};

struct Context {
  AnalysisCache* cache = nullptr;        // null: analyse without caching
  StatementMemo* memo = nullptr;         // extended protocol: the session's memo
  const protocol::Bind* bind = nullptr;  // extended protocol: the parameters
  // Extended protocol: the parameter types the statement's Parse declared (0: unspecified),
  // which say how a binary parameter reads ('-5' declared text is text, not an int16).
  const std::vector<int32_t>* param_types = nullptr;
  std::optional<int> attached;                // the shard the client's server is on, if any
  uint64_t* round_robin = nullptr;            // spreads reference-table reads
  const DirectoryCache* directory = nullptr;  // directory entries known to this worker
  const ColumnCache* columns = nullptr;       // key positions known to this worker
  bool describe_only = false;                 // Parse/Describe without Bind: nothing runs
  bool reasons = true;                        // explain the route in Route::reason (costs strings)
  // The cache's analysis of this very statement when the router has it already (a statement
  // with literals is re-analysed from its shape on every look-up: look once).
  const std::shared_ptr<const Analysis>* analysis = nullptr;
};

// Routes a simple-protocol Query. A string made only of pgshard SET/RESET/SHOW statements
// is answered by pgshard; anything else goes to a shard (pgshard.* settings inside a longer
// string are applied and also reach the server, which accepts them as placeholder GUCs).
Route route_query(std::string_view sql, const SessionHints& hints, const config::Config& cfg,
                  const Context& ctx = {});

// Routes an extended-protocol request by the text of its statement (empty when unknown)
// and its Bind parameters. pgshard.* settings are applied and always forwarded.
Route route_extended(std::string_view sql, const SessionHints& hints, const config::Config& cfg,
                     const Context& ctx = {});

// The text form of Bind parameter `n` (1-based) as the key type reads it; nullopt if
// absent or NULL. Binary values are read by the type the Parse declared for the parameter
// (`declared`, a type OID; 0: unspecified, then as the key type's own binary format).
std::optional<std::string> param_text(const protocol::Bind& bind, int n, config::KeyType type,
                                      int32_t declared = 0);
// A binary-format value as the text the key type reads (nullopt: pgshard cannot read it
// as PostgreSQL would). `declared` is the value's type OID: text, varchar, char(n), name
// and unknown are sent as their characters (then parsed as the key's input function
// parses them: '-5', ' +42 '); int2/int4/int8, numeric and float4/float8 holding an
// integer, uuid; 0: the key type's own binary format.
std::optional<std::string> binary_text(std::string_view v, config::KeyType type,
                                       int32_t declared = 0);
// What a key value of `type` compares by: integers normalised (" +042" and "42" agree),
// uuids as their 16 bytes (any case, with or without hyphens), text as it is.
std::string key_identity(config::KeyType type, std::string_view text);
// Elements of an array parameter (text '{1,2}' or binary array format).
std::optional<std::vector<std::string>> array_param(const protocol::Bind& bind, int n,
                                                    config::KeyType type);

// PostgreSQL's spellings of a Boolean setting (on/off, true/false, yes/no, 1/0).
std::optional<bool> parse_bool(std::string_view value);

// Whether multi-shard reads may answer without a failed shard: SET pgshard.partial_results
// (LOCAL first), then the user's setting, then the map's.
bool partial_results(const SessionHints& hints, const config::Config& cfg,
                     const config::User& user);

// The shard a sharding key maps to with the map's default key type and function.
std::optional<int> shard_for_key(std::string_view key, const config::Config& cfg);

}  // namespace pgshard::router
