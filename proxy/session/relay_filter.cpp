#include "proxy/session/relay_filter.hpp"

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/session/statements.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace msg = protocol::msg;
using Owner = pool::Replies::Owner;
using Verdict = pool::Replies::Verdict;

RelayFilter::Step RelayFilter::walk(pool::ServerConn& conn, std::string_view buf) {
  Step step;
  Cursor c{buf};
  out_.clear();
  if (passthrough_ > 0) {
    c.pos = std::min(passthrough_, buf.size());
    passthrough_ -= c.pos;
  }
  while (passthrough_ == 0 && buf.size() - c.pos >= 5) {
    const char type = buf[c.pos];
    const uint32_t len = proto::load_be32(buf.data() + c.pos + 1);
    if (len < 4 || len > max_message_) {
      step.invalid = true;
      break;
    }
    const std::size_t total = std::size_t{len} + 1;
    if (buf.size() - c.pos < total) {
      if ((type == msg::kDataRow || type == msg::kCopyData) && total > kStreamFrame &&
          !conn.replies.own_front()) {
        passthrough_ = total - (buf.size() - c.pos);
        c.pos = buf.size();
      }
      break;
    }
    if (!conn.replies.passes(type))  // (most of a result: nothing to look at)
      on_frame(conn, c, type, buf.substr(c.pos + 5, len - 4), total);
    c.pos += total;
  }
  if (c.hiding) out_.append(buf.substr(c.relay_from, c.pos - c.relay_from));
  step.relay = c.hiding ? std::string_view(out_) : buf.substr(0, c.pos);
  step.used = c.pos;
  return step;
}

void RelayFilter::hide_frame(Cursor& c, std::size_t total) {
  out_.append(c.buf.substr(c.relay_from, c.pos - c.relay_from));
  c.relay_from = c.pos + total;
  c.hiding = true;
}

void RelayFilter::on_frame(pool::ServerConn& conn, Cursor& c, char type, std::string_view body,
                           std::size_t total) {
  const auto verdict = conn.replies.classify(proto::Frame{type, body}, &conn.prepared);
  const auto owner = conn.replies.owner();
  const bool ours = pool::Replies::ours(owner);
  if (verdict == Verdict::kAsParseComplete) {
    hide_frame(c, total);
    proto::write_empty(out_, msg::kParseComplete);
  }
  switch (type) {
    case msg::kReadyForQuery:
      conn.status = body.empty() ? proto::txn_status::kIdle : body[0];
      // (A ReadyForQuery the reply queue hides still ends the client's request.)
      if (pool::Replies::answers_client(owner) && !events_.client_ready(conn) &&
          verdict == Verdict::kForward) {
        hide_frame(c, total);
        out_ += proto::ready_for_query(events_.client_status());
      }
      break;
    case msg::kDataRow:
      if (owner == Owner::kOwnFinishing) events_.finishing_row(conn, body);
      break;
    case msg::kNotificationResponse:
      on_notification(conn, c, body, total);
      break;
    case msg::kCopyInResponse:
      if (!ours) events_.copy_in_started();
      break;
    case msg::kParameterStatus:
      if (auto p = proto::ParameterStatus::parse(body)) {
        // After pgshard's DISCARD ALL the server reports its defaults; after pgshard's
        // setting sync it reports what the session already recorded.
        if (owner != Owner::kOwn) conn.params[std::string(p->name)] = std::string(p->value);
        if (!ours || owner == Owner::kOwnFinishing) events_.reported(conn, p->name, p->value);
      }
      break;
    case msg::kCommandComplete:
      if (!ours && body.starts_with("ROLLBACK")) events_.client_rolled_back();
      break;
    case msg::kErrorResponse:
      if (!ours) on_client_error(c, body, total);
      if (ours && !conn.replies.error.empty() && conn.replies.fatal.empty())
        events_.own_statement_failed(conn);
      break;
    default:
      break;
  }
  if (verdict == Verdict::kHide) hide_frame(c, total);
}

void RelayFilter::on_notification(const pool::ServerConn& conn, Cursor& c, std::string_view body,
                                  std::size_t total) {
  // The client knows its session by the process id pgshard gave it: a notification
  // its own session sent carries that id, as on PostgreSQL (clients compare them to
  // skip their own notifications).
  if (const int32_t pid = events_.client_pid();
      pid != 0 && body.size() >= 4 &&
      static_cast<int32_t>(proto::load_be32(body.data())) == conn.pid()) {
    hide_frame(c, total);
    out_.append(c.buf.substr(c.pos, 5));
    proto::MessageWriter(out_).i32(pid);
    out_.append(body.substr(4));
  }
}

void RelayFilter::on_client_error(Cursor& c, std::string_view body, std::size_t total) {
  events_.client_failed();
  if (auto instead = events_.replace_error(body)) {
    hide_frame(c, total);
    out_ += *instead;
  }
  if (auto e = proto::ErrorFields::parse(body);
      e && e->code() == "0A000" && e->message() == "cached plan must not change result type")
    events_.schema_changed();
}

}  // namespace pgshard::session
