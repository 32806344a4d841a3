// A worker's side of a (shard, user) pool of server connections: its idle servers, lent
// without a lock, and its clients waiting (with a timeout) for a server; the size bound
// across workers is its SharedPool's. Checkout returns a move-only Lease.
#pragma once

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "proxy/pool/server_conn.hpp"
#include "proxy/pool/shared_pool.hpp"

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
  int total = 0;  // idle + leased + connecting (this worker's)
  int idle = 0;
  int waiting = 0;           // clients queued for a connection (or held by PAUSE)
  int connecting = 0;        // connections logging in
  int max_size = 0;          // the limit of the whole process (pool_size)
  uint64_t max_wait_us = 0;  // the longest a queued client has waited so far
};

// Who may free a server of a pool that lends none now (the deadlock detector's pool-wait
// edges), as one worker sees it: any holder that finishes frees one. A pool's servers may
// be lent on every worker: the detector merges the workers' views (a server the pool has
// that no worker lists as lent is one that may come free too).
struct PoolHolders {
  std::vector<int32_t> pids;  // backend pids of this worker's servers lent out
  bool spare = false;  // one may come here without a holder finishing (idle, opening, room, PAUSE)
  int servers = 0;     // the pool's servers in the whole process (open, opening or moving)
};

// Whether the shard answered the pool's last attempt to connect.
struct PoolHealth {
  Clock::time_point last_ok{};  // last successful login
  Clock::time_point last_failure{};
  std::string last_error;  // the last failure's message
};

// Where a pool's servers are now, when that can change (a shard's primary that moves on
// failover), or why it lends none (`refusal`: the shard has two primaries).
struct PoolHost {
  std::string host;
  uint16_t port = 5432;
  std::string refusal;
};

// What a caller of Pool::acquire does if its wait lasts `after`: most waits end sooner, and
// a caller that watches its client meanwhile need not start for them.
struct WaitPatience {
  config::Millis after{0};
  std::function<void()> then;
};

class Pool {
 public:
  // Worker `worker`'s pool (its executor `ex`) of the process-wide `shared` one.
  Pool(asio::any_io_executor ex, int worker, SharedPool& shared, BackendTarget target,
       config::Millis wait_timeout, config::Millis connect_timeout);
  ~Pool();

  // A connection, or an error message (connect failure naming the shard, or wait timeout).
  // A terminal cancellation on `stop` ends a wait for a busy pool at once (its client left).
  // `in_transaction`: for a client already inside a transaction, which PAUSE lets finish
  // (it takes the servers it needs; PAUSE waits for them too), as PgBouncer does.
  // `patience.then` is called once if the wait lasts `patience.after`.
  awaitable<std::variant<Lease, std::string>> acquire(asio::cancellation_slot stop = {},
                                                      bool in_transaction = false,
                                                      WaitPatience patience = {});
  // acquire's common case, without a coroutine: an idle connection, if one is trusted.
  std::optional<Lease> lend_idle(bool in_transaction = false);
  int busy() const { return shared_.busy(); }  // across the workers
  void give_back(std::unique_ptr<ServerConn> conn);
  // From the SharedPool, on this worker's thread: a server (or a slot, when null) for the
  // longest waiter here; and a request to send an idle server to the longest waiter.
  void receive(std::unique_ptr<ServerConn> conn);
  void lend_away();
  // Closes idle connections unused for longer than `idle`.
  void prune(config::Millis idle);
  // At exit: closes idle connections; connections given back later are closed too.
  void close_all();
  PoolStats stats() const;
  PoolHolders holders() const;
  // Whether its connections count requests, transactions, latency, errors and bytes (the
  // map's admin.stats; waits and logins are always counted).
  void count_requests(bool on) { count_requests_ = on; }
  // A reload changed pool_size (the limit of the whole process) or timeouts: a smaller pool
  // closes connections as they come back until it fits; a larger one lets waiters open theirs.
  void set_limits(int max_size, config::Millis wait_timeout, config::Millis connect_timeout);
  // PAUSE: new acquisitions wait (up to the pool wait timeout) until resume(), except for
  // transactions already running; servers already leased finish their transactions.
  // RESUME lets the waiters go on.
  void pause(bool on);
  bool paused() const { return paused_; }
  // Why the pool lends nothing now (its shard has two primaries: follow()), else empty.
  const std::string& refusal() const { return refusal_; }
  // RECONNECT: idle connections close now, leased ones when they come back.
  void reconnect();
  // The pool's host may move: each checkout compares `moves` with what it was at the last
  // look and, when it changed, asks `where` (on this worker's thread). Servers of the old
  // host close: idle ones at once, lent ones when they come back. Set once, before use.
  void follow(const std::atomic<uint64_t>& moves, std::function<PoolHost()> where) {
    moves_ = &moves;
    where_ = std::move(where);
  }
  Counters& counters() { return counters_; }
  const Counters& counters() const { return counters_; }
  const PoolHealth& health() const { return health_; }
  // Idle connections (for SHOW SERVERS).
  const std::deque<std::unique_ptr<ServerConn>>& idle() const { return idle_; }
  const BackendTarget& target() const { return target_; }
  // The process-wide pool this worker's is a part of (the same for every worker).
  const SharedPool& shared() const { return shared_; }
  // Parameters the server reported at the pool's first login, on any worker (a worker may
  // have only servers other workers opened, whose settings clients changed since).
  const std::map<std::string, std::string>& server_params() const {
    return shared_.server_params();
  }

