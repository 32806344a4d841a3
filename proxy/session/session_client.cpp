// The client's socket: reads (and the watch while pgshard waits on shards), writes, and the
// loop that gathers the client's messages into requests up to a boundary.
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;
// The first read after a client was idle: small enough for the allocator's per-thread cache.
constexpr std::size_t kFirstReadChunk = 1000;

// Whether [at, at + n), read into an empty buffer, is whole messages ending with one that
// pgshard answers (Query, Sync, a function call, the end of a COPY) or Terminate: the client
// then waits for pgshard's answer, whose write finds a client that is gone. Not after a
// Parse or Bind alone (a batch the client goes on with): nothing is written to the client
// until more comes.
bool ends_exchange(std::string_view bytes) {
  std::size_t whole = 0;
  char last = 0;
  for (const auto m : protocol::Frames(bytes)) {
    whole += m.raw.size();
    last = m.frame.type;
  }
  return whole == bytes.size() &&
         (last == 'Q' || last == 'S' || last == 'F' || last == 'c' || last == 'f' || last == 'X');
}

}  // namespace

auto Session::read_first_chunk() {
  // Between requests a client holds no read buffer (idle clients are most clients): a
  // small one (most requests are small; a larger one grows it) is taken only when the
  // socket has data, and given back when a try finds none.
  worker_.spare_blocks().take_from(in_);
  return client_reads_.read(
      [this](int fd, bool& drained) {
        worker_.spare_blocks().give_to(in_);
        std::size_t room;
        char* at = in_.prepare(kFirstReadChunk, &room);
        const ssize_t got = recv_noting_drained(fd, at, room, drained);
        // Part of a message, or of a batch, may be all a client sent before it reset the
        // connection (drained_read.hpp: a reset is not counted): pgshard would wait for the
        // rest forever, holding the client's transaction and its slot.
        if (got > 0 && drained && !ends_exchange({at, static_cast<std::size_t>(got)}))
          drained = nothing_pending(fd);
        if (got < 0) {
          const int error = errno;
          worker_.spare_blocks().take_from(in_);
          errno = error;
        }
        return got;
      },
      use_nothrow_op, client_read_wake_.reading());
}

void Session::client_write_failed() {
  client_gone_ = true;
  client_read_wake_.wake();
}

bool Session::reads_first_chunk() const {
  return in_.empty() && !stream_.tls();
}

awaitable<bool> Session::read_client() {
  if (reads_first_chunk()) {
    auto [ec, n] = co_await read_first_chunk();
    client_read_wake_.read_ended();
    if (ec) co_return false;
    in_.commit(n);
    co_return true;
  }
  std::size_t room;
  char* at = in_.prepare(kReadChunk, &room);
  auto [ec, n] = co_await stream_.read_some(asio::buffer(at, room));
  if (ec) co_return false;
  in_.commit(n);
  co_return true;
}

awaitable<void> Session::watch_client(std::shared_ptr<ClientWatch> watch,
                                      std::function<void()> on_gone) {
  // Waits for the client's socket to become readable; a peek of 0 bytes is EOF. Bytes the
  // client pipelines meanwhile are its next requests: on plain TCP they are moved into in_
  // for client_loop (up to a bound, so memory stays bounded and an EOF behind them is still
  // seen); behind TLS, or past the bound, the watch ends (such a client is not gone).
  auto self = shared_from_this();
  auto& socket = stream_.socket();
  const std::size_t limit = std::min<std::size_t>(config_.listen.max_message_size, 1 << 20);
  while (!watch->stopping && !client_gone_) {
    auto [ec] = co_await socket.async_wait(
        tcp::socket::wait_read, asio::bind_cancellation_slot(watch->stop.slot(), use_nothrow));
    if (watch->stopping || ec == asio::error::operation_aborted) break;
    char byte;
    const ssize_t n = ec ? -1 : ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n > 0) {
      if (stream_.tls() || in_.size() >= limit) break;
      std::size_t room;
      char* at = in_.prepare(kReadChunk, &room);
      const ssize_t got = ::recv(socket.native_handle(), at, room, MSG_DONTWAIT);
      if (got > 0) in_.commit(static_cast<std::size_t>(got));
      continue;
    }
    if (n < 0 && !ec && (errno == EAGAIN || errno == EINTR)) continue;
    spdlog::info("{}: client left while pgshard waited on servers: stopping them", prefix());
    client_gone_ = true;
    on_gone();
    break;
  }
  watch->running = false;
  watch->ended.notify_all();
}

