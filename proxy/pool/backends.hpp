// The server connections one client holds, and what becomes of each when it leaves.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/pool/pool.hpp"

namespace pgshard::pool {

// How a link's relay is woken (Backends::wake): the relay's pending read of its server ends
// (operation_aborted) and the relay looks at its link again. Only that read ends: an
// executor's operation on the same socket, or a write in flight, goes on (cancelling the
// socket, as pgshard did before, ended them all).
class RelayWake {
 public:
  // (A session's read of its client uses one too, Session::client_read_wake_.)
  RelayWake() = default;
  RelayWake(const RelayWake&) = delete;
  // A link's storage is reused for its session's next server (Session::link_finished): the
  // wake-up stays with it, as it holds nothing between two reads.
  RelayWake& operator=(RelayWake&&) noexcept { return *this; }

  // The relay's read: the slot to bind it to (ServerConn::read_some), and its end.
  asio::cancellation_slot reading() {
    reading_ = true;
    return signal_.slot();
  }
  void read_ended() { reading_ = false; }
  // Ends the pending read, if one is (outside a read the slot may still hold the last
  // read's handler: never emitted then). A link's relay is woken through Backends::wake.
  void wake() {
    if (reading_) signal_.emit(asio::cancellation_type::terminal);
  }

 private:
  asio::cancellation_signal signal_;
  bool reading_ = false;
};

// A server connection attached to one client, with the relay coroutine reading it. What the
// server still owes, and what to do with each reply, is its lease's `replies`.
struct Link {
  Lease lease;
  int shard = 0;
  bool closing = false;    // the client is leaving: reset or drop this server when idle
  bool resetting = false;  // closing with pgshard's reset in flight: read until it is answered
  bool done = false;       // the relay has returned the connection
  std::string prelude;     // pgshard's statements to send ahead of the next request
  bool borrowed = false;   // an executor is using the server (see Backends::borrow)
  bool parked = false;     // the relay is waiting for it to come back
  RelayWake wake;          // ends the relay's read (only Backends wakes a relay)
};

// A client's server connections: `active` takes its requests; in session pooling its
// servers on other shards wait in the kept set; a transaction on several shards holds its
// other participants until COMMIT. A connection leaves in one of four ways: kept (session
// pooling), given back to the pool (idle and owing nothing: Pool::give_back checks), reset
// first (DISCARD ALL when a session-pooled client ends), or discarded (broken, mid-
// transaction, or owing replies). Executors borrow a participant's server from its relay.
class Backends {
 public:
  explicit Backends(const asio::any_io_executor& ex) : borrow_done_(ex) {}

  std::shared_ptr<Link> active;

  // Every attached connection, the active one first.
  std::vector<std::shared_ptr<Link>> all() const;
  std::size_t kept_count() const { return kept_.size(); }
  std::size_t participant_count() const { return participants_.size(); }
  // Whether a server of the client is inside a transaction block on a shard other than
  // `shard` (-1: on any shard).
  bool in_transaction_besides(int shard) const;

  // Session pooling: a server to come back to, and taking it back (null if none).
  void keep(std::shared_ptr<Link> link);
  std::shared_ptr<Link> take_kept(int shard);

  // Participants of a transaction on several shards other than the active one.
  bool is_participant(const Link& link) const;
  std::shared_ptr<Link> participant(int shard) const;
  void add_participant(std::shared_ptr<Link> link);
  // The transaction moves on to `shard`: the active server joins the participants and
  // `shard`'s participant, if any, becomes active (false: `shard` has none yet).
  bool move_to(int shard);
  // No server is active: one participant takes the client's next statements.
  void promote();
  // Every server of the transaction, the active one included, handed over for COMMIT or
  // ROLLBACK (nothing is active afterwards).
  std::vector<std::shared_ptr<Link>> take_participants();

  // The relay has returned `link`'s server: forget it. True if it was the active one.
  bool forget(const Link& link);
  // `link`'s relay stops waiting for its server's reply and looks at the link again (its
  // client left, its server broke, it may go back to the pool). Nothing else it has
  // pending on the socket ends.
  void wake(Link& link) { link.wake.wake(); }
  // Ends `link`: its relay wakes and returns the server, discarded if `owes` (replies the
  // client waits for, or a batch left open) or the server is not idle.
  void release(const std::shared_ptr<Link>& link, bool owes);

  // Lends a participant's server to an executor (its relay parks), and gives it back.
  // False when the link has ended (its server lost or returned): nothing is lent.
  awaitable<bool> borrow(const std::shared_ptr<Link>& link);
  void give_back(const std::shared_ptr<Link>& link);
  // The relay's side: waits while an executor has the server, or until the link ends.
  awaitable<void> park(Link& link);
  // The relay of an ended link waits until an executor that still has its server gives it
  // back: the executor reads and writes through the connection until then.
  awaitable<void> given_back(Link& link);

 private:
  std::map<int, std::shared_ptr<Link>> kept_;
  std::map<int, std::shared_ptr<Link>> participants_;
  Event borrow_done_;
};

}  // namespace pgshard::pool
