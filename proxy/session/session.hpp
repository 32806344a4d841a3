// One client session: startup, authentication, then requests routed to shards over pooled
// server connections, with responses relayed back untouched on the single-shard path.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <unordered_map>

#include "protocol/auth.hpp"
#include "protocol/buffer.hpp"
#include "protocol/errors.hpp"
#include "protocol/startup.hpp"
#include "proxy/asio.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/executor/client.hpp"
#include "proxy/executor/reply_sink.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/pool/backends.hpp"
#include "proxy/pool/pool.hpp"
#include "proxy/router/router.hpp"
#include "proxy/runtime/cancel.hpp"
#include "proxy/runtime/client_stream.hpp"
#include "proxy/runtime/params.hpp"
#include "proxy/runtime/parked_relays.hpp"
#include "proxy/runtime/stats.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/batch_route.hpp"
#include "proxy/session/failures.hpp"
#include "proxy/session/login.hpp"
#include "proxy/session/phase.hpp"
#include "proxy/session/read_routing.hpp"
#include "proxy/session/relay_filter.hpp"
#include "proxy/session/settings.hpp"
#include "proxy/session/statements.hpp"
#include "proxy/txn/deadlock.hpp"
#include "proxy/txn/transaction.hpp"

namespace pgshard::runtime {
class Worker;
enum class SettingsCheck;
}  // namespace pgshard::runtime

