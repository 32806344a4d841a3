// The Asio names the proxy uses, in one place.
#pragma once

#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/ssl.hpp>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <optional>
#include <string_view>

namespace pgshard {
namespace asio = boost::asio;
using asio::awaitable;
using asio::ip::tcp;
using boost::system::error_code;
inline constexpr auto use_nothrow = asio::as_tuple(asio::use_awaitable);
// use_nothrow for the data path's reads: co_await on the deferred operation starts it from
// the awaiting coroutine itself (use_awaitable runs each operation in a coroutine of its
// own, a frame allocated and resumed per read).
inline constexpr auto use_nothrow_op = asio::as_tuple(asio::deferred);
using Clock = std::chrono::steady_clock;

// Clock::now() at the kernel tick's resolution (a few ms behind at most), for timestamps
// that only age idle things: far cheaper to read. (Clock is CLOCK_MONOTONIC: same epoch.)
inline Clock::time_point coarse_now() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return Clock::time_point(std::chrono::duration_cast<Clock::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

// send(2) and recvmsg(2) as plain system calls. glibc's wrappers are thread-cancellation
// points, and mark each call as one (two atomic updates of the thread's cancel state around
// it) for pthread_cancel, which pgshard never uses; these calls never block (MSG_DONTWAIT).
inline ssize_t raw_send(int fd, const void* data, std::size_t size, int flags) {
  return ::syscall(SYS_sendto, fd, data, size, flags, nullptr, 0);
}
inline ssize_t raw_recvmsg(int fd, msghdr* msg, int flags) {
  return ::syscall(SYS_recvmsg, fd, msg, flags);
}

// What the socket takes at once, without waiting: as much of `bytes` as fits in its send
// buffer. Sending directly (when nothing else writes to the socket) saves the Asio operation,
// its queued completion and a coroutine switch per write; the caller writes any rest with
// async_write. `ec` is set on a failure other than a full buffer.
inline std::size_t send_now(tcp::socket& socket, std::string_view bytes, error_code& ec) {
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n = raw_send(socket.native_handle(), bytes.data() + sent, bytes.size() - sent,
                               MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        ec = error_code(errno, boost::system::system_category());
      break;
    }
  }
  return sent;
}

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

// One coroutine parked until another on the same executor hands it work. Unlike Event,
// wake() resumes the waiter at once, inside the caller, until it suspends again: no timer,
// no queued completion. Destroying a Baton with a waiter destroys the waiter's coroutine
// (Asio unwinds it through the executor later): it must not touch its owner on the way.
class Baton {
 public:
  // To be awaited at once by a coroutine (as a deferred operation: no coroutine frame of
  // its own).
  auto wait() {
    return asio::async_initiate<const asio::deferred_t&, void()>(
        [this](Waiter waiter) { waiter_.emplace(std::move(waiter)); }, asio::deferred);
  }
  bool waiting() const { return waiter_.has_value(); }
  void wake() {
    Waiter waiter = std::move(*waiter_);
    waiter_.reset();
    std::move(waiter)();
  }

 private:
  // What co_await hands a deferred operation (Asio's own type: a Baton is for coroutines).
  using Waiter = asio::detail::awaitable_async_op_handler<void(), asio::any_io_executor>;
  std::optional<Waiter> waiter_;
};
}  // namespace pgshard
