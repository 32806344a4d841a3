// A socket read that tells Asio's reactor when it drained the socket.
//
// Asio registers every socket with epoll edge-triggered, and starts each read by trying it
// at once (a "speculative" recv) unless the reactor knows the socket is drained; Asio 1.81
// only learns that at end of file. So every wait for a reply cost a recv returning EAGAIN
// first (on the server), and every wait without a read (async_wait, on an idle client) an
// epoll_ctl. This read returns what async_read_some would, and when the kernel says the
// socket's queue is empty after it (TCP_INQ: no byte left and no end of file waiting), it
// tells the reactor (done_and_exhausted): the next read on the socket goes straight to the
// reactor's queue without a system call. Whatever arrives later raises a new edge, which
// marks the socket worth trying again; so no byte and no end of file is left unseen. A
// socket without TCP_INQ (enable_drained_reads) is never taken for drained.
//
// The kernel's count covers bytes and an end of file, not a reset: a peer that sent its
// last bytes and then reset the connection (a PostgreSQL backend killed by an immediate
// shutdown sends its WARNING, then closes with a request unread) is counted as drained
// when both had arrived before the read, and no later edge ever comes. A caller that cannot
// tell from the bytes that the exchange is over asks nothing_pending() before taking a
// socket for drained.
//
// `read(fd, drained)` does the recv itself, with recv_noting_drained, and returns its
// result; it runs only when the socket may have data, so the caller can put off taking a
// buffer until then.
#pragma once

#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "proxy/asio.hpp"
// After Asio itself, which these internals need first.
#include <boost/asio/detail/reactive_socket_service_base.hpp>
#include <boost/asio/detail/reactor.hpp>
#include <boost/asio/detail/reactor_op.hpp>

namespace pgshard {

// Asks the kernel to report, with each read, what is left in the socket's receive queue.
inline void enable_drained_reads(tcp::socket& socket) {
  const int on = 1;
  ::setsockopt(socket.native_handle(), SOL_TCP, TCP_INQ, &on, sizeof on);
}

// recv(MSG_DONTWAIT) into [at, at + room); `drained` is set when nothing is left to read
// after it (the kernel counts a pending end of file as something left).
inline ssize_t recv_noting_drained(int fd, char* at, std::size_t room, bool& drained) {
  iovec iov{at, room};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t got = raw_recvmsg(fd, &msg, MSG_DONTWAIT);
  drained = false;
  if (got > 0)
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ) {
        int left;
        std::memcpy(&left, CMSG_DATA(c), sizeof left);
        drained = left == 0;
      }
  return got;
}

// Whether nothing at all is waiting on the socket: no byte, no end of file, no reset or
// other error (one poll, which does not consume anything).
inline bool nothing_pending(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  return ::poll(&p, 1, 0) == 0;
}

namespace drained_read_detail {

namespace detail = asio::detail;

// The socket's reactor state, which tcp::socket keeps protected.
struct SocketAccess : tcp::socket {
  static auto& implementation(tcp::socket& s) { return s.*(&SocketAccess::impl_); }
};

// Per-operation cancellation (the awaitable operators cancel a losing branch): the handler
// Asio's own socket operations register, which its socket service keeps protected.
struct ServiceAccess : detail::reactive_socket_service_base {
  using Cancellation = reactor_op_cancellation;
};

template <typename Read, typename Handler>
class Op : public detail::reactor_op {
 public:
  BOOST_ASIO_DEFINE_HANDLER_PTR(Op);

  Op(int fd, Read& read, Handler& handler)
      : reactor_op(error_code(), &Op::do_perform, &Op::do_complete),
        fd_(fd),
        read_(std::move(read)),
        handler_(std::move(handler)) {}

  static status do_perform(reactor_op* base) {
    auto* o = static_cast<Op*>(base);
    for (;;) {
      bool drained = false;
      const ssize_t got = o->read_(o->fd_, drained);
      if (got > 0) {
        o->bytes_transferred_ = static_cast<std::size_t>(got);
        return drained ? done_and_exhausted : done;
      }
      if (got == 0) {
        o->ec_ = asio::error::eof;
        return done;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
      o->ec_ = error_code(errno, asio::error::get_system_category());
      return done;
    }
  }

  // The handler runs here, on the reactor's thread, with no work tracked for its executor:
  // a DrainedSocket's reads are awaited by coroutines of the socket's own io_context, which
  // run on that thread (the reactor counts the pending read as the io_context's work).
  static void do_complete(void* owner, detail::operation* base, const error_code&, std::size_t) {
    auto* o = static_cast<Op*>(base);
    ptr p = {detail::addressof(o->handler_), o, o};
    // The handler is moved out before the operation's memory is freed for the upcall.
    detail::binder2<Handler, error_code, std::size_t> handler(o->handler_, o->ec_,
                                                              o->bytes_transferred_);
    p.h = detail::addressof(handler.handler_);
    p.reset();
    if (owner) {
      detail::fenced_block b(detail::fenced_block::half);
      std::move(handler)();
    }
  }

 private:
  int fd_;
  Read read_;
  Handler handler_;
};

}  // namespace drained_read_detail

// The drained reads of one socket (see the top of this file). It keeps the socket's reactor,
// looked up on the first read (a lookup takes a lock and compares type names), so it must
// not outlive the socket's io_context; only one of its reads may be pending at a time, and
// the socket must not be TLS-wrapped.
class DrainedSocket {
 public:
  explicit DrainedSocket(tcp::socket& socket) : socket_(&socket) {}
  DrainedSocket(const DrainedSocket&) = delete;  // (it points at its socket)
  DrainedSocket& operator=(const DrainedSocket&) = delete;
  // The socket was given to another io_context (its reactor is looked up again).
  void forget_reactor() { reactor_ = nullptr; }

  // Completes with (error_code, bytes read), as async_read_some. Cancelled through the
  // handler's cancellation slot (its coroutine's), or through `stop` alone when it is
  // connected (a wake-up of the reader's own, as pool::RelayWake).
  template <typename Read, typename Token>
  auto read(Read read, Token&& token, asio::cancellation_slot stop = {}) {
    namespace d = drained_read_detail;
    if (reactor_ == nullptr)
      reactor_ = &asio::use_service<d::detail::reactor>(
          asio::query(socket_->get_executor(), asio::execution::context));
    return asio::async_initiate<Token, void(error_code, std::size_t)>(
        [this, stop](auto handler, Read read) {
          using Handler = decltype(handler);
          auto& object = d::SocketAccess::implementation(*socket_);
          auto& impl = object.get_implementation();
          const bool is_continuation = boost_asio_handler_cont_helpers::is_continuation(handler);
          auto slot = stop.is_connected() ? stop : asio::get_associated_cancellation_slot(handler);
          using Op = d::Op<Read, Handler>;
          typename Op::ptr p = {asio::detail::addressof(handler), Op::ptr::allocate(handler), 0};
          p.p = new (p.v) Op(impl.socket_, read, handler);
          if (slot.is_connected())
            p.p->cancellation_key_ = &slot.template emplace<d::ServiceAccess::Cancellation>(
                reactor_, &impl.reactor_data_, impl.socket_, asio::detail::reactor::read_op);
          reactor_->start_op(asio::detail::reactor::read_op, impl.socket_, impl.reactor_data_, p.p,
                             is_continuation, true);
          p.v = p.p = 0;
        },
        token, std::move(read));
  }

 private:
  tcp::socket* socket_;
  drained_read_detail::detail::reactor* reactor_ = nullptr;
};

}  // namespace pgshard
