// One backend (server) connection: connect, log in with SCRAM/MD5/cleartext, track state.
#include "proxy/pool/server_conn.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>

#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"
#include "proxy/pool/server_fate.hpp"

namespace pgshard::pool {

using namespace asio::experimental::awaitable_operators;
namespace proto = protocol;

namespace {
std::atomic<uint64_t> next_id{1};
}

bool is_reported_parameter(std::string_view n) {
  static constexpr std::string_view kReported[] = {"application_name",
                                                   "client_encoding",
                                                   "DateStyle",
                                                   "IntervalStyle",
                                                   "TimeZone",
                                                   "integer_datetimes",
                                                   "is_superuser",
                                                   "server_encoding",
                                                   "server_version",
                                                   "session_authorization",
                                                   "standard_conforming_strings",
                                                   "default_transaction_read_only",
                                                   "in_hot_standby"};
  for (auto r : kReported)
    if (r == n) return true;
  return false;
}

ServerConn::ServerConn(asio::any_io_executor ex, const BackendTarget& target)
    : socket_(std::in_place, std::move(ex)), target_(target), id_(next_id++) {}

ServerConn::~ServerConn() {
  if (moving_fd_ >= 0) ::close(moving_fd_);  // (dropped on its way to another worker)
}

bool ServerConn::leave() {
  error_code ec;
  const int fd = socket_->release(ec);
  if (ec) {
    spdlog::warn("S-{}: shard {}: cannot move the connection: {}", id_, target_.shard_name,
                 ec.message());
    close();
    return false;
  }
  moving_fd_ = fd;
  socket_.reset();  // (closed, on its own worker's thread)
  return true;
}

bool ServerConn::arrive(asio::any_io_executor ex) {
  tcp::socket socket(std::move(ex));
  error_code ec;
  socket.assign(protocol_, moving_fd_, ec);
  if (ec) {
    spdlog::warn("S-{}: shard {}: cannot take the connection over: {}", id_, target_.shard_name,
                 ec.message());
    ::close(std::exchange(moving_fd_, -1));
    report(*this, ServerFailure::kIoError);
    return false;
  }
  moving_fd_ = -1;
  socket_.emplace(std::move(socket));
  drained_.forget_reactor();
  return true;
}

void ServerConn::close() {
  broken = true;
  if (!socket_) return;  // (on its way to another worker: the destructor closes it)
  error_code ec;
  socket_->shutdown(tcp::socket::shutdown_both, ec);
  socket_->close(ec);
}

bool ServerConn::stale() {
  if (!socket_ || !socket_->is_open()) return true;
  pollfd p{socket_->native_handle(), POLLIN | POLLRDHUP, 0};
  // An idle server sends nothing unprompted except on shutdown (FATAL, then EOF) or a
  // late NOTIFY/ParameterStatus; any of those means this connection is not clean.
  return ::poll(&p, 1, 0) != 0 || !rbuf.empty();
}

awaitable<std::string> ServerConn::connect(config::Millis timeout) {
  asio::steady_timer timer(socket_->get_executor(), timeout);
  auto result = co_await (login() || timer.async_wait(asio::use_awaitable));
  if (result.index() == 1) {
    close();
    co_return "timeout connecting to shard " + target_.shard_name + " at " + target_.host + ":" +
        std::to_string(target_.port);
  }
  co_return std::get<0>(result);
}

namespace {

// The answer to a server's authentication request, appended to `out` (nothing for
// AuthenticationOk and SASLFinal); the reason the login cannot go on, or "".
std::string answer_authentication(const proto::Authentication& a, const BackendTarget& target,
                                  std::unique_ptr<proto::ScramClient>& scram, std::string& out,
                                  const std::string& where) {
  if (a.code == proto::auth::kOk) return {};
  if (a.code == proto::auth::kCleartextPassword) {
    proto::PasswordMessage{target.password}.write(out);
  } else if (a.code == proto::auth::kMD5Password) {
    auto pw = proto::md5_password(target.user, target.password, a.data);
    proto::PasswordMessage{pw}.write(out);
  } else if (a.code == proto::auth::kSASL) {
    bool offered = false;
    for (auto m : a.sasl_mechanisms()) offered |= m == "SCRAM-SHA-256";
    if (!offered) return where + " offers no supported SASL mechanism";
    scram = std::make_unique<proto::ScramClient>(target.password,
                                                 proto::base64_encode(proto::random_bytes(18)));
    auto first = scram->client_first();
    proto::SASLInitialResponse{"SCRAM-SHA-256", std::string_view(first)}.write(out);
  } else if (a.code == proto::auth::kSASLContinue && scram) {
    std::string err;
    auto final_msg = scram->server_first(a.data, &err);
    if (!final_msg) return where + ": " + err;
    proto::SASLResponse{*final_msg}.write(out);
  } else if (a.code == proto::auth::kSASLFinal && scram) {
    if (!scram->server_final(a.data)) return where + ": server SCRAM signature mismatch";
  } else {
    return where + " asks for an unsupported authentication method (" + std::to_string(a.code) +
           ")";
  }
  return {};
}

}  // namespace

awaitable<std::string> ServerConn::login() {
  const std::string where = "shard " + target_.shard_name + " (" + target_.host + ":" +
                            std::to_string(target_.port) + ")";
  tcp::resolver resolver(socket_->get_executor());
  auto [rec, endpoints] =
      co_await resolver.async_resolve(target_.host, std::to_string(target_.port), use_nothrow);
  if (rec) co_return "cannot resolve " + where + ": " + rec.message();
  auto [cec, ep] = co_await asio::async_connect(*socket_, endpoints, use_nothrow);
  if (cec) co_return "cannot connect to " + where + ": " + cec.message();
  protocol_ = ep.protocol();
  socket_->set_option(tcp::no_delay(true));
  enable_drained_reads(*socket_);

  std::string out;
  proto::write_startup(out, {{"user", target_.user}, {"database", target_.database}});
  if (auto [ec, n] = co_await asio::async_write(*socket_, asio::buffer(out), use_nothrow); ec)
    co_return "cannot write to " + where + ": " + ec.message();

  std::unique_ptr<proto::ScramClient> scram;
  for (;;) {
    auto d = proto::decode_frame(rbuf.view());
    if (d.status == proto::DecodeStatus::kError) co_return "protocol error from " + where;
    if (d.status == proto::DecodeStatus::kNeedMore) {
      std::size_t room;
      char* at = rbuf.prepare(8192, &room);
      auto [ec, n] = co_await socket_->async_read_some(asio::buffer(at, room), use_nothrow);
      rbuf.commit(n);
      if (ec) co_return "connection to " + where + " closed during login: " + ec.message();
      continue;
    }
    const proto::Frame f = d.frame;
    out.clear();
    switch (f.type) {
      case proto::msg::kAuthentication: {
        auto a = proto::Authentication::parse(f.body);
        if (!a) co_return "malformed authentication request from " + where;
        if (auto err = answer_authentication(*a, target_, scram, out, where); !err.empty())
          co_return err;
        break;
      }
      case proto::msg::kErrorResponse: {
        auto e = proto::ErrorFields::parse(f.body);
        co_return "login to " + where +
            " failed: " + (e ? std::string(e->message()) : std::string("malformed error"));
      }
      case proto::msg::kParameterStatus:
        if (auto p = proto::ParameterStatus::parse(f.body))
          params[std::string(p->name)] = std::string(p->value);
        break;
      case proto::msg::kBackendKeyData:
        if (auto k = proto::BackendKeyData::parse(f.body)) {
          pid_ = k->pid;
          secret_ = k->secret;
        }
        break;
      case proto::msg::kReadyForQuery:
        rbuf.consume(d.consumed);
        status = 'I';
        co_return std::string();
      case proto::msg::kNegotiateProtocolVersion:
      case proto::msg::kNoticeResponse:
        break;
      default:
        co_return "unexpected message '" + std::string(1, f.type) + "' from " + where;
    }
    rbuf.consume(d.consumed);
    if (!out.empty()) {
      if (auto [ec, n] = co_await asio::async_write(*socket_, asio::buffer(out), use_nothrow); ec)
        co_return "cannot write to " + where + ": " + ec.message();
    }
  }
}

awaitable<bool> ServerConn::run_own(std::string_view sql, std::size_t max_message,
                                    std::function<void(std::string_view row)> on_row,
                                    std::function<void(std::string_view body)> on_description) {
  std::string q;
  proto::Query{sql}.write(q);
  replies.expect_ready(Replies::Owner::kOwn);
  auto [ec, n] = co_await asio::async_write(*socket_, asio::buffer(q), use_nothrow);
  count_sent(n);
  const bool ok =
      !ec && co_await read_replies(
                 max_message, [&](const protocol::Frame& f, std::string_view, Replies::Verdict) {
                   if (f.type == proto::msg::kDataRow && on_row) on_row(f.body);
                   if (f.type == proto::msg::kRowDescription && on_description)
                     on_description(f.body);
                   return f.type == proto::msg::kReadyForQuery && replies.own_owed() == 0;
                 });
  if (!ok) report(*this, ServerFailure::kIoError);
  co_return ok;
}

}  // namespace pgshard::pool
