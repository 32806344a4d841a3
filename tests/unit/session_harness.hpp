// In-process harness for session::Session: one worker whose io_context runs on a thread of
// the test, fake PostgreSQL shards on loopback (on that same io_context), and a client over
// a socketpair that speaks the wire protocol synchronously, with timeouts.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "proxy/runtime/shared.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::testing {

using namespace std::chrono_literals;
using Row = std::vector<std::optional<std::string>>;

struct Column {
  std::string name;
  int32_t type_oid = 25;  // text
};

// What a fake shard answers to one statement.
struct Reply {
  std::vector<Column> columns;  // with no columns: no RowDescription (a utility command)
  std::vector<Row> rows;
  std::string tag;         // CommandComplete; empty: SELECT n, or the statement's verb
  std::string error_code;  // non-empty: an ErrorResponse with this SQLSTATE instead
  bool copy_in = false;    // COPY FROM STDIN: CopyInResponse, then the client's data
  bool hold = false;       // no answer until cancelled (57014) or the connection closes
};

// The test's script: (shard, statement, parameters of an Execute) -> the reply, or nullopt
// for the fake's plausible default (SET -> SET, SELECT -> no rows, ...).
using Script = std::function<std::optional<Reply>(int shard, std::string_view sql,
                                                  const std::vector<std::optional<std::string>>&)>;

// What one fake shard received, in order.
struct Received {
  std::vector<std::string> statements;  // each simple-query statement and each Execute
  std::string copy_data;                // CopyData bytes
  int connections = 0;                  // logins
  int cancels = 0;                      // CancelRequests
};

// One message the client read.
struct Message {
  char type = 0;
  std::string body;
};

// The test's end of a client connection: blocking writes, reads with a timeout (a read
// that times out fails the test instead of hanging it).
class Client {
 public:
  explicit Client(int fd) : fd_(fd) {}
  Client(Client&& o) noexcept : fd_(std::exchange(o.fd_, -1)), in_(std::move(o.in_)) {}
  Client& operator=(Client&&) = delete;
  ~Client() { close(); }

  void send(std::string_view bytes);
  // The next message; nullopt on timeout or end of file.
  std::optional<Message> read(std::chrono::milliseconds timeout = 2s);
  // Messages up to and including ReadyForQuery (FAILs the test on timeout).
  std::vector<Message> read_until_ready(std::chrono::milliseconds timeout = 2s);
  // True when the peer closed the connection within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout);
  void close();

  // Startup as `user` and messages up to ReadyForQuery.
  std::vector<Message> startup(const std::string& user = "app",
                               const std::string& database = "app");
  // A simple Query, and its replies up to ReadyForQuery.
  std::vector<Message> query(std::string_view sql);

 private:
  int fd_;
  std::string in_;
};

// The DataRows among `messages`, as text ("NULL" for SQL NULL).
std::vector<std::vector<std::string>> data_rows(const std::vector<Message>& messages);
// The message types, in order ("1 2 D C Z" style: one char each).
std::string types(const std::vector<Message>& messages);
// The ErrorResponse's SQLSTATE, or "" when there is none.
std::string error_code(const std::vector<Message>& messages);

class Harness {
 public:
  // `shards` fake shards, each with a pool of `pool_size` servers, answering per `script`.
  explicit Harness(Script script = {}, int pool_size = 4, int shards = 2);
  ~Harness();
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;

  // A new session on the worker (as server::Worker::start_session), not yet logged in.
  Client connect();
  // connect() and a trust login as "app"; `login` gets the login's messages.
  Client login(std::vector<Message>* login = nullptr);

  Received received(int shard) const;
  void clear_received();
  // Every fake's log, for a failing test's message.
  std::string dump() const;
  // The shard PostgreSQL's hash partitioning puts bigint `key` on.
  int shard_of(int64_t key) const;
  const config::Config& config() const { return *config_; }
  runtime::Shared& shared() { return shared_; }
  runtime::Worker& worker();
  // Polls `done` until it holds or `timeout` passes.
  static bool wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 2s);

  struct Fakes;  // the fake shards' state (session_harness.cpp)

 private:
  runtime::Shared shared_;
  std::shared_ptr<Fakes> fakes_;
  std::shared_ptr<const config::Config> config_;
  std::unique_ptr<runtime::Worker> worker_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_;
  std::thread thread_;
};

}  // namespace pgshard::testing
