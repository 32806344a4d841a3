// One backend (server) connection: connect, log in with SCRAM/MD5/cleartext, track state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "config/config.hpp"
#include "protocol/buffer.hpp"
#include "proxy/asio.hpp"

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

class ServerConn {
 public:
  explicit ServerConn(asio::any_io_executor ex, const BackendTarget& target);

  // Connects and logs in; on failure returns a message naming the shard.
  awaitable<std::string> connect(config::Millis timeout);

  tcp::socket& socket() { return socket_; }
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
  // Transaction status from the last ReadyForQuery.
  char status = 'I';
  // Set when the connection must not be reused (I/O error, protocol desync, FATAL).
  bool broken = false;
  Clock::time_point idle_since = Clock::now();

  // True if the socket is closed by the peer or has unexpected unread data.
  bool stale();
  void close();

 private:
  awaitable<std::string> login();
  tcp::socket socket_;
  BackendTarget target_;
  uint64_t id_;
  int32_t pid_ = 0;
  int32_t secret_ = 0;
};

}  // namespace pgshard::pool
