// Memory for what clients have sent and pgshard has not yet passed on, bounded across
// all clients by listen.max_buffered_bytes (see Session::charge_buffers).
#include <spdlog/spdlog.h>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;

bool Session::charge_buffers() {
  constexpr std::size_t kUncharged = 256 << 10;
  if (pending_.empty() && pending_.capacity() > kUncharged) std::string().swap(pending_);
  const std::size_t held = in_.capacity() + pending_.capacity();
  const std::size_t want = held > kUncharged ? held - kUncharged : 0;
  if (want == charged_) return true;  // (every client with small requests: no atomics)
  auto& total = buffered_total_;
  if (want < charged_) {
    total -= charged_ - want;
    charged_ = want;
    return true;
  }
  const std::size_t more = want - charged_;
  if (total.fetch_add(more) + more > config_.listen.max_buffered_bytes) {
    total -= more;
    return false;
  }
  charged_ = want;
  return true;
}

void Session::drop_discarded() {
  const bool dropping = phase_.dropping_batch();
  if (discard_ == 0 && !dropping) return;  // (every request but a refused one)
  const std::string_view in = in_.view();
  if (discard_ == 0 && dropping && in.size() >= 5 && in[0] != proto::msg::kSync &&
      in[0] != proto::msg::kTerminate) {
    // A message of a refused batch, not yet whole: dropped as it arrives, never held.
    const std::size_t whole = std::size_t{proto::load_be32(in.data() + 1)} + 1;
    if (whole > in.size()) discard_ = whole;
  }
  const std::size_t n = std::min(discard_, in_.size());
  in_.consume(n);
  discard_ -= n;
  in_.shrink(1 << 20);
}

awaitable<bool> Session::over_buffer_budget() {
  // Another client's memory is not this one's to take: the client whose request would go
  // over listen.max_buffered_bytes gets 53200 for it; the request is dropped as it streams
  // in (an extended batch up to its Sync, a simple Query whole), and the session goes on.
  const std::size_t limit = config_.listen.max_buffered_bytes;
  spdlog::warn(
      "{}: buffers of requests not yet sent reached listen.max_buffered_bytes ({}); "
      "request refused",
      prefix(), limit);
  const protocol::ErrorInfo e = proto::error(
      "53200", "out of memory",
      "pgshard's buffers for requests not yet sent are full (listen.max_buffered_bytes: " +
          std::to_string(limit) + " bytes across all clients)",
      "send Sync more often, or raise listen.max_buffered_bytes");
  if (phase_.copy_in()) {
    co_await send_fatal(e);  // (a COPY cannot skip part of its data)
    co_return false;
  }
  const std::string_view in = in_.view();
  const char type = in.size() >= 5 ? in[0] : char{0};  // the message arriving, if known
  if (type) {
    discard_ = std::size_t{proto::load_be32(in.data() + 1)} + 1;
    drop_discarded();
  }
  std::string().swap(pending_);
  std::string out;
  proto::write_error(out, e);
  if (type == proto::msg::kQuery || type == proto::msg::kFunctionCall)
    out += proto::ready_for_query(transaction_status());
  else if (!phase_.refuse())  // (dropped up to the batch's Sync)
    out.clear();              // (the batch was refused already)
  charge_buffers();
  co_return out.empty() || co_await write_client(out);
}

}  // namespace pgshard::session
