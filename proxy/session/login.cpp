// Startup and authentication of a client connection. See login.hpp.
#include "proxy/session/login.hpp"

#include <spdlog/spdlog.h>

#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/runtime/cancel.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

// Values from clients go into the log with control characters escaped, so a user name or
// application_name cannot forge log lines.
std::string log_safe(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (unsigned char c : v) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return out;
}

// A SCRAM verifier for a user that does not exist: the salt depends only on the name and a
// per-process secret, the keys are random, so no proof ever matches.
protocol::ScramSecret mock_scram_secret(std::string_view user) {
  static const std::string secret = protocol::random_bytes(32);
  auto derived = protocol::ScramSecret::from_password(secret + std::string(user), "pgshard", 1);
  protocol::ScramSecret s;
  s.iterations = 4096;
  s.salt = derived.stored_key.substr(0, 16);
  s.stored_key = protocol::random_bytes(32);
  s.server_key = protocol::random_bytes(32);
  return s;
}

Login::Login(runtime::Worker& worker, runtime::ClientStream& stream, protocol::Buffer& in,
             Identity& id, std::function<const std::string&()> prefix,
             std::function<void()> on_auth)
    : worker_(worker),
      config_(worker.config()),
      stream_(stream),
      in_(in),
      id_(id),
      prefix_(std::move(prefix)),
      on_auth_(std::move(on_auth)) {}

awaitable<bool> Login::read() {
  std::size_t room;
  char* at = in_.prepare(16 * 1024, &room);
  auto [ec, n] = co_await stream_.read_some(asio::buffer(at, room));
  if (ec) co_return false;
  in_.commit(n);
  id_.spoke = true;
  co_return true;
}

awaitable<bool> Login::write(std::string_view bytes) {
  auto [ec, n] = co_await stream_.write(asio::buffer(bytes.data(), bytes.size()));
  co_return !ec;
}

awaitable<void> Login::send_fatal(const proto::ErrorInfo& e) {
  std::string out;
  proto::write_error(out, e);
  co_await write(out);
  stream_.close();
}

awaitable<bool> Login::run() {
  co_return co_await negotiate();
}

awaitable<bool> Login::read_startup() {
  for (;;) {
    auto d = proto::decode_startup(in_.view());
    if (d.status == proto::DecodeStatus::kError) {
      // As PostgreSQL: logged, not sent (COMMERROR), the connection closed. A client that
      // ends before it starts up (node-postgres's connect() then end() queues Terminate
      // ahead of the startup packet) sees a plain close, not an error.
      spdlog::info("{}: {}", prefix_(), d.error);
      co_return false;
    }
    if (d.status == proto::DecodeStatus::kNeedMore) {
      if (!co_await read()) co_return false;
      continue;
    }
    const char* err = nullptr;
    auto pkt = proto::parse_startup(d.frame.body, &err);
    if (!pkt) {
      co_await send_fatal(proto::fatal(sqlstate::kProtocolViolation, err));
      co_return false;
    }
    id_.raw.assign(d.frame.body);
    in_.consume(d.consumed);
    switch (pkt->kind) {
      case proto::StartupKind::kSSLRequest: {
        const bool go_on = co_await ssl_request();
        if (!go_on) co_return false;
        continue;
      }
      case proto::StartupKind::kGSSENCRequest:
        if (!co_await write("N")) co_return false;
        continue;
      case proto::StartupKind::kCancelRequest:
        co_await cancel_request(*pkt);
        co_return false;
      case proto::StartupKind::kStartup:
        break;
    }
    // Re-parse from our own copy: the views must outlive the input buffer.
    pkt = proto::parse_startup(id_.raw, &err);
    id_.startup = *pkt;
    co_return true;
  }
}

awaitable<bool> Login::ssl_request() {
  // Bytes sent after SSLRequest but before the handshake would be read as if they were
  // encrypted; PostgreSQL refuses them (CVE-2021-23214), and so do we.
  if (!in_.empty()) {
    co_await send_fatal(
        proto::fatal(sqlstate::kProtocolViolation, "received unencrypted data after SSL request"));
    co_return false;
  }
  const bool offer =
      worker_.shared().tls() && !stream_.tls() && config_.tls.mode != config::TlsMode::kDisable;
  if (!co_await write(offer ? "S" : "N")) co_return false;
  if (offer) {
    if (auto ec = co_await stream_.handshake(*worker_.shared().tls())) {
      spdlog::info("{}: TLS handshake failed: {}", prefix_(), ec.message());
      co_return false;
    }
  }
  co_return true;
}

awaitable<void> Login::cancel_request(const proto::StartupPacket& pkt) {
  // As PostgreSQL: the connection closes once the cancel has reached the servers, so a
  // client that waits for the close (libpq's PQcancel) never has its next statement
  // cancelled by a request still on its way.
  auto delivered = std::make_shared<asio::steady_timer>(stream_.socket().get_executor(),
                                                        std::chrono::seconds(5));
  auto ex = stream_.socket().get_executor();
  const bool known = runtime::CancelRegistry::instance().cancel(
      {pkt.cancel_pid, pkt.cancel_secret},
      [delivered, ex] { asio::post(ex, [delivered] { delivered->cancel(); }); });
  if (known) co_await delivered->async_wait(use_nothrow);
}

