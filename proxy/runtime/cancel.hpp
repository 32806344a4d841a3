// Proxy-issued BackendKeyData and the process-wide registry CancelRequests are looked up in.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "proxy/asio.hpp"

namespace pgshard::runtime {

struct CancelKey {
  int32_t pid = 0;
  int32_t secret = 0;
};

class CancelRegistry {
 public:
  static CancelRegistry& instance();
  // What a session does with a CancelRequest: forward it to the servers running its
  // statement and call `done` once they have it.
  using Cancel = std::function<void(std::function<void()> done)>;
  // Issues a fresh key; `cancel` runs on `ex` when a matching CancelRequest arrives, and
  // `terminate` when another client of the same `user` terminates this one.
  CancelKey add(asio::any_io_executor ex, Cancel cancel, std::function<void()> terminate = {},
                std::string user = {});
  void remove(const CancelKey& key);
  // Posts the cancel of the session owning `key` (`done` runs, on that session's executor,
  // once the servers have it); false (and `done` never runs) for a wrong key.
  bool cancel(const CancelKey& key, std::function<void()> done);
  // pg_cancel_backend / pg_terminate_backend of process id `pid` by a client logged in as
  // `user`: nullopt when no client has that id (it may be a server's); false when the
  // client is another user's (PostgreSQL's rule, without role membership); true when done.
  std::optional<bool> signal(int32_t pid, bool terminate, const std::string& user);

 private:
  struct Entry {
    int32_t secret;
    asio::any_io_executor ex;
    Cancel cancel;
    std::function<void()> terminate;
    std::string user;
  };
  std::mutex mu_;
  std::unordered_map<int32_t, Entry> entries_;
  int32_t next_pid_ = 1;
};

// Sends a CancelRequest for a server process, bounded by a timer; `done` runs once the
// server has read it (it closes the connection then) or the attempt ended.
void send_server_cancel(asio::any_io_executor ex, std::string host, uint16_t port, int32_t pid,
                        int32_t secret, std::function<void()> done = {});

}  // namespace pgshard::runtime
