// Session::read_replies: reads one server connection's replies frame by frame, for the
// executors that talk to servers outside the single-shard relay.
#pragma once

#include "protocol/codec.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

// Reads one server's replies through its reply queue, handing each frame and what the queue
// says of it to `on_frame(frame, raw, verdict)` until it returns true. Returns false when
// the connection failed.
template <typename F>
awaitable<bool> Session::read_replies(pool::ServerConn& conn, F on_frame) {
  auto* lease = &conn;
  for (;;) {
    auto d = protocol::decode_frame(lease->rbuf.view(), config_.listen.max_message_size);
    if (d.status == protocol::DecodeStatus::kError) co_return false;
    if (d.status == protocol::DecodeStatus::kNeedMore) {
      std::size_t room;
      char* at = lease->rbuf.prepare(16 * 1024, &room);
      auto [ec, n] = co_await lease->socket().async_read_some(asio::buffer(at, room), use_nothrow);
      if (ec) co_return false;
      lease->rbuf.commit(n);
      continue;
    }
    const protocol::Frame f = d.frame;
    if (f.type == protocol::msg::kReadyForQuery) lease->status = f.body.empty() ? 'I' : f.body[0];
    const auto verdict = lease->replies.classify(f, &lease->prepared);
    bool stop = on_frame(f, std::string_view(lease->rbuf.data(), d.consumed), verdict);
    lease->rbuf.consume(d.consumed);
    if (stop) co_return true;
  }
}

}  // namespace pgshard::session