namespace pgshard::session {

using pool::Link;
using protocol::quote_literal;
using runtime::Params;

class Session : public std::enable_shared_from_this<Session>,
                public executor::Client,
                public executor::ReplySink,
                private RelayEvents,
                private runtime::ParkedRelays::Entry {
 public:
  // Lifecycle of the client side, printable in logs.
  enum class State { kStartup, kAuth, kReady, kClosing };

  Session(runtime::Worker& worker, tcp::socket socket, uint64_t id);
  ~Session() override;

  // Serves the client until it leaves or is closed (the worker spawns it).
  awaitable<void> serve();
  // Graceful shutdown: close now if idle, else at the next idle point.
  void request_shutdown();
  void force_close();
  // The console's KILL: FATAL 57P01 to the client (if its socket takes it now), then closed.
  void kill();
  // The shard whose pooled server the session waits for now (-1: none).
  int waiting_for() const { return pool_waiting_ ? pool_waiting_->shard : -1; }
  // One line for the SIGUSR2 dump: state, what the session is waiting on, its servers.
  std::string describe() const;
  uint64_t id() const { return id_; }
  // Accepted and silent: not a byte read, none waiting to be read.
  bool unheard();
  // Still logging in a second after it connected.
  bool login_stalled() const {
    return (state_ == State::kStartup || state_ == State::kAuth) &&
           Clock::now() - connected_ > std::chrono::seconds(1);
  }
  // Closes an unheard (or stalled) connection to make room for a newer one (max_startups).
  void drop_unheard();
  // For SHOW CLIENTS / SHOW SERVERS: what the session is, and the servers it holds.
  runtime::ClientRow client_row() const;
  std::vector<const pool::ServerConn*> servers() const;
  // Its transaction, when it holds servers on several shards (for deadlock detection).
  std::optional<txn::WaitingTxn> waiting_txn() const;
  // The deadlock detector chose this session's transaction: its running request is
  // cancelled (if it is still the one the detector saw) and the client gets 40P01.
  void deadlock_victim(const txn::Victim& v);

 private:
  using Waiting = executor::Waiting;
  using ClientWatch = executor::ClientWatch;

  // ---- executor::Client: what executors and the 2PC coordinator may use ----
  runtime::Worker& worker() override { return worker_; }
  const config::Config& config() const override { return config_; }
  const config::User& user() const override { return *user_; }
  const std::string& prefix() const override;
  const char* set_waiting(const char* what) override { return std::exchange(waiting_on_, what); }
  const std::string& request() const override { return pending_; }
  // Text and parameter types of the client's statement `name` ("" is the unnamed one).
  std::string_view stored_text(std::string_view name) const override {
    return statements_.text(name);
  }
  const std::vector<int32_t>& stored_types(std::string_view name) const override {
    return statements_.types(name);
  }
  bool injected_parse(std::string_view query) const override { return statements_.injected(query); }
  router::SessionHints& hints() override { return hints_; }
  // Writes to the client; only one write is in progress at a time.
  awaitable<bool> write_client(std::string_view bytes);
  // write_client's first step, without a coroutine: true when all of `bytes` went out now
  // (no write is in progress, the socket took it all). Else false, `bytes` left as what
  // write_client still has to write (it tries again once no other write is in progress).
  bool wrote_client_now(std::string_view& bytes);
  // ---- executor::ReplySink: the client, as the executors answer it ----
  awaitable<bool> write(std::string_view bytes) override { return write_client(bytes); }
  // The request's ReadyForQuery, unless the request is a step of a pipeline pgshard runs
  // in parts (pipeline_step_): the client gets one at the pipeline's Sync.
  void end_request(std::string& out, char status) override;
  bool gone() const override { return client_gone_; }
  void mark_gone() override { client_gone_ = true; }
  void skip_to_sync() override { phase_.skip_to_sync(); }
  void answer_extended(std::string_view answer, std::string& out) override;
  awaitable<void> copy_violation(char type) override;
  protocol::Buffer& input() override { return in_; }
  // Reads at least one more chunk from the client; false on EOF/error.
  awaitable<bool> read_client() override;
  // read_client on plain TCP with nothing buffered (reads_first_chunk): completes with
  // (error, bytes read).
  auto read_first_chunk();
  bool reads_first_chunk() const;
  // Waits until every request sent to the active server has been answered.
  // False when the client left meanwhile (the servers still owe replies: never reusable).
  awaitable<bool> drain() override;
  // While pgshard waits on shards nobody reads the client: the watch does (what arrives is
  // kept in in_, up to a bound) so that a client that leaves is noticed at once, and
  // `on_gone` stops the shards' work.
  awaitable<void> watch_client(std::shared_ptr<ClientWatch> watch,
                               std::function<void()> on_gone) override;
  awaitable<void> stop_watch(ClientWatch& watch) override;
  pool::Backends& backends() override { return backends_; }
  awaitable<bool> attach(int shard) override;
  awaitable<std::variant<pool::Lease, protocol::ErrorInfo>> wait_for_server(int shard) override;
  void release(std::shared_ptr<Link> link) override;
  // Session pooling, configured or because the client pinned its servers.
  bool session_pooled() const override;
  std::string sync_prelude(pool::ServerConn& conn) override;
  std::string catch_up_settings(pool::ServerConn& conn, bool in_transaction) override;
  awaitable<bool> run_ours(const std::shared_ptr<Link>& link, const std::string& sql) override;
  awaitable<bool> write_server(const std::shared_ptr<Link>& link, std::string_view bytes) override;
  void running_on(std::vector<pool::ServerConn*> servers) override {
    fan_out_servers_ = std::move(servers);
  }
  void holding(std::vector<pool::ServerConn*> servers) override;
  awaitable<void> cancels_delivered() override;
  txn::Transaction& transaction() override { return txn_; }
  void fail_transaction() override;
  // A shard's error for the client: the cancel of a deadlock victim becomes 40P01.
  std::optional<std::string> replace_error(std::string_view body) override;
  char transaction_status() const override;

  // ---- the client side ----
  awaitable<void> run();
  awaitable<bool> welcome();
  // AuthenticationOk, the ParameterStatus of every reported setting, BackendKeyData (the
  // session's cancel key, registered now) and ReadyForQuery.
  awaitable<bool> send_welcome(const Params& server);
  // The admin console instead of the shards (database "pgshard").
  awaitable<void> console();
  // A CancelRequest with this session's key: cancels what its servers are running.
  void cancel_running(std::function<void()> done);
  awaitable<void> client_loop();
  // One request (the client's messages up to a Query, Sync or Flush), answered by one of
  // the route's actions.
  struct Request {
    char boundary;
    bool simple = false;  // a simple Query (else extended messages)
    bool lone = false;    // one statement pgshard may answer itself (see control_transaction)
  };
  // One whole client message at the front of in_ (`size` bytes); false when the session
  // ends. Messages gather in pending_ up to a boundary (Query, Sync, Flush).
  awaitable<bool> on_message(char type, std::size_t size);
  // Adds an extended-protocol message that only joins the request being gathered (Parse,
  // Bind, Describe, Execute, Close: most messages) to pending_; false when the message needs
  // on_message (a boundary, COPY, a batch too large...).
  bool gather(char type, std::size_t size);
  // Parse, Bind, Describe, Execute, Close: messages that only join the request.
  static bool joins_request(char type);
  // Moves `size` bytes of such messages from the front of in_ to pending_.
  void gathered(std::size_t size);
  // Moves the `size` bytes at the front of in_ to pending_.
  void take_front(std::size_t size) {
    pending_.append(in_.data(), size);
    in_.consume(size);
  }
  // A message making pending_ `pending_after` bytes needs on_message to judge it: COPY, a
  // batch being skipped, one growing too large.
  bool special(std::size_t pending_after) const;
  // Takes a boundary (Query, FunctionCall, Sync, Flush) that ends the request being
  // gathered into pending_; false when it needs on_message (COPY, a batch being skipped or
  // too large). The request then runs: handle_request, then ends_request.
  bool takes_boundary(char type, std::size_t size);
  // Moves the message at the front of in_ (`size` bytes) to pending_, unless COPY, a batch
  // being skipped or one growing too large needs on_message to judge it.
  bool take_unless_special(std::size_t size);
  void ends_request() { copy_only_ = true; }
  awaitable<bool> refuse_batch();
  // Charges what in_ and pending_ hold to the process-wide listen.max_buffered_bytes:
  // false when that would go over it.
  bool charge_buffers();
  // Over the budget: the batch (or the message arriving) is refused with 53200 and dropped
  // as it streams in; false when the client is closed.
  awaitable<bool> over_buffer_budget();
  // Drops discard_ bytes of in_ as they arrive; a message being skipped streams out too.
  void drop_discarded();
  awaitable<void> handle_request(char boundary);
  // The part of handle_request after routing: lookups and rewrites done first, what the
  // route says of the session taken on, then its action run by its handler.
  awaitable<void> handle_routed(Request& req, router::Route& route);
  // handle_routed's last step: the route's action run by its handler.
  awaitable<void> run_action(const Request& req, router::Route& route);
  // The handlers of the actions that run a statement, each in its own file: Forward
  // (session_forward.cpp); FanOut, Ddl and CopyIn (session_fan_out.cpp); SplitPipeline
  // (session_extended.cpp); Answer and Refuse are answer_locally (session_answer.cpp).
  awaitable<void> run_forward(const Request& req, const router::Route& route, int shard);
  // ---- reads on replicas (session_reads.cpp) ----
  // Where a Forward to `shard` runs: the shard's primary (`shard`) or one of its replicas
  // (a target past the shards), nullopt when it must wait (read-your-writes); the awaitable
  // form waits at most read_your_writes.wait.
  std::optional<int> read_target_now(const router::Route& route, int shard, char boundary);
  awaitable<int> read_target(const router::Route& route, int shard, char boundary) override;
  // Whether a Forward asks read_target where it runs: a read that may go to a replica, and
  // every statement of a transaction block (its part on the shard may be on one).
  bool picks_host(const router::Route& route) const {
    return replicas_ && (route.read_only || txn_.state() != txn::State::kIdle);
  }
  // read_target_now's choice among `shard`'s hosts as a read's (nullopt: wait).
  std::optional<int> chosen_read_host(int shard);
  // Inside a transaction block: the host its part on `shard` runs on (a transaction never
  // moves hosts); a shard new to it goes to a replica only in a READ ONLY transaction
  // (replica_transaction), chosen as a read is; else to its primary.
  std::optional<int> transaction_target_now(const router::Route& route, int shard);
  std::optional<int> placed_in_transaction(int shard) const;
  bool replica_transaction(const router::Route& route) const;
  // A statement taking a lock, or calling what may lock or write (Route::side_effects;
  // not a write, which PostgreSQL refuses there itself), in a READ ONLY transaction whose
  // part on one of its shards runs on a replica: the refusal (0A000); nullopt when it may run.
  std::optional<protocol::ErrorInfo> unsafe_on_replica(const router::Route& route) const;
  // What it leaves in the server session past the transaction (a cursor WITH HOLD, SQL
  // PREPARE, a temporary object, LISTEN): on a replica the client's later statements, on
  // the primary, would not find it.
  static bool keeps_server_state(const router::Route& route);
  // Locks, may act where pgshard cannot see, or keeps server state: not run on a replica
  // inside a READ ONLY transaction unless it is the shard part's first statement.
  static bool replica_sensitive(const router::Route& route);
  // The session's search_path names pg_catalog after another schema: a function called by
  // its plain name may be a user's.
  bool catalog_shadowed() const;
  // Attaches a server of `target` when it is a replica; one that cannot give a server
  // (down before its health check saw it) is banned and the read goes to another host of
  // the shard, the primary last. Returns where the read runs, -1 when the client was
  // answered (a cancelled or terminated wait).
  awaitable<int> reach_read_target(const router::Route& route, int target, char boundary);
  // A routed request that may write: its shards' primaries hold the session's newest writes.
  // (Not a BEGIN or SET TRANSACTION, nor a statement that only changes settings, nor one in
  // a READ ONLY transaction: they write nothing a replica shows.)
  void note_writes(const router::Route& route) {
    if (!replicas_ || route.read_only || route.txn == router::TxnControl::kBegin ||
        route.txn == router::TxnControl::kSetTransaction ||
        (txn_.state() != txn::State::kIdle &&
         txn_.read_only(settings_.value("default_transaction_read_only"),
                        route.transaction_modes)) ||
        (!route.settings.empty() && !route.write && !route.takes_snapshot))
      return;
    reads_.wrote(router::shards_of(route), config_.shards.size(), requests_);
  }
  // pgshard.read_token: a token the client SET is taken into its own; the hint then shows
  // the session's token (SHOW pgshard.read_token answers it). settle_read_token first waits
  // (bounded) until every write of the session has its token.
  void sync_read_token();
  bool request_in_flight() const {  // a request of the client still owes replies
    return backends_.active && backends_.active->lease && !backends_.active->lease->replies.empty();
  }
  awaitable<void> settle_read_token();
  std::string shown_token_;  // the token text the hint holds now
  // The shard a target (a shard's primary or one of its replicas) belongs to.
  int shard_of_target(int target) const { return config_.host_of(target).shard; }
  awaitable<void> run_fan_out(const Request& req, const router::Route& route);
  awaitable<void> run_schema_change(const Request& req, const router::Route& route);
  awaitable<void> run_copy_in(const Request& req, const router::Route& route,
                              const router::CopyIn& copy);
  awaitable<void> run_pipeline_split(const Request& req, const router::Route& route);
  // Whether a request may be routed at once: nothing waits ahead of it and it continues no
  // pipeline or batch (handle_request's cases before routing).
  bool routes_at_once(char boundary) const;
  void begin_request();
  // handle_routed's common case, without a coroutine: the route is a plain forward to a
  // server the session has or takes idle now. False when handle_routed must run (nothing
  // done); true with `rest` as forwarded_now leaves it.
  bool forwarded_routed(router::Route& route, char boundary, std::string_view& rest);
  awaitable<bool> forwarded_after_wait(router::Route& route, char boundary, std::string_view& rest);
  void log_forward(const router::Route& route, int target);
  // A pipeline (extended batch up to Sync) whose statements go to different shards, run as
  // PostgreSQL runs one: statement by statement in one transaction (pgshard's own when the
  // client has none, committed at the Sync, rolled back after an error, the statements
  // after which are skipped); the client sees its replies and one ReadyForQuery at the
  // Sync. A part ending in Flush leaves the transaction open for the parts after it. False
  // when the batch is not such a pipeline (transaction control in it, a simple Query).
  awaitable<bool> run_split_pipeline();
  // run_split_pipeline's plan: the pending pipeline's statements in groups, consecutive
  // ones for the same shard together (`synced`: a Sync ends it); nullopt when it is not
  // such a pipeline.
  std::optional<std::vector<std::string>> pipeline_groups(bool& synced);
  // The client's next part of an open extended batch (sent after a Flush) needs a shard
  // other than the batch's server; and failing that batch (see the definition).
  bool continues_elsewhere();
  awaitable<void> abandon_open_batch(char boundary);
  // A request run_split_pipeline runs for the client: a part of its pipeline (the client's
  // messages and pgshard's Sync, whose ReadyForQuery is not the client's), or pgshard's
  // BEGIN, COMMIT or ROLLBACK of the pipeline's transaction (only its errors and notices
  // reach the client). What is not the client's is never sent: the server's reply queue
  // hides it (prepare_request), and pgshard's own answers leave it out (end_request,
  // control_transaction).
  enum class PipelineStep : uint8_t { kNone, kPart, kControl };
  PipelineStep pipeline_step_ = PipelineStep::kNone;
  awaitable<void> run_pipeline_step(PipelineStep step, std::string request, char boundary);
  // A server of the split pipeline's transaction was lost while another shard ran its part
  // (its relay could not tell the client then): the loss is the error of the pipeline's
  // next statement, or of its Sync, so the client is never left without one (written to
  // `out`).
  void note_pipeline_loss(std::string& out);
  // After pgshard failed an extended batch: skips to its Sync (answered by pgshard, no
  // server has anything of the batch); true if nothing is left.
  awaitable<bool> skip_failed_batch(char boundary);
  // Completes the statement as a lookup or rewrite route says (Lookup: session_lookup.cpp;
  // GenerateKeys, InsertSelect, UniqueIds: session_rewrite.cpp); returns an error (its
  // SQLSTATE in `code`) or "".
  awaitable<std::string> complete_statement(const router::Route& route, std::string& code);
  // Reads directory entries and catalog columns a Lookup needs into the worker's caches.
  awaitable<std::string> look_up(const router::Lookup& lookup);
  // Puts generated values for the rows of an INSERT into its statement.
  awaitable<std::string> generate_keys(const router::GenerateKeys& generate);
  // Puts this instance's ids for the request's pgshard.unique_id() calls into its statement;
  // returns an error or "".
  awaitable<std::string> put_unique_ids();
  // Runs the SELECT of the request's INSERT ... SELECT and puts its rows in; returns an
  // error (its SQLSTATE in `code`) or "".
  awaitable<std::string> insert_select(std::string& code);
  router::Context routing_context();
  // Completes the statement of a lookup or rewrite route, then routes it again, until it
  // routes to an action that runs (a few times at most).
  awaitable<void> resolve_lookups(Request& req, router::Route& route);
  // Whether the request is one statement pgshard may answer as transaction control itself.
  bool lone(const Request& req, const router::Route& route) const;
  // pgshard's own answer or refusal.
  awaitable<void> answer_locally(const router::Route& route, const Request& req);
  // Takes on what the route says of the session: hints, pinning, settings to track (those
  // of a request that runs something: one ending at `boundary`).
  void adopt(const router::Route& route, char boundary);
  // Transaction control pgshard does itself (deferred BEGIN, COMMIT of a transaction on
  // several shards, refusals in a failed transaction, savepoint limits); true if answered.
  awaitable<bool> control_transaction(const router::Route& route, const Request& req);
  // control_transaction's answer to a lone BEGIN (deferred until a statement picks the
  // shard) or a COMMIT/ROLLBACK of a transaction no shard has seen.
  awaitable<void> control_locally(const router::Route& route, const Request& req);
  // pgshard's COMMIT/ROLLBACK ending a split pipeline's transaction on several shards: the
  // client gets its error or warning, if any (its Sync's ReadyForQuery follows); true when
  // it committed.
  awaitable<bool> end_pipeline_distributed(bool commit);
  // PREPARE TRANSACTION / COMMIT PREPARED / ROLLBACK PREPARED from the client (two_phase.cpp):
  // true when answered (refused); else `route` goes where the identifier lives.
  awaitable<bool> client_two_phase(router::Route& route, const Request& req);
  // The first shard, other than `skip`, holding prepared transaction `gid` in this
  // database; -1 when none does. `others`: set when another pgshard user prepared it.
  awaitable<int> shard_with_prepared(const std::string& gid, int skip, bool* others);
  // A Query of several statements with transaction control in it (two_phase.cpp): refused
  // (true) when the transaction it would end lives on other shards too.
  awaitable<bool> refuse_split_control(const router::Route& route, const Request& req);
  // Relays pending_ to `target`'s server (moving the client there first): forwarded_now,
  // else forward_waiting; then what the socket did not take at once.
  awaitable<void> forward(int target, char boundary);
  // forward's first step, without a coroutine: the request goes to the server attached on
  // `target`, or to an idle pooled one of it. False when forward must wait (nothing done);
  // true with `rest` the part of the request the socket has not taken yet (write_server
  // writes it, then pending_ is cleared).
  bool forwarded_now(int target, char boundary, std::string_view& rest);
  // A transaction's server on a host that no longer takes its shard's writes (a failover):
  // closed, so the request fails as on a lost server (Worker::demoted_primary).
  void leave_if_demoted(pool::ServerConn& conn);
  // The rest of forward when forwarded_now could not: the client moved to `target` (the
  // earlier replies drained, the transaction spread, a server waited for), then the request
  // sent as forwarded_now does, `rest` left as it leaves it (empty when nothing was sent).
  awaitable<void> forward_waiting(int target, char boundary, std::string_view& rest);
  // The part of the request forwarded_now left (the socket was full), written to the
  // active server; pending_ cleared.
  awaitable<void> send_rest(std::string_view rest);
  // prepare_request, then as much of pending_ as the socket takes now (`rest`: the part it
  // did not take; pending_ cleared when it took all or the write failed).
  void sent_now(const std::shared_ptr<Link>& link, bool joins_transaction, char boundary,
                std::string_view& rest);
  // attach's common case, without a coroutine: a kept server of the shard, or an idle
  // pooled one (false: none).
  bool attached_now(int shard);
  pool::Pool& pool_of(int shard);
  // The server becomes the active one, its replies relayed by a server_loop.
  void start_relay(pool::Lease lease, int shard);
  // write_server's common case, without a coroutine: the socket takes all of `bytes` now
  // (its outcome), or `bytes` is left as the rest (nullopt).
  std::optional<bool> write_server_now(const std::shared_ptr<Link>& link, std::string_view& bytes);
  bool server_written(const std::shared_ptr<Link>& link, error_code ec);
  // Puts pgshard's preludes ahead of pending_ and pushes what the server will owe.
  void prepare_request(Link& link, bool joins_transaction, char boundary);
  awaitable<void> server_loop(std::shared_ptr<Link> link);
  // server_loop's steps: whether the client left (the relay stops); a cancelled read ends
  // the relay (true) or reads on; a lost server answered to the client; whether the relay
  // ends after a reply; the link's end (its server handed back, the link kept spare).
  bool stop_for_gone_client(Link& link);
  // The client left while `conn` was mid-transaction or mid-request: it is closed, and a
  // statement it still runs is cancelled.
  void abandon(pool::ServerConn& conn);
  bool read_interrupted(const std::shared_ptr<Link>& link);
  awaitable<void> relay_lost(const std::shared_ptr<Link>& link, std::string_view relay);
  bool relay_ends(const std::shared_ptr<Link>& link);
  void link_finished(std::shared_ptr<Link>& link);
  awaitable<void> finish();
  awaitable<void> idle_watch();
  awaitable<void> send_fatal(const protocol::ErrorInfo& e);
  awaitable<void> flush_copy();
  // Replies the client still waits for from the active server (Query/Sync/FunctionCall).
  int owed() const;
  // Answers a failure as failures.hpp rules it: a FATAL ends the connection; an ERROR ends
  // the request being assembled (ReadyForQuery, or skip to Sync after a Flush). `e` brings
  // its own SQLSTATE where the rule has none (refusals).
  awaitable<void> fail(Failure f, std::string message, std::string hint = {});
  awaitable<void> fail(Failure f, protocol::ErrorInfo e, char boundary);
  // The active server was lost before a request could be written to it: an error for the
  // client (the transaction, if any, fails).
  awaitable<void> lost_before_request(char boundary);
  router::Route route_batch(bool* simple);
  // SQL cursors: a DECLARE placed on one shard is remembered, and FETCH, MOVE and CLOSE of
  // that name go to the same shard (the client's server there).
  void follow_cursors(router::Route& r);
  // SQL PREPARE of a statement on sharded tables, its EXECUTE and DEALLOCATE
  // (session_sql_prepared.cpp): kept here, answered here, an EXECUTE put in the request as
  // its statement (true: route the request again).
  bool follow_sql_prepared(router::Route& r, bool simple);
  // A REPEATABLE READ/SERIALIZABLE transaction whose shards' snapshots a cross-shard commit
  // lies between fails with 40001 (txn::Snapshots); its next statement or COMMIT says so.
  void check_snapshots();

  // ---- RelayEvents: what the client's replies mean for its session ----
  int32_t client_pid() const override { return key_.pid; }
  void schema_changed() override;
  // Settings and transaction state after the client's request; false when the client must
  // be told it is in a transaction (its BEGIN is still pgshard's).
  bool client_ready(pool::ServerConn& conn) override;
  void copy_in_started() override { phase_.copy_started(); }
  void reported(pool::ServerConn& conn, std::string_view name, std::string_view value) override;
  // A client statement failed on a server. Under a BEGIN pgshard still holds (the statement
  // only prepared, outside the transaction), the transaction fails as PostgreSQL's would.
  char client_status() const override { return transaction_status(); }
  void client_failed() override {
    settings_.failed();
    if (txn_.deferred()) txn_.fail();
  }
  void client_rolled_back() override { settings_.rolled_back(); }
  void own_statement_failed(pool::ServerConn& conn) override;
  // A user-defined function may have changed settings pgshard cannot see: the request ends
  // with a look at the server's session settings, which the client then takes on.
  void finishing_row(pool::ServerConn&, std::string_view body) override {
    settings_.finishing_row(body);
  }

  bool can_detach(const Link& link) const;
  bool idle() const;
  void server_lost(const std::shared_ptr<Link>& link, std::string& out);
  void maybe_close_for_shutdown();
  // pg_terminate_backend of this client's pid by another client (CancelRegistry::signal).
  void terminate();
  // pg_terminate_backend / pg_cancel_backend of a client's pid: answered here (true), or
  // not a client's pid (false: the statement goes to a server).
  awaitable<bool> signal_client(const router::Route& route, const Request& req);

  runtime::Worker& worker_;
  std::atomic<std::size_t>& buffered_total_;  // Shared::buffered (see charge_buffers)
  const config::Config& config_;
  runtime::ClientStream stream_;
  DrainedSocket client_reads_{stream_.socket()};  // an idle client's next request
  // Ends that read when a write finds the client gone: a reset that came with the client's
  // last bytes raises no later edge for the read to see (drained_read.hpp).
  pool::RelayWake client_read_wake_;
  // A write to the client failed: it is gone, and its pending read ends.
  void client_write_failed();
  uint64_t id_;
  std::string peer_;
  mutable std::string prefix_;
  mutable bool prefix_has_user_ = false;
  State state_ = State::kStartup;

  protocol::Buffer in_;
  // Memory of in_ and pending_ charged to Shared::buffered (see charge_buffers); bytes of
  // a refused message still to drop as they arrive.
  std::size_t charged_ = 0;
  std::size_t discard_ = 0;
  std::string pending_;                   // frames of the request being assembled
  Identity identity_;                     // what the startup packet said
  const config::User* user_ = nullptr;    // identity_.user once logged in (or own_user_)
  std::optional<config::User> own_user_;  // a session of another database (User::database)
  Settings settings_;                  // the client's session settings, and what its servers have
  std::set<std::string> temp_tables_;  // TEMP tables the client created
  struct Cursor {
    int shard = 0;
    bool hold = false;  // WITH HOLD: outlives its transaction
  };
  std::map<std::string, Cursor> cursors_;  // SQL cursors by name (follow_cursors)
  // SQL PREPAREs of statements on sharded tables, by name: the client's PREPARE text.
  std::map<std::string, std::string> sql_prepared_;
  bool takes_snapshot_ = false;  // the routed request takes a snapshot (Route::takes_snapshot)
  bool ddl_running_ = false;     // DDL was sent: the catalog changes again when it is answered
  bool pinned_ = false;
  txn::Transaction txn_;
  uint64_t requests_ = 0;  // requests handled (the deadlock detector tells them apart)
  // Set while the deadlock detector's cancel of the running request is on its way: the
  // DETAIL of the 40P01 the client gets instead of 57014.
  std::string deadlock_detail_;
  // While attach() or wait_for_server() waits for a pool that lends nothing now: the wait
  // the deadlock detector sees (an edge to each holder of the pool's servers) and ends when
  // this is its victim.
  struct PoolWaiting {
    int shard = 0;
    const pool::Pool* pool = nullptr;
    asio::cancellation_signal* stop = nullptr;
    Clock::time_point since = Clock::now();
    // Who emitted `stop` besides the deadlock detector (deadlock_detail_) and the client
    // leaving: its CancelRequest (the statement ends with 57014) or pg_terminate_backend
    // (the session ends with FATAL 57P01).
    enum class Stopped : uint8_t { kNo, kCancel, kTerminate } stopped = Stopped::kNo;
    // A multi-shard statement's wait (wait_for_server), not attach()'s: its executor
    // answers the client, and the session ends after the request (terminate()).
    bool statement = false;
  };
  std::optional<PoolWaiting> pool_waiting_;
  // The one wait for a pooled server, attach()'s and wait_for_server()'s: what it got (a
  // server that came as the wait was stopped is returned with it) and who stopped it.
  struct PoolWaitEnd {
    std::variant<pool::Lease, std::string> got;
    PoolWaiting::Stopped stopped = PoolWaiting::Stopped::kNo;
    bool two_primaries = false;  // refused: the shard has more than one primary (08006)
  };
  awaitable<PoolWaitEnd> wait_in_pool(int shard, bool statement);
  // How long a wait for a pooled server lasts before the client's socket is watched for its
  // leaving (a watch costs more than most waits).
  static constexpr config::Millis kWatchClientAfter{10};
  // attach's end of a wait: the server becomes the active one (true), or the client is told
  // why there is none.
  awaitable<bool> take_server(PoolWaitEnd end, int shard);
  // The boundary of the request being handled (take_server fails it as fail() does).
  char request_boundary_ = protocol::msg::kSync;
  // The client's error for a wait that got no server (fails a transaction block on cancel).
  protocol::ErrorInfo pool_wait_error(const PoolWaitEnd& end);
  // A deadlock victim's servers roll back and go back to the pool (requests wait until they
  // have); the transaction stays failed until the client ends it.
  bool aborting_ = false;
  awaitable<void> roll_back_victim();
  // The victim's transaction (its serial) whose servers a statement on several shards still
  // used when it was cancelled: they roll back once that statement has ended.
  std::optional<uint64_t> victim_after_statement_;
  awaitable<void> roll_back_after_statement();
  // The rolled-back victim's servers leave it: idle ones kept in session pooling, the rest
  // back to the pool (one still in a transaction is discarded).
  void hand_back_victim_servers();
  // Servers a multi-shard statement is using right now (for CancelRequest).
  std::vector<pool::ServerConn*>
      fan_out_servers_;  // keeps its servers until it disconnects (see Route::pins)
  // The pool's servers a multi-shard statement has taken (holding()), and when it took the
  // first: the age of an autocommit statement the deadlock detector compares.
  std::vector<pool::ServerConn*> statement_servers_;
  Clock::time_point statement_began_{};
  // This session as the deadlock detector sees it: a transaction block on several shards,
  // or an autocommit statement on several shards (statement_servers_).
  void add_waits(txn::WaitingTxn& t) const;
  // The detector's victim is an autocommit statement: it fails alone (40P01), and the
  // executor rolls it back on every shard.
  void statement_victim(const txn::Victim& v);
  // Cancels what the victim's servers run, counting the cancels until they are delivered.
  void cancel_victim();
  router::SessionHints hints_;
  Statements statements_{worker_.shared().catalog_generation};  // the client's prepared statements
  uint64_t round_robin_ = 0;
  // Reads on replicas and read-your-writes (session_reads.cpp); `replicas_`: some shard of
  // the map has replicas (else reads never ask).
  ReadRouting reads_{id_};
  bool replicas_ = ReadRouting::any_replicas(config_);
  std::optional<int> read_chosen_;  // the fast path's choice for this request's Forward
  int server_wanted_ = -1;          // the fast path's shard when only a server was missing
  router::StatementMemo memo_;      // the statement routed last (extended protocol)
  std::vector<pool::Pool*> pools_;  // the worker's pool of each shard, once looked up
  runtime::CancelKey key_;

  pool::Backends backends_;  // this client's servers; backends_.active takes its requests
  bool writing_server_ = false;
  int relays_ = 0;             // server_loop coroutines relaying (for the SIGUSR2 dump)
  const char* relay_at_ = "";  // what the relay last waited on (for the SIGUSR2 dump)
  uint64_t relay_server_ = 0;  // the server it last read
  // A server_loop whose server went back to the pool waits here for the session's next one
  // (next_link_): spawning a coroutine per transaction cost more than the rest of its relay.
  Baton next_relay_;
  std::shared_ptr<Link> next_link_;
  // Hands `link` (null: none, the relay ends) to the relay waiting in next_relay_; false if
  // none waits.
  bool wake_relay(std::shared_ptr<Link> link);
  void end_parked_relay() override { wake_relay(nullptr); }
  std::shared_ptr<Link> spare_link_;  // a finished relay's link, for the next one
  bool client_writing_ = false;
  bool client_gone_ = false;
  // Where the client is in the protocol (batch open, COPY, skipping to Sync...).
  PhaseMachine phase_;
  // pending_ holds only CopyData/CopyDone/CopyFail (streamed to the server as they come).
  // Not a phase: it says what the buffer holds, whatever the phase (CopyData outside COPY
  // is passed on for the server to ignore, as PostgreSQL's own does).
  bool copy_only_ = true;
  bool counted_ = false;  // counted in shared.logged_in
  const char* waiting_on_ = "client";
  bool shutdown_requested_ = false;
  bool closing_for_shutdown_ = false;
  bool terminate_requested_ = false;  // pg_terminate_backend: close once no statement runs
  bool terminated_told_ = false;      // its FATAL replaced the cancelled statement's error
  Event drained_;
  Event aborted_;
  // A deadlock victim's cancels sent and not yet delivered (cancel_victim): its servers are
  // not rolled back or handed on before they are.
  int cancels_on_way_ = 0;
  Event cancels_landed_;
  Event client_write_done_;
  Event server_write_done_;
  asio::steady_timer idle_timer_;
  Clock::time_point last_activity_ = Clock::now();
  const Clock::time_point connected_ = Clock::now();
};

const char* to_string(Session::State s);

}  // namespace pgshard::session
