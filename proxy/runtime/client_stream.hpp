// The client's byte stream: plain TCP, or TLS after an accepted SSLRequest.
#pragma once

#include <memory>

#include "proxy/asio.hpp"

namespace pgshard::runtime {

class ClientStream {
 public:
  explicit ClientStream(tcp::socket socket) : socket_(std::move(socket)) {}

  bool tls() const { return tls_ != nullptr; }
  tcp::socket& socket() { return socket_; }

  awaitable<error_code> handshake(asio::ssl::context& ctx) {
    tls_ = std::make_unique<asio::ssl::stream<tcp::socket&>>(socket_, ctx);
    auto [ec] = co_await tls_->async_handshake(asio::ssl::stream_base::server, use_nothrow);
    co_return ec;
  }

  awaitable<std::tuple<error_code, std::size_t>> read_some(asio::mutable_buffer b) {
    if (tls_) co_return co_await tls_->async_read_some(b, use_nothrow);
    co_return co_await socket_.async_read_some(b, use_nothrow);
  }

  awaitable<std::tuple<error_code, std::size_t>> write(asio::const_buffer b) {
    if (tls_) co_return co_await asio::async_write(*tls_, b, use_nothrow);
    co_return co_await asio::async_write(socket_, b, use_nothrow);
  }
  // Plain TCP: what the socket takes now (see send_now); TLS: nothing (all goes by write).
  std::size_t write_now(std::string_view bytes, error_code& ec) {
    return tls_ ? 0 : send_now(socket_, bytes, ec);
  }

  void close() {
    error_code ec;
    socket_.shutdown(tcp::socket::shutdown_both, ec);
    socket_.close(ec);
  }

 private:
  tcp::socket socket_;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls_;
};

}  // namespace pgshard::runtime
