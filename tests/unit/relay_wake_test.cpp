// The relay's wake-up (pool::RelayWake, through Backends::wake): it ends the relay's read of
// its server and nothing else pending on that socket (cancelling the socket, as pgshard did
// before, also ended a write in flight), and a wake-up outside a read is not kept for later.
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <utility>

#include "proxy/drained_read.hpp"
#include "proxy/pool/backends.hpp"

using namespace pgshard;

namespace {

// Runs what is ready (an io_context that ran out of work stops until restarted).
void pump(asio::io_context& ctx) {
  ctx.restart();
  ctx.poll();
}

// A relay's read of `socket` ended by `link`'s wake-up, as ServerConn::read_some(slot).
void relay_read(DrainedSocket& drained, pool::Link& link, std::optional<error_code>& out) {
  drained.read(
      [](int fd, bool& drained_now) {
        char byte[64];
        return recv_noting_drained(fd, byte, sizeof byte, drained_now);
      },
      [&out, &link](error_code ec, std::size_t) {
        link.wake.read_ended();
        out = ec;
      },
      link.wake.reading());
}

struct SocketPair {
  asio::io_context ctx;
  tcp::socket server{ctx};  // pgshard's end of a "server connection"
  int peer = -1;
  SocketPair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    const int small = 4096;
    ::setsockopt(fds[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    server.assign(tcp::v4(), fds[0]);
    peer = fds[1];
  }
  ~SocketPair() { ::close(peer); }
};

}  // namespace

TEST_CASE("relay wake-up: ends the relay's read only, a write in flight on the socket goes on",
          "[relay]") {
  SocketPair s;
  pool::Backends backends(s.ctx.get_executor());
  pool::Link link;
  DrainedSocket drained(s.server);

  // A request larger than the socket takes at once: its write waits for the peer.
  const std::string request(1 << 20, 'x');
  std::optional<std::pair<error_code, std::size_t>> wrote;
  asio::async_write(s.server, asio::buffer(request),
                    [&](error_code ec, std::size_t n) { wrote.emplace(ec, n); });
  std::optional<error_code> read;
  relay_read(drained, link, read);
  pump(s.ctx);
  REQUIRE_FALSE(wrote);
  REQUIRE_FALSE(read);

  backends.wake(link);
  pump(s.ctx);
  REQUIRE(read);
  CHECK(*read == asio::error::operation_aborted);
  CHECK_FALSE(wrote);  // still waiting for the peer, not aborted

  // The peer takes the request: the write ends whole.
  std::size_t received = 0;
  char chunk[64 * 1024];
  for (int i = 0; i < 100000 && !wrote; ++i) {
    const ssize_t n = ::recv(s.peer, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) received += static_cast<std::size_t>(n);
    pump(s.ctx);
  }
  REQUIRE(wrote);
  CHECK_FALSE(wrote->first);
  CHECK(wrote->second == request.size());
  for (ssize_t n; (n = ::recv(s.peer, chunk, sizeof chunk, MSG_DONTWAIT)) > 0;)
    received += static_cast<std::size_t>(n);
  CHECK(received == request.size());
}

TEST_CASE("relay wake-up: one outside a read does not end the next read", "[relay]") {
  SocketPair s;
  pool::Backends backends(s.ctx.get_executor());
  pool::Link link;
  DrainedSocket drained(s.server);

  std::optional<error_code> read;
  relay_read(drained, link, read);
  backends.wake(link);
  pump(s.ctx);
  REQUIRE(read);
  REQUIRE(*read == asio::error::operation_aborted);

  // Woken between two reads (the relay was busy relaying): nothing to end.
  backends.wake(link);
  read.reset();
  relay_read(drained, link, read);
  pump(s.ctx);
  CHECK_FALSE(read);
  REQUIRE(::send(s.peer, "Z", 1, 0) == 1);
  for (int i = 0; i < 1000 && !read; ++i) pump(s.ctx);
  REQUIRE(read);
  CHECK_FALSE(*read);
}