awaitable<void> Session::stop_watch(ClientWatch& watch) {
  watch.stopping = true;
  watch.stop.emit(asio::cancellation_type::terminal);
  while (watch.running) co_await watch.ended.wait();
}

bool Session::wrote_client_now(std::string_view& bytes) {
  if (client_writing_ || client_gone_) return false;
  error_code ec;
  bytes.remove_prefix(stream_.write_now(bytes, ec));
  if (ec) client_write_failed();
  return !ec && bytes.empty();
}

awaitable<bool> Session::write_client(std::string_view bytes) {
  // Once no other write is in progress: what the socket takes now (wrote_client_now), then
  // the rest when it takes more.
  while (client_writing_) co_await client_write_done_.wait();
  if (wrote_client_now(bytes)) co_return true;
  if (client_gone_) co_return false;
  client_writing_ = true;
  auto [ec, n] = co_await stream_.write(asio::buffer(bytes.data(), bytes.size()));
  client_writing_ = false;
  client_write_done_.notify_all();
  if (ec) client_write_failed();
  co_return !ec;
}

awaitable<void> Session::send_fatal(const proto::ErrorInfo& e) {
  std::string out;
  proto::write_error(out, e);
  co_await write_client(out);
  stream_.close();
}

awaitable<void> Session::client_loop() {
  for (;;) {
    for (;;) {
      // The extended messages read so far join the request in one copy (a driver's batch
      // usually arrives whole), with no coroutine for them.
      const std::size_t max_message = config_.listen.max_message_size;
      const std::string_view in = in_.view();
      std::size_t run = 0;
      while (in.size() - run >= 5 && joins_request(in[run])) {
        const std::size_t len = proto::load_be32(in.data() + run + 1);
        if (len < 4 || len > max_message || in.size() - run < len + 1 ||
            special(pending_.size() + run + len + 1))
          break;  // (decode_frame below judges it)
        run += len + 1;
      }
      if (run > 0) gathered(run);
      auto d = proto::decode_frame(in_.view(), max_message);
      if (d.status == proto::DecodeStatus::kError) {
        co_await fail(Failure::kProtocolViolation, d.error);
        co_return;
      }
      if (d.status == proto::DecodeStatus::kNeedMore) break;
      if (takes_boundary(d.frame.type, d.consumed)) {
        const char boundary = d.frame.type;
        if (routes_at_once(boundary)) {
          // (The common request, routed and sent without a coroutine of its own.)
          begin_request();
          Request req{boundary};
          RouteBox box([&] { return route_batch(&req.simple); });
          std::string_view rest;
          bool sent = forwarded_routed(*box, boundary, rest);
          if (!sent && server_wanted_ >= 0)
            sent = co_await forwarded_after_wait(*box, boundary, rest);
          if (!sent) {
            co_await handle_routed(req, *box);
          } else if (!rest.empty()) {
            co_await send_rest(rest);
          }
        } else {
          co_await handle_request(boundary);
        }
        ends_request();
        if (client_gone_) co_return;
        continue;
      }
      if (!co_await on_message(d.frame.type, d.consumed)) co_return;
    }
    // COPY FROM STDIN data streams through as it arrives; outside COPY it is ignored, as
    // PostgreSQL does.
    if (!pending_.empty() && copy_only_) co_await flush_copy();
    in_.shrink(1 << 20);
    maybe_close_for_shutdown();
    if (client_gone_) co_return;
    drop_discarded();
    if (!charge_buffers() && !co_await over_buffer_budget()) co_return;

    bool read = false;
    if (reads_first_chunk()) {  // (read_client's common case, in this coroutine)
      auto [ec, n] = co_await read_first_chunk();
      client_read_wake_.read_ended();
      in_.commit(n);
      read = !ec;
    } else {
      read = co_await read_client();
    }
    if (!read) {
      spdlog::debug("{}: client read ended", prefix());
      co_return;
    }
    drop_discarded();
    last_activity_ = coarse_now();
  }
}

