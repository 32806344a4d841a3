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
#include <span>
#include <string>
#include <string_view>
#include <variant>
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
  // SET pgshard.read_token (session level; the session keeps the value its reads honour:
  // see session::ReadRouting): "shard:LSN,..." as SHOW pgshard.read_token gives it.
  std::optional<std::string> read_token;
  bool empty() const { return !shard && !sharding_key; }
  bool operator==(const Hints&) const = default;
};

struct SessionHints {
  Hints session;
  Hints local;  // cleared when the client's transaction ends
  bool operator==(const SessionHints&) const = default;
  bool empty() const { return session.empty() && local.empty(); }
};

// What the session does with a statement: one of these actions, each with its own payload
// (Route::action). What every action shares lives in Route itself.

// Relay the request to one shard's server; its replies come back untouched.
struct Forward {
  int shard = 0;
};

// Run the statement on several shards and combine their replies (executor::fan_out).
struct FanOut {
  std::vector<int> shards;                        // in order, each once (two or more)
  std::shared_ptr<const merge::MergePlan> merge;  // a SELECT's: how rows combine
  std::string merge_blocker;                      // see Analysis::merge_blocker
  bool concat_safe = true;                        // see Analysis::concat_safe
  bool replicated = false;       // every shard holds a copy: one shard's reply stands
  bool copy_out_header = false;  // COPY ... TO with HEADER: one header line in the stream
  // A multi-row INSERT split by key: shard i runs its own statement instead.
  std::vector<std::pair<int, std::string>> per_shard_sql;
  std::vector<int> insert_row_shards;  // the shard of each VALUES row, in order
  // Each VALUES row's shard-key value (as key_identity gives it), the key column and type,
  // to tell which rows a shard returned when it skipped some.
  std::vector<std::string> insert_row_keys;
  std::string insert_key_column;
  config::KeyType insert_key_type = config::KeyType::kInt8;
};

// A schema change on every shard in order, not atomically (executor::run_ddl); inside a
// transaction it fans out in it like any write.
struct Ddl {
  std::vector<int> shards;  // in order (two or more)
  bool replicated = false;  // every shard holds a copy: one shard's reply stands
};

// COPY FROM STDIN whose rows pgshard splits by key over the shards (executor::copy_in_split).
struct CopyIn {
  std::vector<int> shards;  // in order (two or more)
  CopySplit split;
  int table = -1;  // the sharded table it splits by (-1: split.replicate)
};

// pgshard answers itself with `text` (no ReadyForQuery included).
struct Answer {
  std::string text;
};

// pgshard answers with `error`.
struct Refuse {
  protocol::ErrorInfo error;
};

// A pipeline (extended batch) whose statements go to different shards: the session may run
// it statement by statement in one transaction instead; else it is refused with `error`.
struct SplitPipeline {
  protocol::ErrorInfo error;
};

// Look up directory keys and the catalog first, then route again.
struct Lookup {
  std::vector<std::pair<int, std::string>> keys;  // (sharded table index, canonical key)
  std::vector<int> columns;  // sharded tables whose key position (column order) to read
};

// An INSERT leaving the key of sharded table `table` to its default in `count` rows, or
// other generated columns (serial, identity, nextval defaults) to the database: pgshard
// draws their values from the sequences' home (the first shard), so they are unique across
// shards, puts them in and routes again.
struct GenerateKeys {
  struct Column {
    GeneratedColumn column;
    int count = 0;            // rows that leave it to the database
    bool positional = false;  // INSERT without a column list: the column's place counts
  };
  int table = -1;
  int count = 0;
  std::vector<Column> columns;
};

// INSERT ... SELECT into a sharded table: run the SELECT, put its rows in as VALUES, route
// again.
struct InsertSelect {};

// The statement calls pgshard.unique_id(): put the ids in, route again.
struct UniqueIds {};

// (The order of the alternatives is that of Action below.)
using RouteAction = std::variant<Forward, FanOut, Ddl, CopyIn, Answer, Refuse, SplitPipeline,
                                 Lookup, GenerateKeys, InsertSelect, UniqueIds>;

