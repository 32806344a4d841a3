// One backend (server) connection: connect, log in with SCRAM/MD5/cleartext, track state.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "config/config.hpp"
#include "protocol/buffer.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/asio.hpp"
#include "proxy/drained_read.hpp"
#include "proxy/pool/replies.hpp"

namespace pgshard::pool {

// Where and as whom a pool logs in.
struct BackendTarget {
  int shard = 0;
  std::string shard_name;
  std::string host;
  uint16_t port = 5432;
  std::string user;
  std::string password;
  std::string database;
};

// Parameters whose current value the server reports with ParameterStatus (GUC_REPORT in
// PostgreSQL 15); the rest of the synced settings are tracked from our own SETs.
bool is_reported_parameter(std::string_view name);

// Named statements pgshard prepared on one server for transaction pooling, least recently
// used first out: statements are shared by every client whose query text matches.
class PreparedSet {
 public:
  bool has(const std::string& name) {
    auto it = index_.find(name);
    if (it == index_.end()) return false;
    order_.splice(order_.end(), order_, it->second);
    return true;
  }
  // Adds `name`; returns the statement to close when the set is over `cap`.
  std::optional<std::string> add(const std::string& name, std::size_t cap) {
    order_.push_back(name);
    index_[name] = std::prev(order_.end());
    if (order_.size() <= cap) return std::nullopt;
    std::string oldest = order_.front();
    index_.erase(oldest);
    order_.pop_front();
    return oldest;
  }
  void erase(const std::string& name) {
    if (auto it = index_.find(name); it != index_.end()) {
      order_.erase(it->second);
      index_.erase(it);
    }
  }
  void clear() {
    order_.clear();
    index_.clear();
  }
  std::size_t size() const { return order_.size(); }

 private:
  std::list<std::string> order_;
  std::unordered_map<std::string, std::list<std::string>::iterator> index_;
};

class ServerConn {
 public:
  explicit ServerConn(asio::any_io_executor ex, const BackendTarget& target);
  ServerConn(const ServerConn&) = delete;
  ServerConn& operator=(const ServerConn&) = delete;
  ~ServerConn();

  // Connects and logs in; on failure returns a message naming the shard.
  awaitable<std::string> connect(config::Millis timeout);

  tcp::socket& socket() { return *socket_; }
  const BackendTarget& target() const { return target_; }
  uint64_t id() const { return id_; }
  int32_t pid() const { return pid_; }
  int32_t secret() const { return secret_; }

  // Unread bytes from the server: the session's reader continues from here.
  protocol::Buffer rbuf;
  // Current values of synced settings on this server session.
  std::map<std::string, std::string> params;
  // Fingerprint of the client settings this server was last synced to (0: unknown).
  uint64_t synced_fingerprint = 0;
  PreparedSet prepared;
  // What the server still owes for the messages sent to it, and what to do with each reply.
  Replies replies;
  // Transaction status from the last ReadyForQuery.
  char status = 'I';
  // Set when the connection must not be reused (I/O error, protocol desync, FATAL).
  bool broken = false;
  Clock::time_point idle_since = Clock::now();
  const Clock::time_point connected_at = Clock::now();
  uint64_t generation = 0;  // its pool's generation when it opened (see Pool::reconnect)

  // Reads the server's replies through `replies`, handing each frame, its bytes and the
  // queue's verdict to `on_frame(frame, raw, verdict)` until it returns true. False when the
  // connection failed. For servers no relay reads.
  template <typename F>
  awaitable<bool> read_replies(std::size_t max_message, F on_frame);
  // Runs pgshard's own statement, hiding its replies; `on_row` sees its DataRows and
  // `on_description` its RowDescription, the outcome is in replies.tag / error. False (and
  // the connection broken) when it failed.
  awaitable<bool> run_own(std::string_view sql, std::size_t max_message,
                          std::function<void(std::string_view row)> on_row = {},
                          std::function<void(std::string_view body)> on_description = {});

