// What a statement touches, from PostgreSQL's own parser (libpg_query): its tables, and the
// shard-key values its WHERE / VALUES pin down. Pure and cacheable by statement text.
#pragma once

#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/merge/plan.hpp"

namespace pgshard::router {

// One value of the shard key: a literal, or the n-th Bind parameter ($n), possibly an
// array parameter (key = ANY($n)).
struct KeyValue {
  // kGenerate: an INSERT leaves the key to the column's default (left out, or DEFAULT).
  enum class Kind { kLiteral, kParam, kArrayParam, kGenerate } kind = Kind::kLiteral;
  std::string literal;
  int param = 0;  // 1-based
  bool operator==(const KeyValue&) const = default;
};

// COPY table [(cols)] FROM STDIN over several shards: what splitting its rows by key needs,
// or `replicate` (a reference table, or one outside the map under `unsharded: all`): every
// shard gets every row, as the client sent them.
struct CopySplit {
  std::string table;    // as written, schema-qualified if it was
  int key_column = -1;  // index in the column list; -1: look up the table's order
  std::string key_name;
  bool csv = false;
  char delimiter = '\t';
  char quote = '"';
  char escape = '"';
  bool header = false;
  bool binary = false;
  bool replicate = false;
  // The session's client_encoding when the COPY runs (set by route, not by analysis): keys
  // whose bytes are not those the shards hash fail the COPY (key_bytes_as_stored).
  std::string client_encoding;
};

// A session setting a statement changes: SET name = value (value), RESET name (nullopt),
// RESET ALL / DISCARD ALL (reset_all). SET LOCAL changes it for the transaction only; the
// savepoints of the transaction are in the list too, as SET inside one is undone by
// ROLLBACK TO it (`name` is then the savepoint's).
struct SettingChange {
  enum class Kind : uint8_t { kSession, kLocal, kSavepoint, kRelease, kRollbackTo };
  std::string name;
  std::optional<std::string> value;
  bool reset_all = false;
  Kind kind = Kind::kSession;
  bool setting() const { return kind == Kind::kSession || kind == Kind::kLocal; }
};

// Transaction control a statement is, when it is exactly one such statement.
// kPrepare: PREPARE TRANSACTION; kFinishPrepared: COMMIT PREPARED / ROLLBACK PREPARED (both
// with Analysis::gid).
enum class TxnControl {
  kNone,
  kBegin,
  kCommit,
  kRollback,
  kSavepoint,
  kRollbackTo,
  kPrepare,
  kFinishPrepared,
  kSetTransaction,  // SET TRANSACTION <modes> (not SNAPSHOT): held while BEGIN is pgshard's
};

struct Analysis {
  enum class Target {
    kAnyShard,       // no table at all (SELECT 1, SHOW, BEGIN...)
    kReferenceRead,  // only reference tables, read: one shard, round-robin
    kAllShards,      // every shard (writes to reference tables, reads without a key)
    kKeys,           // the shards of `keys`
    kUnsharded,      // tables pgshard does not know: the `unsharded` policy
    kError,          // refused: `error` says why
    kUnparsed,       // not valid SQL: PostgreSQL reports the error itself
    kCopyIn,         // COPY FROM STDIN into a sharded table: rows split by key
    kSequenceHome,   // nextval/setval/currval without a table: the first shard, whose
                     // sequences hand out generated keys (unique everywhere)
    kInsertSelect,   // INSERT INTO sharded SELECT ...: pgshard runs the SELECT, then inserts
                     // its rows by key (insert_select_sql / with_select_rows)
  };
  Target target = Target::kAnyShard;
  bool write = false;
  bool ddl = false;
  // PostgreSQL takes a snapshot for it (everything but SET, SHOW, LOCK, LISTEN, NOTIFY,
  // UNLISTEN, FETCH, SET CONSTRAINTS, CHECKPOINT and transaction control); for several
  // statements, one of them does. False when not known.
  bool takes_snapshot = false;
  int table = -1;  // the sharded table whose key type applies
  // Every sharded table the statement names (indices into sharded_tables, each once, in
  // order): a sharding_key hint places its key with their placement.
  std::vector<int> sharded_tables;
  std::vector<KeyValue> keys;       // kKeys: rows live on the union of these keys' shards
  std::optional<KeyValue> new_key;  // UPDATE ... SET key = value
  // INSERT without a column list into a sharded table (kKeys, `keys` empty): each VALUES
  // row's values in table column order (nullopt: neither a constant nor a parameter). The
  // router takes the key from the key column's position in the catalog.
  std::vector<std::vector<std::optional<KeyValue>>> positional;
  bool insert = false;  // INSERT: each key is one VALUES row
  // INSERT ... (cols) VALUES: the columns as written and, for each, how many rows give
  // DEFAULT there (the router finds generated columns the rows leave to the database).
  std::vector<std::string> insert_columns;
  std::vector<int> insert_defaults;
  bool replicated = false;  // a write to reference tables: the same on every shard
  TxnControl txn = TxnControl::kNone;
  std::string gid;  // kPrepare, kFinishPrepared: the transaction's identifier
  // Several statements in one Query, one of them transaction control (COMMIT, PREPARE
  // TRANSACTION...): they must run where the whole transaction is.
  bool controls_txn = false;
  bool explain_route = false;
  std::optional<CopySplit> copy_in;  // set for COPY FROM STDIN into a sharded table
  // COPY ... TO with HEADER (text or CSV): several shards' streams must carry one header.
  bool copy_out_header = false;
  // SET TRANSACTION's modes as BEGIN takes them ("ISOLATION LEVEL REPEATABLE READ READ
  // ONLY"): shards that join the transaction later must open it the same way.
  std::string transaction_modes;
  // BEGIN's / START TRANSACTION's own modes in the same words ("READ ONLY"): whether the
  // transaction may run on replicas (a READ ONLY one not SERIALIZABLE may).
  std::string begin_modes;
  // It is START TRANSACTION, not BEGIN: PostgreSQL's CommandComplete tag says which.
  bool start_transaction = false;
  // Several shards can answer by plain concatenation of their rows and summed tags; when
  // false, `merge_blocker` names what needs a real merge (ORDER BY, LIMIT, aggregates...).
  int statements = 1;  // statements in the text (a multi-statement simple Query)
  bool concat_safe = true;
  std::string merge_blocker;
  // A SELECT whose ORDER BY, LIMIT, DISTINCT or aggregates pgshard merges across shards.
  bool merge_candidate = false;
  std::shared_ptr<const merge::MergePlan> merge;
  std::vector<std::string> key_columns;  // shard-key columns of the sharded tables read
  std::vector<SettingChange> settings;   // session settings it changes, in order
  // State that lives in the server session: LISTEN, session advisory locks, temp tables,
  // WITH HOLD cursors, SQL PREPARE. The client then keeps its server.
  bool pins = false;
  // Takes a lock a replica would hold apart from its primary's: an advisory lock function
  // (pg_advisory_xact_lock...), LOCK TABLE. In a READ ONLY transaction it keeps the shard's
  // part of the transaction on the primary.
  bool locks = false;
  // Runs something a hot standby does not do as its primary does, even in a READ ONLY
  // transaction: a call of a pg_catalog function with a volatile variant (advisory locks,
  // txid_current, pg_notify, nextval...), a DO block, CALL, LOCK TABLE, NOTIFY, LISTEN or
  // UNLISTEN. (Functions outside pg_catalog, user_functions, are judged at routing by the
  // map's read_safe_functions.) In a READ ONLY transaction it keeps the shard's part on the
  // primary, or is refused on a part already on a replica.
  bool side_effects = false;
  // Functions outside pg_catalog it calls (as written): they may change settings
  // (set_config) where pgshard cannot see, so the session checks them afterwards.
  std::vector<std::string> user_functions;
  // Calls a function by its unqualified name: a search_path that lists pg_catalog after
  // another schema may make it a user's function of that name (the session decides).
  bool unqualified_calls = false;
  // Only reads that a replica answers alike: every statement a SELECT (or VALUES/TABLE)
  // without INTO, locking clause or writing WITH, calling no pg_catalog function with a
  // volatile overload (nextval, pg_advisory_lock, set_config, random...). Functions outside
  // pg_catalog (user_functions) decide at routing, by the map's read_safe_functions.
  bool reads_only = false;
  // Reads pg_prepared_statements: in transaction pooling the client is shown its own.
  bool prepared_statements_view = false;
  // SELECT pg_terminate_backend(pid) / pg_cancel_backend(pid), alone: a pid pgshard gave a
  // client (BackendKeyData) means that client, not a server process (see Session).
  struct SignalCall {
    bool terminate = false;
    int64_t pid = 0;  // the literal, or
    int param = 0;    // the parameter holding it ($n)
  };
  std::optional<SignalCall> signal_call;
  // Tables it creates TEMP (CREATE TEMP TABLE, SELECT INTO TEMP): objects of the session.
  std::vector<std::string> temp_tables;
  // A schema change of objects outside the map (it runs on every shard): the names it
  // touches, so a session keeps changes of its own temporary tables on its server; and
  // whether it is a DROP.
  std::vector<std::string> schema_objects;
  bool drops = false;
  // Calls of pgshard.unique_id() / unique_id_53(), which pgshard evaluates (put in as
  // constants before routing), and whether the statement names them at all (a schema
  // change keeps them, as a column default: the shards need the functions declared).
  int unique_ids = 0;
  bool names_unique_id = false;
  // SQL cursors: DECLARE (analysed as its query), FETCH/MOVE, CLOSE, and the cursor's name
  // (empty for CLOSE ALL). A cursor lives on the server that declared it.
  enum class CursorOp { kNone, kDeclare, kFetch, kClose };
  CursorOp cursor_op = CursorOp::kNone;
  std::string cursor;
  bool cursor_hold = false;  // DECLARE ... WITH HOLD: outlives its transaction
  // SQL-level PREPARE, EXECUTE and DEALLOCATE (DISCARD ALL: every name), not the protocol's
  // Parse/Bind. A PREPARE of a statement on sharded tables (with several shards, also on tables
  // every shard has a copy of) is `sql_prepare_held`: the
  // session keeps it (no server does) and runs an EXECUTE of it as the statement with the
  // arguments put in, routed as such (sql_executed); other PREPAREs go to a server as any
  // statement naming their tables.
  enum class SqlPrepareOp { kNone, kPrepare, kExecute, kDeallocate };
  SqlPrepareOp sql_prepare = SqlPrepareOp::kNone;
  std::string sql_prepared;       // the statement's name (empty: every name)
  bool sql_prepare_held = false;  // kPrepare of a statement the session keeps
  bool sql_prepare_alone = true;  // the whole text (not one of several, not in EXPLAIN)
  std::string error;              // kError (SQLSTATE 0A000)
  std::string hint;
  std::string reason;
};

// Parses `sql` and analyses it against the shard map.
Analysis analyze_statement(std::string_view sql, const config::Config& cfg);

// Rewrites a multi-row INSERT ... VALUES into one INSERT per shard, keeping ON CONFLICT and
// RETURNING: row i goes to shard row_shard[i]. Uses libpg_query's deparser. Returns
// (shard, statement) pairs in shard order, or nullopt if the statement cannot be split.
std::optional<std::vector<std::pair<int, std::string>>> split_insert(
    std::string_view sql, std::span<const int> row_shard);

// `sql` with each call of pgshard.unique_id() / unique_id_53() replaced by the bigint
// `next(js_safe)` gives (nullopt from it fails the rewrite). nullopt when nothing changed.
std::optional<std::string> with_unique_ids(
    std::string_view sql, const std::function<std::optional<int64_t>(bool js_safe)>& next);

// The SELECT of an INSERT ... SELECT, as its own statement (nullopt when `sql` is not one).
std::optional<std::string> insert_select_sql(std::string_view sql);
// `sql` with each $n replaced by the SQL expression `values[n - 1]` (a literal, say).
// nullopt when it does not parse or names a parameter beyond `values`.
std::optional<std::string> with_parameter_values(std::string_view sql,
                                                 const std::vector<std::string>& values);
// A value as a SQL literal, cast to the type with OID `type` where pgshard knows its name
// (else untyped); NULL for nullopt.
std::string sql_literal(const std::optional<std::string>& v, uint32_t type);
// The INSERT ... SELECT `sql` with the SELECT's result put in its place: INSERT ... VALUES of
// `rows` (each value a literal cast to its column's type, `types` being the result's type
// OIDs; NULL for nullopt), keeping the column list, ON CONFLICT and RETURNING. No rows: a
// SELECT of typed NULLs WHERE false (the INSERT then inserts nothing, anywhere).
std::optional<std::string> with_select_rows(
    std::string_view sql, const std::vector<uint32_t>& types,
    const std::vector<std::vector<std::optional<std::string>>>& rows);
// Parameter types for a Parse of `sql` bound by `bind`: `declared`, with the unspecified
// types of parameters `sql` does not use made text (bytea when bound in binary), so the
// client's Bind still fits a statement rewritten without them.
std::vector<int32_t> declared_types(std::string_view sql, std::vector<int32_t> declared,
                                    const protocol::Bind& bind);

// EXECUTE name(args) of a PREPARE pgshard keeps (`prepare_sql`, the client's whole PREPARE
// text): the prepared statement with each $n replaced by its argument, cast to the type the
// PREPARE declared for it, to be routed as that statement. nullopt with `error` set when it
// cannot run: the wrong number of arguments (42601, as PostgreSQL says it), an argument that
// is not a constant expression (a function call or subquery would run once per use of the
// parameter and on each shard: 0A000).
std::optional<std::string> sql_executed(std::string_view prepare_sql, std::string_view execute_sql,
                                        protocol::ErrorInfo& error);

// The parameter numbers ($n) a statement refers to (empty when it does not parse).
std::set<int> parameters_of(std::string_view sql);

// An INSERT whose rows leave the shard key to the database with the key values pgshard
// generated put in: the key column is added to the column list (with a value in every row)
// or replaces DEFAULT where a row has it. `position` is the key's place for an INSERT
// without a column list (-1 otherwise). nullopt when the statement is not such an INSERT
// or the values do not match its rows.
// `overriding`: the column is GENERATED ALWAYS AS IDENTITY, so the INSERT gets OVERRIDING
// SYSTEM VALUE (unless it says OVERRIDING itself) for PostgreSQL to take the values.
std::optional<std::string> with_generated_keys(std::string_view sql, const std::string& column,
                                               int position, const std::vector<std::string>& values,
                                               bool overriding = false);

// Transaction pooling shows a client only its own prepared statements: rewrites a SELECT
// that reads pg_prepared_statements so that the view is `own_sql` (a query returning the
// view's columns), as a CTE of that name. nullopt when the statement is not one SELECT
// (it then goes as sent).
std::optional<std::string> with_own_prepared_statements(std::string_view sql,
                                                        std::string_view own_sql);

// A bounded LRU of analyses keyed by statement text; one per worker thread, no locks.
class AnalysisCache {
 public:
  // Analyses made for `owner` (the configuration in force); a session still on an earlier
  // configuration (before a reload) gets its statements analysed without the cache.
  AnalysisCache(std::size_t capacity, const config::Config* owner)
      : capacity_(capacity), owner_(owner) {}
  std::shared_ptr<const Analysis> get(std::string_view sql, const config::Config& cfg);
  std::size_t size() const { return map_.size(); }
  uint64_t hits() const { return hits_; }
  void count_hit() { ++hits_; }  // a statement remembered by its session (StatementMemo)
  uint64_t misses() const { return misses_; }