struct Route {
  RouteAction action;  // by default, Forward to the first shard
  std::string reason;  // why this action, for logs and EXPLAIN
  // The hints in force after this statement (SET/RESET pgshard.* applied).
  SessionHints hints;
  // What the statement is, wherever it runs.
  bool write = false;
  // Only reads a replica answers alike (Analysis::reads_only, and every function outside
  // pg_catalog it calls is in the map's read_safe_functions): it may run on a replica.
  bool read_only = false;
  bool ddl = false;                // a schema change (on several shards: the Ddl action)
  bool takes_snapshot = false;     // see Analysis::takes_snapshot
  std::string transaction_modes;   // see Analysis::transaction_modes
  std::string begin_modes;         // see Analysis::begin_modes
  bool start_transaction = false;  // see Analysis::start_transaction
  bool locks = false;              // see Analysis::locks
  // Analysis::side_effects, or it calls a function outside pg_catalog that the map's
  // read_safe_functions does not list.
  bool side_effects = false;
  bool unqualified_calls = false;  // see Analysis::unqualified_calls
  // What it does to the session wherever it runs (take_session_effects).
  TxnControl txn = TxnControl::kNone;   // set only when the parser placed the statement
  std::string gid;                      // see Analysis::gid
  bool controls_txn = false;            // see Analysis::controls_txn
  std::vector<SettingChange> settings;  // session settings the statement changes
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
  // SQL PREPARE / EXECUTE / DEALLOCATE (Analysis::sql_prepare): the session keeps a PREPARE
  // of a statement on placed tables and runs its EXECUTE as the statement itself.
  Analysis::SqlPrepareOp sql_prepare = Analysis::SqlPrepareOp::kNone;
  std::string sql_prepared;
  bool sql_prepare_held = false;
  bool sql_prepare_alone = true;
  // The statement names pgshard.unique_id() (the shards need the functions declared).
  bool names_unique_id = false;
  // An Answer that shows pgshard.read_token: the session settles its token first.
  bool shows_read_token = false;
};

// The action's name, for counters and tests: one per alternative of RouteAction, in order.
enum class Action : uint8_t {
  kForward,
  kFanOut,
  kDdl,
  kCopyIn,
  kAnswer,
  kRefuse,
  kSplitPipeline,
  kLookup,
  kGenerateKeys,
  kInsertSelect,
  kUniqueIds,
};
inline Action action(const Route& r) {
  return static_cast<Action>(r.action.index());
}
const char* to_string(Action a);

// Whether the route runs the statement on shards (Forward, FanOut, Ddl, CopyIn).
bool runs_on_shards(const Route& r);
// Whether pgshard completes the statement first and then routes it again (Lookup,
// GenerateKeys, InsertSelect, UniqueIds).
bool routes_again(const Route& r);
// The shards the route runs the statement on, in order: Forward's one, or those of FanOut,
// Ddl and CopyIn; none for the other actions.
std::span<const int> shards_of(const Route& r);
// The error of a refusal (Refuse, SplitPipeline); null for the other actions.
const protocol::ErrorInfo* refusal(const Route& r);

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
  // The session's client_encoding (empty: UTF8). Key text arrives in it, while the shards
  // hash what they store (UTF8): see key_bytes_as_stored.
  std::string_view client_encoding;
};

// Whether a key's text, as a client with `client_encoding` sends it, has the bytes the
// shards hash: ASCII text always does, other text only in UTF8 (or SQL_ASCII, which
// PostgreSQL does not convert). Else its shard cannot be told from the bytes pgshard sees.
bool key_bytes_as_stored(std::string_view client_encoding, std::string_view text);
// Why a write by such a key is refused (0A000).
std::string foreign_key_message(std::string_view client_encoding);

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

// A read token's text ("s0:0/16B3748,s2:1/0": shard name, WAL position as PostgreSQL writes
// it) as (shard index, position) pairs; nullopt when it does not read as one for `cfg`
// (`unknown_shard`, when given, then names the first shard it names that `cfg` has not).
std::optional<std::vector<std::pair<int, uint64_t>>> parse_read_token(
    std::string_view text, const config::Config& cfg, std::string* unknown_shard = nullptr);
// A WAL position as PostgreSQL writes it ("0/16B3748") and back (nullopt: not one).
std::string lsn_text(uint64_t lsn);
std::optional<uint64_t> parse_lsn(std::string_view text);

// PostgreSQL's spellings of a Boolean setting (on/off, true/false, yes/no, 1/0).
std::optional<bool> parse_bool(std::string_view value);

// Whether multi-shard reads may answer without a failed shard: SET pgshard.partial_results
// (LOCAL first), then the user's setting, then the map's.
bool partial_results(const SessionHints& hints, const config::Config& cfg,
                     const config::User& user);

// The shard a sharding key maps to with sharded table `table`'s placement (type, function,
// buckets...); table -1: the first sharded table's (the map's default key type).
std::optional<int> shard_for_key(std::string_view key, const config::Config& cfg, int table = -1);

}  // namespace pgshard::router