 private:
  // What co_await hands a deferred operation (Asio's own type, as in Baton).
  using Wake = asio::detail::awaitable_async_op_handler<void(), asio::any_io_executor>;
  struct Waiter {
    std::unique_ptr<ServerConn> conn;  // handed over by give_back
    bool slot = false;                 // a slot freed: the waiter may open a connection
    bool queued = true;  // its place in the SharedPool's queue is not yet taken by a hand-over
    Clock::time_point since = Clock::now();
    Clock::time_point deadline{};      // when the pool's timer ends the wait (or calls patience)
    WaitPatience* patience = nullptr;  // its `then` is called once, at its deadline
    int donor = -1;  // a worker with an idle server, asked at kAskDonorAfter (see acquire)
    error_code ec;   // why the wait ended: none (a deadline) or aborted
    std::optional<Wake> wake;  // the suspended wait
  };
  // Waits until wait_timeout after the wait began, a hand-over or RESUME (end(w, aborted)),
  // or the stop; calls patience.then on the way. No timer of its own: the pool's one timer
  // watches every waiter's deadline (most waits end long before theirs).
  awaitable<error_code> wait(Waiter& w, asio::cancellation_slot stop, WaitPatience& patience);
  // A waiter on a worker whose own servers are all lent out asks a worker holding an idle
  // one only after this: one of its own usually comes back sooner, and an ask costs a post
  // to another thread (and the hand-over a re-registration of the socket there).
  static constexpr std::chrono::microseconds kAskDonorAfter{1000};
  // The next deadline of w: asking its donor, its patience, its timeout.
  Clock::time_point next_deadline(const Waiter& w) const;
  // Resumes w's wait (posted: never inside the caller) with `ec`, unless it already ended.
  void end(Waiter& w, error_code ec);
  // The pool's timer is set for `deadline` if nothing earlier is pending.
  void arm(Clock::time_point deadline);
  void deadlines_passed();
  // Opens a connection in a slot reserved in the SharedPool.
  awaitable<std::variant<Lease, std::string>> open();
  // Every lease starts here, so that holders() knows the servers lent out.
  Lease lend(std::unique_ptr<ServerConn> conn);
  // A server (or a slot, when null) for the first waiter here, whose queue place it took;
  // with nobody waiting any more the server goes idle and the slot is released.
  void serve(std::unique_ptr<ServerConn> conn);
  // Gives `conn` to the longest waiter of the process: false (conn kept) when none waits.
  bool hand_over(std::unique_ptr<ServerConn>& conn);
  void make_idle(std::unique_ptr<ServerConn> conn);
  // A server here closed (or never opened): its slot is freed or goes to a waiter.
  void drop();
  void release_slot();
  void publish_idle(bool fence) { shared_.set_idle(worker_, idle_.size(), fence); }
  bool current(const ServerConn& conn) const {
    return !closed_ && conn.generation == shared_.generation() &&
           conn.target().port == target_.port && conn.target().host == target_.host;
  }
  // follow(): takes the host's move, if any (false: it lends nothing, refusal_ says why).
  bool check_moved() {
    if (moves_ && moves_->load(std::memory_order_acquire) != seen_moves_) move_host();
    return refusal_.empty();
  }
  void move_host();
  void close_idle();

  asio::any_io_executor ex_;
  int worker_;
  SharedPool& shared_;
  BackendTarget target_;
  config::Millis wait_timeout_;
  config::Millis connect_timeout_;
  int total_ = 0;  // idle + leased + connecting, on this worker
  int connecting_ = 0;
  bool count_requests_ = true;
  bool paused_ = false;
  std::vector<Waiter*> paused_waiters_;  // clients held by PAUSE (resume cancels their timers)
  Counters counters_;
  PoolHealth health_;
  bool closed_ = false;
  std::deque<std::unique_ptr<ServerConn>> idle_;
  std::deque<Waiter*> waiters_;
  // The earliest deadline of a waiter (wait()); gone with close_all (before the io_context).
  std::optional<asio::steady_timer> deadlines_;
  Clock::time_point armed_ = Clock::time_point::max();  // what deadlines_ is set for
  std::vector<const ServerConn*> lent_;                 // servers out on a Lease
  const std::atomic<uint64_t>* moves_ = nullptr;        // (follow)
  uint64_t seen_moves_ = ~uint64_t{0};
  std::function<PoolHost()> where_;
  std::string refusal_;
};

}  // namespace pgshard::pool
