// The Asio names the proxy uses, in one place.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>

namespace pgshard {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
using Clock = std::chrono::steady_clock;

// A one-shot broadcast: wait() suspends until notify_all(). Built on a timer that never
// expires by itself, so it needs no locks on the session's single-threaded executor.
class Event {
 public:
  explicit Event(const asio::any_io_executor& ex) : timer_(ex, Clock::time_point::max()) {}
  awaitable<void> wait() {
    ++waiters_;
    co_await timer_.async_wait(use_nothrow);
    --waiters_;
  }
  // Cheap when nobody waits, which is the common case on the data path.
  void notify_all() {
    if (waiters_ > 0) timer_.cancel();
  }

 private:
  asio::steady_timer timer_;
  int waiters_ = 0;
};
}  // namespace pgshard
