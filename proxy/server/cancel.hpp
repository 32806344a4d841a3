// Proxy-issued BackendKeyData and the process-wide registry CancelRequests are looked up in.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "proxy/asio.hpp"

namespace pgshard::server {

struct CancelKey {
  int32_t pid = 0;
  int32_t secret = 0;
};

class CancelRegistry {
 public:
  static CancelRegistry& instance();
  // Issues a fresh key; `cancel` runs on `ex` when a matching CancelRequest arrives.
  CancelKey add(asio::any_io_executor ex, std::function<void()> cancel);
  void remove(const CancelKey& key);
  // Posts the cancel of the session owning `key`; a wrong key does nothing.
  bool cancel(const CancelKey& key);

 private:
  struct Entry {
    int32_t secret;
    asio::any_io_executor ex;
    std::function<void()> cancel;
  };
  std::mutex mu_;
  std::unordered_map<int32_t, Entry> entries_;
  int32_t next_pid_ = 1;
};

// Sends a CancelRequest for a server process (fire and forget, bounded by a timer).
void send_server_cancel(asio::any_io_executor ex, std::string host, uint16_t port, int32_t pid,
                        int32_t secret);

}  // namespace pgshard::server