 private:
  std::shared_ptr<const Analysis> lookup(std::string_view key, std::string_view sql,
                                         const config::Config& cfg,
                                         std::shared_ptr<const Analysis> known = nullptr);
  // A statement naming sharded tables whose shape (masked_: its literals as parameters
  // $1..$n, in literals_) is new: the shape is kept when putting the literals back routes
  // as the statement itself does (else kept as null). Returns the statement's analysis.
  std::shared_ptr<const Analysis> learn_shape(std::string_view sql, const config::Config& cfg);
  using Order = std::list<std::string>;
  struct Entry {
    std::shared_ptr<const Analysis> analysis;
    Order::iterator order;
  };
  std::size_t capacity_;
  const config::Config* owner_;
  Order order_;  // most recent first
  std::unordered_map<std::string_view, Entry> map_;
  std::string masked_;  // scratch for the literal-masked key
  // Shapes (literals as parameters) -> their analysis, null when the shape does not route
  // like its statements (a literal in LIMIT, ORDER BY 1, a typed literal...).
  struct Shape {
    std::shared_ptr<const Analysis> analysis;
    // The analysis with the literals of the shape's last statement: filled again for the
    // next one when nobody holds it any more (a statement's analysis is dropped once it
    // is routed), so a repeated shape copies no Analysis.
    std::shared_ptr<Analysis> built;
    std::shared_ptr<const Analysis> with(const std::vector<std::string>& literals);
  };
  std::unordered_map<std::string, Shape> shapes_;
  std::vector<std::string> literals_;  // scratch: the literals of the shape being looked up
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace pgshard::router