awaitable<bool> Login::negotiate() {
  const bool started = co_await read_startup();
  if (!started) co_return false;

  auto unknown = id_.startup.protocol_options();
  if (id_.startup.minor > 0 || !unknown.empty()) {
    // We speak 3.0 only; say so instead of failing (NegotiateProtocolVersion).
    std::string out;
    proto::NegotiateProtocolVersion{0, unknown}.write(out);
    if (!co_await write(out)) co_return false;
  }
  if (config_.tls.mode == config::TlsMode::kRequire && !stream_.tls()) {
    co_await send_fatal(proto::fatal(sqlstate::kInvalidAuthorization,
                                     "TLS is required (tls.mode: require)", {},
                                     "connect with sslmode=require"));
    co_return false;
  }
  auto user = id_.startup.param("user");
  if (user.empty()) {
    co_await send_fatal(proto::fatal(sqlstate::kInvalidAuthorization,
                                     "no PostgreSQL user name specified in startup packet"));
    co_return false;
  }
  if (!id_.startup.param("replication").empty() && id_.startup.param("replication") != "false") {
    co_await send_fatal(proto::fatal(sqlstate::kFeatureNotSupported,
                                     "replication connections are not supported by pgshard"));
    co_return false;
  }
  id_.database = id_.startup.param("database").empty() ? std::string(user)
                                                       : std::string(id_.startup.param("database"));
  if (on_auth_) on_auth_();
  const config::User* u = config_.find_user(user);
  if (!u) {
    // As PostgreSQL does: an unknown user gets the same SCRAM challenge as a known one (a
    // salt derived from the name, stable across attempts) and fails at the proof, so the
    // answers do not tell which user names exist.
    spdlog::info("{}: unknown user \"{}\"", prefix_(), log_safe(user));
    config::User mock;
    mock.name = std::string(user);
    mock.auth = config::AuthMethod::kScram;
    mock.scram = mock_scram_secret(user);
    co_await authenticate(mock);
    co_return false;
  }
  if (!co_await authenticate(*u)) co_return false;
  id_.user = u;
  co_return true;
}

awaitable<bool> Login::authenticate(const config::User& user) {
  std::string out;
  auto failed = [&]() -> awaitable<bool> {
    spdlog::info("{}: password authentication failed for user \"{}\"", prefix_(),
                 log_safe(user.name));
    co_await send_fatal(
        proto::fatal(sqlstate::kInvalidPassword,
                     "password authentication failed for user \"" + user.name + "\""));
    co_return false;
  };
  // Reads the next 'p' message (password or SASL); nullopt on EOF or a wrong message.
  auto next_password = [&]() -> awaitable<std::optional<std::string>> {
    for (;;) {
      auto d = proto::decode_frame(in_.view(), proto::kMaxStartupPacket);
      if (d.status == proto::DecodeStatus::kError) co_return std::nullopt;
      if (d.status == proto::DecodeStatus::kFrame) {
        std::string body(d.frame.body);
        char type = d.frame.type;
        in_.consume(d.consumed);
        if (type != proto::msg::kPassword) co_return std::nullopt;
        co_return body;
      }
      if (!co_await read()) co_return std::nullopt;
    }
  };

  switch (user.auth) {
    case config::AuthMethod::kTrust:
      break;
    case config::AuthMethod::kMd5: {
      auto salt = proto::random_bytes(4);
      proto::Authentication{proto::auth::kMD5Password, salt}.write(out);
      if (!co_await write(out)) co_return false;
      auto body = co_await next_password();
      if (!body) co_return false;
      auto pw = proto::PasswordMessage::parse(*body);
      if (!pw || pw->password != proto::md5_from_stored(user.md5, salt))
        co_return co_await failed();
      break;
    }
    case config::AuthMethod::kScram: {
      proto::write_auth_sasl(out, {"SCRAM-SHA-256"});
      if (!co_await write(out)) co_return false;
      auto body = co_await next_password();
      if (!body) co_return false;
      auto init = proto::SASLInitialResponse::parse(*body);
      if (!init || init->mechanism != "SCRAM-SHA-256" || !init->data) {
        co_await send_fatal(
            proto::fatal(sqlstate::kProtocolViolation,
                         "client selected an invalid SASL authentication mechanism"));
        co_return false;
      }
      proto::ScramServer scram(*user.scram, proto::base64_encode(proto::random_bytes(18)));
      std::string err;
      auto first = scram.client_first(*init->data, &err);
      if (!first) {
        co_await send_fatal(proto::fatal(sqlstate::kProtocolViolation, err));
        co_return false;
      }
      out.clear();
      proto::Authentication{proto::auth::kSASLContinue, *first}.write(out);
      if (!co_await write(out)) co_return false;
      body = co_await next_password();
      if (!body) co_return false;
      auto final_msg = scram.client_final(*body, &err);
      if (!final_msg) {
        if (!err.empty()) {
          co_await send_fatal(proto::fatal(sqlstate::kProtocolViolation, err));
          co_return false;
        }
        co_return co_await failed();
      }
      out.clear();
      proto::Authentication{proto::auth::kSASLFinal, *final_msg}.write(out);
      if (!co_await write(out)) co_return false;
      break;
    }
  }
  co_return true;
}

}  // namespace pgshard::session