bool Session::takes_boundary(char type, std::size_t size) {
  switch (type) {
    case proto::msg::kQuery:
    case proto::msg::kFunctionCall:
    case proto::msg::kSync:
    case proto::msg::kFlush:
      return take_unless_special(size);
    default:
      return false;
  }
}

bool Session::joins_request(char type) {
  switch (type) {
    case proto::msg::kParse:
    case proto::msg::kBind:
    case proto::msg::kDescribe:
    case proto::msg::kExecute:
    case proto::msg::kClose:
      return true;
    default:
      return false;
  }
}

bool Session::gather(char type, std::size_t size) {
  if (!joins_request(type) || special(pending_.size() + size)) return false;
  gathered(size);
  return true;
}

void Session::gathered(std::size_t size) {
  take_front(size);
  copy_only_ = false;
}

bool Session::special(std::size_t pending_after) const {
  return phase_.dropping_batch() || phase_.copy_in() || (copy_only_ && !pending_.empty()) ||
         pending_after > config_.listen.max_message_size;
}

bool Session::take_unless_special(std::size_t size) {
  if (special(pending_.size() + size)) return false;
  take_front(size);
  return true;
}

awaitable<bool> Session::on_message(char type, std::size_t size) {
  const bool too_large = pending_.size() + size > config_.listen.max_message_size;
  switch (phase_.on_message(type, too_large)) {
    case ClientAction::kDrop:
      in_.consume(size);
      co_return true;
    case ClientAction::kAnswerSync:
      in_.consume(size);
      co_return co_await write_client(proto::ready_for_query(transaction_status()));
    case ClientAction::kRefuse:
      co_return co_await refuse_batch();  // (the message is dropped next, as the rest)
    case ClientAction::kTerminate:
      in_.consume(size);
      co_return false;
    case ClientAction::kCopy:
      take_front(size);
      co_return true;
    case ClientAction::kIgnore:
      in_.consume(size);
      co_return true;
    case ClientAction::kViolation:
      co_await copy_violation(type);
      co_return false;
    case ClientAction::kGather:
    case ClientAction::kBoundary:
      if (copy_only_ && !pending_.empty()) {
        // COPY data gathered first goes out first.
        co_await flush_copy();
        co_return true;  // the message is still at the front of in_
      }
      if (type != proto::msg::kQuery && type != proto::msg::kFunctionCall &&
          type != proto::msg::kSync && type != proto::msg::kFlush)
        co_return gather(type, size);  // (true: nothing above stops it now)
      take_front(size);
      co_await handle_request(type);
      ends_request();
      co_return !client_gone_;
    case ClientAction::kInvalid:
      break;
  }
  co_await fail(Failure::kProtocolViolation, "invalid frontend message type " +
                                                 std::to_string(static_cast<unsigned char>(type)));
  co_return false;
}

awaitable<bool> Session::refuse_batch() {
  // Memory per client is bounded by max_message_size: an extended-protocol batch that grows
  // past it without a Sync is refused, as one oversized message would be; the rest of it is
  // skipped up to its Sync (ClientPhase::kDroppingBatch).
  const std::size_t max_message = config_.listen.max_message_size;
  spdlog::info("{}: batch without Sync exceeds max_message_size; refused", prefix());
  pending_.clear();
  std::string out;
  proto::write_error(out, failure_error(Failure::kBatchTooLarge,
                                        "extended-protocol batch exceeds max_message_size (" +
                                            std::to_string(max_message) + " bytes) before its Sync",
                                        "send Sync more often"));
  co_return co_await write_client(out);
}

}  // namespace pgshard::session
