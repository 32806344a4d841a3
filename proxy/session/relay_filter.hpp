// The single-shard relay's decisions, without sockets: which of a server's replies reach the
// client (most, untouched), which are hidden or replaced (those to pgshard's own messages,
// per the server's reply queue), and what the client's replies mean for its session
// (ReadyForQuery, COPY, ParameterStatus, errors). Large rows stream through unparsed.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "proxy/pool/server_conn.hpp"

namespace pgshard::session {

// What the relay tells the session about the client's replies.
class RelayEvents {
 public:
  virtual ~RelayEvents() = default;
  // The client's request got its ReadyForQuery (its status is in conn.status). False: the
  // client must be told client_status() instead (its BEGIN is still pgshard's: in a
  // transaction, or that transaction failed without the server knowing).
  virtual bool client_ready(pool::ServerConn& conn) = 0;
  virtual char client_status() const { return 'T'; }
  virtual void copy_in_started() = 0;
  // A setting the server reported after the client's statement.
  virtual void reported(pool::ServerConn& conn, std::string_view name, std::string_view value) = 0;
  // The client's statement failed, or its transaction rolled back (its SETs do not hold).
  virtual void client_failed() = 0;
  virtual void client_rolled_back() = 0;
  // A row of pgshard's statement that finishes the client's request (its settings check).
  virtual void finishing_row(pool::ServerConn& conn, std::string_view body) {
    (void)conn;
    (void)body;
  }
  // An error for the client (body of its ErrorResponse): what to send instead, if anything
  // (a whole message).
  virtual std::optional<std::string> replace_error(std::string_view body) = 0;
  // pgshard's own statement was rejected (conn.replies.error says why).
  virtual void own_statement_failed(pool::ServerConn& conn) = 0;
  // The process id the client was given (BackendKeyData), 0 if none.
  virtual int32_t client_pid() const { return 0; }
  // A server said a statement's result type changed under it (DDL that bypassed pgshard).
  virtual void schema_changed() {}
};

class RelayFilter {
 public:
  // DataRow/CopyData frames larger than this stream to the client as they arrive.
  static constexpr std::size_t kStreamFrame = 64 * 1024;

  RelayFilter(std::size_t max_message, RelayEvents& events)
      : max_message_(max_message), events_(events) {}

  struct Step {
    std::string_view relay;  // bytes for the client (valid until the next walk)
    std::size_t used = 0;    // bytes of the input walked (consume them)
    bool invalid = false;    // the server broke the protocol: the connection is lost
  };
  // Walks the whole frames at the front of `buf`, the server's unread bytes.
  Step walk(pool::ServerConn& conn, std::string_view buf);
  // Forgets the server walked so far (a large frame half relayed), for another server.
  void reset() { passthrough_ = 0; }

 private:
  // One walk over a buffer: the frame at `pos`, and how much of `buf` before it is already
  // in out_ (once a frame is hidden or replaced, the relayed bytes are a copy).
  struct Cursor {
    std::string_view buf;
    std::size_t pos = 0;
    std::size_t relay_from = 0;
    bool hiding = false;
  };
  // Leaves the frame at c.pos (`total` bytes) out of what the client gets.
  void hide_frame(Cursor& c, std::size_t total);
  // A whole frame the reply queue does not pass unread: hidden, replaced or passed on, and
  // what it tells the session.
  void on_frame(pool::ServerConn& conn, Cursor& c, char type, std::string_view body,
                std::size_t total);
  void on_notification(const pool::ServerConn& conn, Cursor& c, std::string_view body,
                       std::size_t total);
  void on_client_error(Cursor& c, std::string_view body, std::size_t total);

  std::size_t max_message_;
  RelayEvents& events_;
  std::size_t passthrough_ = 0;  // bytes of a large frame still to relay unparsed
  std::string out_;              // relayed bytes when some frames are hidden
};

}  // namespace pgshard::session
