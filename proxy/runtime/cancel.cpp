// Proxy-issued BackendKeyData and the process-wide registry CancelRequests are looked up in.
#include "proxy/runtime/cancel.hpp"

#include <spdlog/spdlog.h>

#include "protocol/auth.hpp"
#include "protocol/startup.hpp"

namespace pgshard::runtime {

using namespace asio::experimental::awaitable_operators;

CancelRegistry& CancelRegistry::instance() {
  static CancelRegistry r;
  return r;
}

CancelKey CancelRegistry::add(asio::any_io_executor ex, Cancel cancel,
                              std::function<void()> terminate, std::string user) {
  auto random = protocol::random_bytes(4);
  int32_t secret;
  std::memcpy(&secret, random.data(), 4);
  std::lock_guard lock(mu_);
  int32_t pid;
  do {
    pid = next_pid_;
    next_pid_ = next_pid_ == INT32_MAX ? 1 : next_pid_ + 1;
  } while (entries_.contains(pid));
  entries_.emplace(
      pid, Entry{secret, std::move(ex), std::move(cancel), std::move(terminate), std::move(user)});
  return {pid, secret};
}

void CancelRegistry::remove(const CancelKey& key) {
  std::lock_guard lock(mu_);
  entries_.erase(key.pid);
}

bool CancelRegistry::cancel(const CancelKey& key, std::function<void()> done) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(key.pid);
  if (it == entries_.end() || it->second.secret != key.secret) return false;
  asio::post(it->second.ex, [cancel = it->second.cancel, done = std::move(done)] { cancel(done); });
  return true;
}

std::optional<bool> CancelRegistry::signal(int32_t pid, bool terminate, const std::string& user) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(pid);
  if (it == entries_.end()) return std::nullopt;
  const Entry& e = it->second;
  if (e.user != user) return false;
  if (terminate && e.terminate)
    asio::post(e.ex, e.terminate);
  else if (!terminate)
    asio::post(e.ex, [cancel = e.cancel] { cancel([] {}); });
  return true;
}

void send_server_cancel(asio::any_io_executor ex, std::string host, uint16_t port, int32_t pid,
                        int32_t secret, std::function<void()> done) {
  asio::co_spawn(
      ex,
      [ex, host = std::move(host), port, pid, secret, done = std::move(done)]() -> awaitable<void> {
        tcp::socket sock(ex);
        asio::steady_timer timer(ex, std::chrono::seconds(5));
        auto work = [&]() -> awaitable<void> {
          tcp::resolver resolver(ex);
          auto [rec, eps] =
              co_await resolver.async_resolve(host, std::to_string(port), use_nothrow);
          if (rec) co_return;
          auto [cec, ep] = co_await asio::async_connect(sock, eps, use_nothrow);
          if (cec) co_return;
          std::string out;
          protocol::write_cancel_request(out, pid, secret);
          co_await asio::async_write(sock, asio::buffer(out), use_nothrow);
          // The server closes the connection once it has read the request.
          char c;
          co_await sock.async_read_some(asio::buffer(&c, 1), use_nothrow);
        };
        co_await (work() || timer.async_wait(asio::use_awaitable));
        if (done) done();
      },
      asio::detached);
}

}  // namespace pgshard::runtime
