// What the executors (fan-out, DDL, COPY split, directory lookups) and the two-phase commit
// coordinator need of the client's session: its request, its servers, its transaction. What
// they answer goes to the ReplySink they are given (reply_sink.hpp). session::Session
// implements both; nothing else of the session is reachable.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"
#include "protocol/buffer.hpp"
#include "protocol/errors.hpp"
#include "proxy/asio.hpp"
#include "proxy/pool/backends.hpp"
#include "proxy/router/router.hpp"
#include "proxy/txn/transaction.hpp"

namespace pgshard::runtime {
class Worker;
}  // namespace pgshard::runtime

namespace pgshard::executor {

// Watches the client's socket while pgshard waits on servers (see Client::watch_client).
struct ClientWatch {
  explicit ClientWatch(const asio::any_io_executor& ex) : ended(ex) {}
  asio::cancellation_signal stop;
  bool stopping = false;
  bool running = true;
  Event ended;
};

class Client {
 public:
  virtual ~Client() = default;

  virtual runtime::Worker& worker() = 0;
  virtual const config::Config& config() const = 0;
  virtual const config::User& user() const = 0;
  // The session's log prefix ("C-12: app@10.0.0.5:50312").
  virtual const std::string& prefix() const = 0;
  // Names what the session waits on (the SIGUSR2 dump); returns the previous label.
  virtual const char* set_waiting(const char* what) = 0;

  // ---- the request ----
  // The client's messages being answered, up to their boundary (Query, Sync or Flush).
  virtual const std::string& request() const = 0;
  // Text and parameter types of the client's statement `name` ("": the unnamed one).
  virtual std::string_view stored_text(std::string_view name) const = 0;
  virtual const std::vector<int32_t>& stored_types(std::string_view name) const = 0;
  // True for pgshard's own unnamed Parse in the request (generated keys put in the text of
  // the statement the Bind after it runs): its ParseComplete is not the client's.
  virtual bool injected_parse(std::string_view query) const = 0;
  virtual router::SessionHints& hints() = 0;

  // ---- the client ----
  virtual bool gone() const = 0;
  virtual void mark_gone() = 0;
  // pgshard failed an extended batch ending in Flush: skip to its Sync, as PostgreSQL does.
  virtual void skip_to_sync() = 0;
  // Appends the replies to every message of the extended request, `answer` for its Execute
  // (its ReadyForQuery as the session's ReplySink ends a request).
  virtual void answer_extended(std::string_view answer, std::string& out) = 0;
  // A non-COPY message arrived during COPY FROM STDIN: ERROR, then FATAL, as PostgreSQL.
  virtual awaitable<void> copy_violation(char type) = 0;
  // The client's unread bytes, and reading more of them (false: the client is gone).
  virtual protocol::Buffer& input() = 0;
  virtual awaitable<bool> read_client() = 0;
  // Waits until the active server has answered everything (false: the client left).
  virtual awaitable<bool> drain() = 0;
  // Watches the client while nobody reads it: `on_gone` runs if it leaves. Pipelined
  // requests are kept for later. Spawn it; end it with stop_watch.
  virtual awaitable<void> watch_client(std::shared_ptr<ClientWatch> watch,
                                       std::function<void()> on_gone) = 0;
  virtual awaitable<void> stop_watch(ClientWatch& watch) = 0;

  // ---- servers ----
  virtual pool::Backends& backends() = 0;
  // Makes `shard`'s server active (kept, or from the pool, with its relay); on failure the
  // client has been answered.
  virtual awaitable<bool> attach(int shard) = 0;
  // Where a read for `shard` runs: the shard (its primary) or one of its replicas, a pool
  // target past the shards (config::Config::host_of); may wait for read-your-writes.
  virtual awaitable<int> read_target(const router::Route& route, int shard, char boundary) = 0;
  // A server of `shard` from the pool for a statement on several shards (fan-out, COPY in
  // split, DDL), with no relay. The wait is the client's, as attach()'s: SHOW CLIENTS shows
  // it waiting, the deadlock detector sees it, and a CancelRequest (57014, failing a
  // transaction block), pg_terminate_backend (FATAL 57P01, the session then ends), the
  // deadlock detector (40P01) or the client leaving end it at once. On failure: the error
  // for the client, who has not been answered.
  virtual awaitable<std::variant<pool::Lease, protocol::ErrorInfo>> wait_for_server(int shard) = 0;
  virtual void release(std::shared_ptr<pool::Link> link) = 0;
  // Session pooling, configured or because the client pinned its servers.
  virtual bool session_pooled() const = 0;
  // pgshard's statement bringing `conn` to the client's settings ("" when it has them),
  // its reply expected on the server's queue.
  virtual std::string sync_prelude(pool::ServerConn& conn) = 0;
  // pgshard's statement giving `conn`, a server the client's request is about to run on,
  // the SET and SET LOCAL statements its transaction ran on other servers (`in_transaction`:
  // the request runs inside it there), its reply expected on the server's queue; "" when
  // there are none.
  virtual std::string catch_up_settings(pool::ServerConn& conn, bool in_transaction) = 0;
  // Runs pgshard's own statement on an attached server through its relay; false when the
  // server was lost. The outcome is in its replies.tag / error.
  virtual awaitable<bool> run_ours(const std::shared_ptr<pool::Link>& link,
                                   const std::string& sql) = 0;
  virtual awaitable<bool> write_server(const std::shared_ptr<pool::Link>& link,
                                       std::string_view bytes) = 0;
  // The servers a multi-shard statement runs on now (a CancelRequest reaches them).
  virtual void running_on(std::vector<pool::ServerConn*> servers) = 0;
  // The servers of the pool a multi-shard statement has taken so far, from its first until
  // it ends (cleared with {}): outside a transaction block the deadlock detector sees the
  // statement as a transaction holding them (its row locks, and servers others wait for).
  virtual void holding(std::vector<pool::ServerConn*> servers) = 0;
  // Until the cancels pgshard sent to the client's servers (a deadlock victim's) have
  // reached them: a server handed on earlier could have the next user's statement
  // cancelled by one that lands late (57014 for a client that asked nothing).
  virtual awaitable<void> cancels_delivered() = 0;

  // ---- the transaction ----
  virtual txn::Transaction& transaction() = 0;
  // An error pgshard gives the client fails its open transaction block (no-op outside one).
  virtual void fail_transaction() = 0;
  // The status byte of the client's next ReadyForQuery.
  virtual char transaction_status() const = 0;
  // A shard's error for the client (body of its ErrorResponse): what to send instead, if
  // anything (a whole message; a deadlock victim's cancel becomes 40P01).
  virtual std::optional<std::string> replace_error(std::string_view body) = 0;
};

// Names what the session waits on while in scope.
class Waiting {
 public:
  Waiting(Client& c, const char* what) : c_(c), before_(c.set_waiting(what)) {}
  ~Waiting() { c_.set_waiting(before_); }
  Waiting(const Waiting&) = delete;
  Waiting& operator=(const Waiting&) = delete;

 private:
  Client& c_;
  const char* before_;
};

}  // namespace pgshard::executor