  // What a read (read_some) does once the socket may have data: receive into rbuf, commit and
  // count.
  auto receiver() {
    return [this](int fd, bool& drained) {
      std::size_t room;
      char* at = rbuf.prepare(16 * 1024, &room);
      const ssize_t got = recv_noting_drained(fd, at, room, drained);
      if (got > 0) {
        rbuf.commit(static_cast<std::size_t>(got));
        count_received(static_cast<std::size_t>(got));
        // A reply ends with ReadyForQuery, after which an idle server sends nothing; any
        // other last bytes may be a dying server's (drained_read.hpp: a reset after them
        // is not counted).
        if (drained && !ends_with_ready()) drained = nothing_pending(fd);
      }
      return got;
    };
  }

  // Reads what the server sent into rbuf, committed and counted (proxy/drained_read.hpp):
  // completes with (error_code, bytes).
  auto read_some() { return drained_.read(receiver(), use_nothrow_op); }
  // The same read, ended early only through `stop` (the relay's wake-up, pool::RelayWake),
  // not through its coroutine's cancellation.
  auto read_some(asio::cancellation_slot stop) {
    return drained_.read(receiver(), use_nothrow_op, stop);
  }

  // Whether rbuf ends with a whole ReadyForQuery message.
  bool ends_with_ready() const {
    const auto v = rbuf.view();
    constexpr std::string_view kReady("Z\0\0\0\5", 5);
    return v.size() >= 6 && v.substr(v.size() - 6, 5) == kReady;
  }

  // Bytes to and from the server, counted in its pool's measurements.
  void count_sent(std::size_t n) {
    if (replies.counters) replies.counters->bytes_sent += n;
  }
  void count_received(std::size_t n) {
    if (replies.counters) replies.counters->bytes_received += n;
  }

  // True if the socket is closed by the peer or has unexpected unread data.
  bool stale();
  void close();

  // Moving to another worker (whose reactor is another thread's, so the socket cannot stay
  // registered with this one): leave() releases the descriptor from this worker's reactor,
  // on its thread, for a connection nothing reads and that owes nothing (idle and clean, as
  // Pool::give_back checks); arrive(ex) registers it on the new worker's executor, on that
  // worker's thread. Its state (parameters, prepared statements, key data) goes with it.
  // False (the connection closed) if the descriptor could not be released or registered.
  bool leave();
  bool arrive(asio::any_io_executor ex);

 private:
  awaitable<std::string> login();
  // Empty only on its way to another worker (between leave() and arrive()), when it must
  // not refer to the io_context it left (which may be gone before it arrives).
  std::optional<tcp::socket> socket_;
  DrainedSocket drained_{*socket_};  // (the same storage across leave and arrive)
  tcp protocol_ = tcp::v4();         // of the address it connected to (for arrive)
  int moving_fd_ = -1;               // between leave() and arrive()
  BackendTarget target_;
  uint64_t id_;
  int32_t pid_ = 0;
  int32_t secret_ = 0;
};

template <typename F>
awaitable<bool> ServerConn::read_replies(std::size_t max_message, F on_frame) {
  for (;;) {
    auto d = protocol::decode_frame(rbuf.view(), max_message);
    if (d.status == protocol::DecodeStatus::kError) co_return false;
    if (d.status == protocol::DecodeStatus::kNeedMore) {
      if (std::get<0>(co_await read_some())) co_return false;
      continue;
    }
    const protocol::Frame f = d.frame;
    if (f.type == protocol::msg::kReadyForQuery) status = f.body.empty() ? 'I' : f.body[0];
    const auto verdict = replies.classify(f, &prepared);
    const bool stop = on_frame(f, std::string_view(rbuf.data(), d.consumed), verdict);
    rbuf.consume(d.consumed);
    if (stop) co_return true;
  }
}

}  // namespace pgshard::pool
