// Startup and authentication of one client connection: SSL/GSS negotiation, CancelRequest,
// the startup packet, and trust/MD5/SCRAM against the configured users (unknown users get
// the same SCRAM challenge and fail at the proof). Ends with the user known, or with the
// client answered FATAL.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "protocol/auth.hpp"
#include "protocol/buffer.hpp"
#include "protocol/errors.hpp"
#include "protocol/startup.hpp"
#include "proxy/asio.hpp"
#include "proxy/runtime/client_stream.hpp"

namespace pgshard::runtime {
class Worker;
}  // namespace pgshard::runtime

namespace pgshard::session {

// Who the client is, as its startup packet says (the packet's views point into `raw`).
struct Identity {
  std::string raw;
  protocol::StartupPacket startup;
  const config::User* user = nullptr;
  std::string database;
  bool spoke = false;  // the client has sent a byte
};

class Login {
 public:
  // `on_auth` runs when authentication starts (the startup packet was accepted).
  Login(runtime::Worker& worker, runtime::ClientStream& stream, protocol::Buffer& in, Identity& id,
        std::function<const std::string&()> prefix, std::function<void()> on_auth);
  // True when the client logged in as id.user.
  awaitable<bool> run();

 private:
  awaitable<bool> negotiate();
  // negotiate's steps: the startup packet read into id_.startup, answering SSLRequest and
  // GSSENCRequest on the way (false: the connection ends, a CancelRequest's too); an
  // SSLRequest answered and TLS begun when offered (false: the connection ends); a
  // CancelRequest passed on to the servers.
  awaitable<bool> read_startup();
  awaitable<bool> ssl_request();
  awaitable<void> cancel_request(const protocol::StartupPacket& pkt);
  awaitable<bool> authenticate(const config::User& user);
  awaitable<bool> read();
  awaitable<bool> write(std::string_view bytes);
  awaitable<void> send_fatal(const protocol::ErrorInfo& e);

  runtime::Worker& worker_;
  const config::Config& config_;
  runtime::ClientStream& stream_;
  protocol::Buffer& in_;
  Identity& id_;
  std::function<const std::string&()> prefix_;
  std::function<void()> on_auth_;
};

// Values from clients go into the log with control characters escaped, so a user name or
// application_name cannot forge log lines.
std::string log_safe(std::string_view v);
// A SCRAM verifier for a user that does not exist (see login.cpp).
protocol::ScramSecret mock_scram_secret(std::string_view user);

}  // namespace pgshard::session
