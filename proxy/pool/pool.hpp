// Per-worker pools of server connections, one per (shard, user), with a bounded size,
// a FIFO wait queue and a timeout. Checkout returns a move-only Lease.
#pragma once

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/pool/server_conn.hpp"

namespace pgshard::pool {

class Pool;

// Holds a checked-out connection. Its destructor returns it to the pool, which keeps it
// only if it is idle and clean, and otherwise closes it.
class Lease {
 public:
  Lease() = default;
  Lease(Pool* pool, std::unique_ptr<ServerConn> conn) : pool_(pool), conn_(std::move(conn)) {}
  Lease(Lease&& o) noexcept = default;
  Lease& operator=(Lease&& o) noexcept {
    release();
    pool_ = o.pool_;
    conn_ = std::move(o.conn_);
    return *this;
  }
  ~Lease() { release(); }

  ServerConn* operator->() const { return conn_.get(); }
  ServerConn& operator*() const { return *conn_; }
  explicit operator bool() const { return conn_ != nullptr; }
  void release();

 private:
  Pool* pool_ = nullptr;
  std::unique_ptr<ServerConn> conn_;
};

struct PoolStats {
  int total = 0;  // idle + leased + connecting
  int idle = 0;
  int waiting = 0;     // clients queued for a connection
  int connecting = 0;  // connections logging in
  int max_size = 0;
  uint64_t max_wait_us = 0;  // the longest a queued client has waited so far
};

// Who may free a server of a pool that lends none now (the deadlock detector's pool-wait
// edges): any holder that finishes frees one.
struct PoolHolders {
  std::vector<int32_t> pids;  // backend pids of the servers lent out
  bool spare = false;         // one may come without a holder finishing (idle, room, PAUSE)
};

// Whether the shard answered the pool's last attempt to connect.
struct PoolHealth {
  Clock::time_point last_ok{};  // last successful login
  Clock::time_point last_failure{};
  std::string last_error;  // the last failure's message
};

class Pool {
 public:
  Pool(asio::any_io_executor ex, BackendTarget target, int max_size, config::Millis wait_timeout,
       config::Millis connect_timeout);
  ~Pool();

  // A connection, or an error message (connect failure naming the shard, or wait timeout).
  // A terminal cancellation on `stop` ends a wait for a busy pool at once (its client left).
  // `in_transaction`: for a client already inside a transaction, which PAUSE lets finish
  // (it takes the servers it needs; PAUSE waits for them too), as PgBouncer does.
  awaitable<std::variant<Lease, std::string>> acquire(asio::cancellation_slot stop = {},
                                                      bool in_transaction = false);
  // acquire's common case, without a coroutine: an idle connection, if one is trusted.
  std::optional<Lease> lend_idle(bool in_transaction = false);
  // Whether acquire() would lend or open a connection without waiting for one.
  bool lends_now() const { return !paused_ && (!idle_.empty() || total_ < max_size_); }
  void give_back(std::unique_ptr<ServerConn> conn);
  // Closes idle connections unused for longer than `idle`.
  void prune(config::Millis idle);
  // At exit: closes idle connections; connections given back later are closed too.
  void close_all();
  PoolStats stats() const;
  PoolHolders holders() const;
  // Whether its connections count requests, transactions, latency, errors and bytes (the
  // map's admin.stats; waits and logins are always counted).
  void count_requests(bool on) { count_requests_ = on; }
  // A reload changed pool_size or timeouts: a smaller pool closes connections as they
  // come back until it fits; a larger one lets waiters open theirs.
  void set_limits(int max_size, config::Millis wait_timeout, config::Millis connect_timeout);
  // PAUSE: new acquisitions wait (up to the pool wait timeout) until resume(), except for
  // transactions already running; servers already leased finish their transactions.
  // RESUME lets the waiters go on.
  void pause(bool on);
  bool paused() const { return paused_; }
  // RECONNECT: idle connections close now, leased ones when they come back.
  void reconnect();
  Counters& counters() { return counters_; }
  const Counters& counters() const { return counters_; }
  const PoolHealth& health() const { return health_; }
  // Idle connections (for SHOW SERVERS).
  const std::deque<std::unique_ptr<ServerConn>>& idle() const { return idle_; }
  const BackendTarget& target() const { return target_; }
  // Parameters the server reported at its first login (server_version, encodings...).
  const std::map<std::string, std::string>& server_params() const { return server_params_; }

 private:
  struct Waiter {
    asio::steady_timer timer;
    std::unique_ptr<ServerConn> conn;  // handed over by give_back
    bool slot = false;                 // a slot freed: the waiter may open a connection
    Clock::time_point since = Clock::now();
  };
  awaitable<std::variant<Lease, std::string>> open();
  // Every lease starts here, so that holders() knows the servers lent out.
  Lease lend(std::unique_ptr<ServerConn> conn);

  asio::any_io_executor ex_;
  BackendTarget target_;
  int max_size_;
  config::Millis wait_timeout_;
  config::Millis connect_timeout_;
  int total_ = 0;  // idle + leased + connecting
  int connecting_ = 0;
  bool count_requests_ = true;
  bool paused_ = false;
  std::unique_ptr<asio::steady_timer> resumed_;  // cancelled by resume (the paused wait)
  uint64_t generation_ = 0;                      // connections of older ones do not return
  Counters counters_;
  PoolHealth health_;
  bool closed_ = false;
  std::deque<std::unique_ptr<ServerConn>> idle_;
  std::deque<Waiter*> waiters_;
  std::vector<const ServerConn*> lent_;  // servers out on a Lease
  std::map<std::string, std::string> server_params_;
};

}  // namespace pgshard::pool
