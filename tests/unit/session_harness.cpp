// The in-process session harness: a test worker, the fake shards' backend protocol
// (startup, simple and extended query, COPY FROM STDIN, CancelRequest) and the client's end.
#include "session_harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <sstream>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"
#include "proxy/asio.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::testing {

namespace proto = protocol;
using namespace asio::experimental::awaitable_operators;

namespace {

// A worker with no list of sessions: the console's questions find nothing.
class TestWorker : public runtime::Worker {
 public:
  explicit TestWorker(runtime::Shared& shared) : Worker(0, shared) {}
  runtime::WorkerSnapshot snapshot() const override {
    runtime::WorkerSnapshot out;
    out.worker = index_;
    add_pools(out, {});
    return out;
  }
  bool kill_client(uint64_t) override { return false; }
  void kill_shard(int shard) override { reconnect(shard); }
  bool drop_oldest_unheard(uint64_t) override { return false; }
};

std::string upper_words(std::string_view sql, int words) {
  std::string out;
  std::size_t i = 0;
  while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
  for (; i < sql.size(); ++i) {
    const char c = sql[i];
    if (std::isspace(static_cast<unsigned char>(c)) || c == '(' || c == ';') {
      if (--words == 0) break;
      if (!out.empty() && out.back() != ' ') out += ' ';
      continue;
    }
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// A plausible answer to what pgshard sends on its own (settings sync, catalog reads,
// transaction control) and to statements the test's script leaves alone.
Reply default_reply(std::string_view sql) {
  const std::string two = upper_words(sql, 2);
  const std::string verb = upper_words(sql, 1);
  Reply r;
  if (verb == "SELECT" || verb == "WITH" || verb == "VALUES" || verb == "TABLE") {
    r.columns = {{"?column?"}};
    if (sql.find("set_config(") != std::string_view::npos) r.rows = {{std::string()}};
    // The shards' collation, which ORDER BY on text across shards follows.
    if (sql.find("datcollate") != std::string_view::npos) r.rows = {{std::string("C")}};
  } else if (verb == "SHOW") {
    r.columns = {{"setting"}};
    r.rows = {{std::string()}};
    r.tag = "SHOW";
  } else if (verb == "COPY" && two.size() > 4) {
    const std::string all = upper_words(sql, 64);
    if (all.find("FROM STDIN") != std::string::npos) r.copy_in = true;
  } else if (verb == "INSERT") {
    r.tag = "INSERT 0 0";
  } else if (verb == "UPDATE" || verb == "DELETE") {
    r.tag = verb + " 0";
  } else if (verb == "START") {
    r.tag = "START TRANSACTION";
  } else if (two == "COMMIT PREPARED" || two == "ROLLBACK PREPARED" ||
             two == "PREPARE TRANSACTION" || two == "DISCARD ALL" || two == "DEALLOCATE ALL") {
    r.tag = two;
  } else if (verb == "END") {
    r.tag = "COMMIT";
  } else if (verb == "ABORT") {
    r.tag = "ROLLBACK";
  } else {
    r.tag = verb;
  }
  return r;
}

// Splits a simple query's text at semicolons outside quotes.
std::vector<std::string_view> split_statements(std::string_view sql) {
  std::vector<std::string_view> out;
  char quote = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (quote) {
      if (c == quote) quote = 0;
    } else if (c == '\'' || c == '"') {
      quote = c;
    } else if (c == ';') {
      out.push_back(sql.substr(start, i - start));
      start = i + 1;
    }
  }
  out.push_back(sql.substr(start));
  std::erase_if(out, [](std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return std::isspace(c) != 0; });
  });
  return out;
}

}  // namespace

// ---- the fake shards ----

struct Harness::Fakes {
  mutable std::mutex mu;  // received (the test's thread reads it)
  std::vector<Received> received;
  Script script;
  std::vector<int> listen_fds;  // until the worker's context takes them
  // On the worker's thread only: held statements by backend pid, cancelled by pid.
  std::map<int32_t, asio::steady_timer*> held;
  int32_t next_pid = 1000;

  Reply answer(int shard, std::string_view sql, const std::vector<std::optional<std::string>>& p) {
    if (script)
      if (auto r = script(shard, sql, p)) return *r;
    return default_reply(sql);
  }
  void record(int shard, const std::function<void(Received&)>& f) {
    std::lock_guard lock(mu);
    f(received[static_cast<std::size_t>(shard)]);
  }
};

namespace {

using Fakes = Harness::Fakes;

// One connection to a fake shard: the backend side of the protocol, enough for pgshard.
class FakeConn {
 public:
  FakeConn(tcp::socket socket, std::shared_ptr<Fakes> fakes, int shard)
      : socket_(std::move(socket)), fakes_(std::move(fakes)), shard_(shard) {}

  awaitable<void> run() {
    if (!co_await startup()) co_return;
    for (;;) {
      auto d = proto::decode_frame(in_);
      if (d.status == proto::DecodeStatus::kError) co_return;
      if (d.status == proto::DecodeStatus::kNeedMore) {
        if (!co_await flush() || !co_await read_more()) co_return;
        continue;
      }
      const char type = d.frame.type;
      const std::string body(d.frame.body);
      in_.erase(0, d.consumed);
      if (type == proto::msg::kTerminate) co_return;
      if (!co_await handle(type, body)) co_return;
    }
  }

 private:
  struct Portal {
    std::string sql;
    std::vector<std::optional<std::string>> params;
    std::optional<Reply> reply;
  };

  awaitable<bool> read_more() {
    char buf[16384];
    auto [ec, n] = co_await socket_.async_read_some(asio::buffer(buf), use_nothrow);
    if (ec) co_return false;
    in_.append(buf, n);
    co_return true;
  }
  awaitable<bool> flush() {
    if (out_.empty()) co_return true;
    auto [ec, n] = co_await asio::async_write(socket_, asio::buffer(out_), use_nothrow);
    out_.clear();
    co_return !ec;
  }

  awaitable<bool> startup() {
    for (;;) {
      auto d = proto::decode_startup(in_);
      if (d.status == proto::DecodeStatus::kError) co_return false;
      if (d.status == proto::DecodeStatus::kNeedMore) {
        if (!co_await read_more()) co_return false;
        continue;
      }
      const char* err = nullptr;
      auto packet = proto::parse_startup(d.frame.body, &err);
      in_.erase(0, d.consumed);
      if (!packet) co_return false;
      if (packet->kind == proto::StartupKind::kSSLRequest ||
          packet->kind == proto::StartupKind::kGSSENCRequest) {
        out_ = "N";
        if (!co_await flush()) co_return false;
        continue;
      }
      if (packet->kind == proto::StartupKind::kCancelRequest) {
        fakes_->record(shard_, [](Received& r) { r.cancels++; });
        if (auto it = fakes_->held.find(packet->cancel_pid); it != fakes_->held.end())
          it->second->cancel();
        co_return false;
      }
      break;
    }
    fakes_->record(shard_, [](Received& r) { r.connections++; });
    pid_ = fakes_->next_pid++;
    proto::Authentication{}.write(out_);
    const std::pair<const char*, const char*> params[] = {{"server_version", "16.4"},
                                                          {"server_encoding", "UTF8"},
                                                          {"client_encoding", "UTF8"},
                                                          {"DateStyle", "ISO, MDY"},
                                                          {"integer_datetimes", "on"},
                                                          {"IntervalStyle", "postgres"},
                                                          {"standard_conforming_strings", "on"},
                                                          {"TimeZone", "UTC"},
                                                          {"is_superuser", "off"},
                                                          {"session_authorization", "app"},
                                                          {"application_name", ""}};
    for (const auto& [name, value] : params) proto::ParameterStatus{name, value}.write(out_);
    proto::BackendKeyData{pid_, 4242}.write(out_);
    proto::ReadyForQuery{status_}.write(out_);
    co_return co_await flush();
  }

  void write_description(const Reply& r) {
    if (r.columns.empty()) {
      proto::write_empty(out_, proto::msg::kNoData);
      return;
    }
    proto::RowDescription d;
    for (const auto& c : r.columns) d.fields.push_back({c.name, 0, 0, c.type_oid, -1, -1, 0});
    d.write(out_);
  }
  void write_error(std::string_view code) {
    proto::write_error(out_, proto::error(code, "fake error " + std::string(code)));
    if (status_ == proto::txn_status::kInBlock) status_ = proto::txn_status::kFailed;
  }
  void track_transaction(std::string_view sql) {
    const std::string two = upper_words(sql, 2);
    const std::string verb = upper_words(sql, 1);
    if (verb == "BEGIN" || verb == "START") status_ = proto::txn_status::kInBlock;
    if (verb == "COMMIT" || verb == "ROLLBACK" || verb == "END" || verb == "ABORT" ||
        two == "PREPARE TRANSACTION")
      status_ = proto::txn_status::kIdle;
  }
  // Rows and CommandComplete of `r` (after RowDescription, for a simple query); false when
  // the statement failed or was cancelled (an ErrorResponse was written), nullopt when
  // the connection closed while it was held.
  awaitable<std::optional<bool>> execute(std::string_view sql, const Reply& r) {
    if (r.hold) {
      if (!co_await flush()) co_return std::nullopt;
      asio::steady_timer timer(socket_.get_executor(), 10s);
      fakes_->held[pid_] = &timer;
      auto done = co_await (timer.async_wait(use_nothrow) ||
                            socket_.async_wait(tcp::socket::wait_read, use_nothrow));
      fakes_->held.erase(pid_);
      if (done.index() == 1) co_return std::nullopt;  // pgshard closed or wrote meanwhile
      write_error("57014");
      co_return false;
    }
    if (!r.error_code.empty()) {
      write_error(r.error_code);
      co_return false;
    }
    track_transaction(sql);
    for (const auto& row : r.rows) {
      proto::DataRow d;
      for (const auto& v : row)
        d.values.push_back(v ? proto::Value(std::string_view(*v)) : std::nullopt);
      d.write(out_);
    }
    const std::string tag =
        r.tag.empty() ? "SELECT " + std::to_string(r.rows.size()) : std::string(r.tag);
    proto::CommandComplete{tag}.write(out_);
    co_return true;
  }

  awaitable<bool> handle(char type, const std::string& body) {
    if (copying_) co_return co_await copy_message(type, body);
    if (skipping_ && type != proto::msg::kSync) co_return true;
    switch (type) {
      case proto::msg::kQuery: {
        auto q = proto::Query::parse(body);
        if (!q) co_return false;
        co_return co_await simple_query(q->sql);
      }
      case proto::msg::kParse: {
        auto p = proto::Parse::parse(body);
        if (!p) co_return false;
        statements_[std::string(p->name)] = std::string(p->query);
        proto::write_empty(out_, proto::msg::kParseComplete);
        co_return true;
      }
      case proto::msg::kBind: {
        auto b = proto::Bind::parse(body);
        if (!b) co_return false;
        Portal portal{statements_[std::string(b->statement)], {}, std::nullopt};
        for (const auto& v : b->params)
          portal.params.push_back(v ? std::optional<std::string>(*v) : std::nullopt);
        portals_[std::string(b->portal)] = std::move(portal);
        proto::write_empty(out_, proto::msg::kBindComplete);
        co_return true;
      }
      case proto::msg::kDescribe: {
        auto d = proto::Describe::parse(body);
        if (!d) co_return false;
        if (d->kind == 'S') {
          const std::string& sql = statements_[std::string(d->name)];
          proto::ParameterDescription{}.write(out_);
          write_description(fakes_->answer(shard_, sql, {}));
        } else {
          write_description(reply_of(portals_[std::string(d->name)]));
        }
        co_return true;
      }
      case proto::msg::kExecute: {
        auto e = proto::Execute::parse(body);
        if (!e) co_return false;
        Portal& portal = portals_[std::string(e->portal)];
        fakes_->record(shard_, [&](Received& r) { r.statements.push_back(portal.sql); });
        const Reply reply = reply_of(portal);
        auto ok = co_await execute(portal.sql, reply);
        if (!ok) co_return false;
        skipping_ = !*ok;
        co_return true;
      }
      case proto::msg::kClose:
        proto::write_empty(out_, proto::msg::kCloseComplete);
        co_return true;
      case proto::msg::kSync:
        skipping_ = false;
        proto::ReadyForQuery{status_}.write(out_);
        co_return co_await flush();
      case proto::msg::kFlush:
        co_return co_await flush();
      default:
        co_return true;  // CopyData etc. outside COPY: ignored, as PostgreSQL does
    }
  }

  const Reply& reply_of(Portal& p) {
    if (!p.reply) p.reply = fakes_->answer(shard_, p.sql, p.params);
    return *p.reply;
  }

  awaitable<bool> simple_query(std::string_view sql) {
    const auto statements = split_statements(sql);
    if (statements.empty()) proto::write_empty(out_, proto::msg::kEmptyQueryResponse);
    for (const auto statement : statements) {
      fakes_->record(shard_, [&](Received& r) { r.statements.push_back(std::string(statement)); });
      const Reply reply = fakes_->answer(shard_, statement, {});
      if (reply.copy_in) {
        proto::CopyResponse{proto::msg::kCopyInResponse, 0, {}}.write(out_);
        copying_ = true;
        copied_rows_ = 0;
        co_return co_await flush();
      }
      if (!reply.columns.empty() && reply.error_code.empty() && !reply.hold)
        write_description(reply);
      auto ok = co_await execute(statement, reply);
      if (!ok) co_return false;
      if (!*ok) break;
    }
    proto::ReadyForQuery{status_}.write(out_);
    co_return co_await flush();
  }

  awaitable<bool> copy_message(char type, const std::string& body) {
    switch (type) {
      case proto::msg::kCopyData:
        copied_rows_ += std::count(body.begin(), body.end(), '\n');
        fakes_->record(shard_, [&](Received& r) { r.copy_data += body; });
        co_return true;
      case proto::msg::kCopyDone:
        copying_ = false;
        proto::CommandComplete{"COPY " + std::to_string(copied_rows_)}.write(out_);
        break;
      case proto::msg::kCopyFail:
        copying_ = false;
        write_error("57014");
        break;
      default:
        co_return true;  // Flush and Sync are ignored during COPY
    }
    proto::ReadyForQuery{status_}.write(out_);
    co_return co_await flush();
  }

  tcp::socket socket_;
  std::shared_ptr<Fakes> fakes_;
  int shard_;
  int32_t pid_ = 0;
  char status_ = proto::txn_status::kIdle;
  std::string in_, out_;
  std::map<std::string, std::string> statements_;
  std::map<std::string, Portal> portals_;
  bool skipping_ = false;  // after an error in the extended protocol, until Sync
  bool copying_ = false;
  long copied_rows_ = 0;
};

awaitable<void> accept_loop(tcp::acceptor acceptor, std::shared_ptr<Fakes> fakes, int shard) {
  for (;;) {
    auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
    if (ec) co_return;
    asio::co_spawn(
        acceptor.get_executor(),
        [conn = std::make_shared<FakeConn>(std::move(socket), fakes, shard)]() {
          return conn->run();
        },
        asio::detached);
  }
}

// A listening loopback socket on a free port.
int listen_loopback(uint16_t* port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(fd, 64) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    throw std::runtime_error("cannot listen on loopback");
  *port = ntohs(a.sin_port);
  return fd;
}

}  // namespace

// ---- the harness ----

Harness::Harness(Script script, int pool_size, int shards) : fakes_(std::make_shared<Fakes>()) {
  fakes_->script = std::move(script);
  fakes_->received.resize(static_cast<std::size_t>(shards));
  std::ostringstream y;
  y << "listen: { host: 127.0.0.1, port: 6432, workers: 1 }\n"
    << "users:\n  - { name: app, auth: trust, pool_mode: transaction }\n"
    << "shards:\n";
  for (int i = 0; i < shards; ++i) {
    uint16_t port = 0;
    fakes_->listen_fds.push_back(listen_loopback(&port));
    y << "  - { name: s" << i << ", primary: \"postgres://app@127.0.0.1:" << port
      << "/app\", pool_size: " << pool_size << " }\n";
  }
  y << "sharded_tables:\n  - { table: users, column: id, type: bigint }\n"
    << "unsharded: reject\n"
    << "timeouts: { connect: 1s, pool_wait: 1s }\n"
    << "two_phase_commit: false\n"
    << "atomic_visibility: false\n"
    << "node_id: 1\n";
  config_ = config::load_string(y.str(), "session_harness.yaml");
  // As server::Server::install: every configuration installed stays alive in `configs`.
  shared_.configs.push_back(config_);
  shared_.config_now.store(config_.get(), std::memory_order_release);
  worker_ = std::make_unique<TestWorker>(shared_);
  shared_.workers.push_back(worker_.get());
  auto& ctx = worker_->context();
  for (std::size_t i = 0; i < fakes_->listen_fds.size(); ++i) {
    tcp::acceptor acceptor(ctx);
    acceptor.assign(tcp::v4(), fakes_->listen_fds[i]);
    asio::co_spawn(ctx, accept_loop(std::move(acceptor), fakes_, static_cast<int>(i)),
                   asio::detached);
  }
  fakes_->listen_fds.clear();
  guard_.emplace(ctx.get_executor());
  thread_ = std::thread([&ctx] { ctx.run(); });
}

Harness::~Harness() {
  // Sessions whose clients left end on their own; what is still suspended (the fakes'
  // loops) is destroyed with the io_context, after the thread stopped.
  wait_until([this] { return shared_.clients.load() == 0; }, 1s);
  guard_.reset();
  worker_->context().stop();
  thread_.join();
  worker_.reset();
}

runtime::Worker& Harness::worker() {
  return *worker_;
}

Client Harness::connect() {
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  auto* w = worker_.get();
  static std::atomic<uint64_t> next_id{1};
  const uint64_t id = next_id++;
  // Only the worker's thread registers sockets with its reactor (server::Worker hands
  // accepted connections over the same way).
  asio::post(w->context(), [w, fd = fds[0], id] {
    tcp::socket socket(w->context());
    socket.assign(tcp::v4(), fd);
    w->shared().clients++;
    auto s = std::make_shared<session::Session>(*w, std::move(socket), id);
    asio::co_spawn(
        w->executor(), [s]() -> awaitable<void> { co_await s->serve(); }, asio::detached);
  });
  return Client(fds[1]);
}

Client Harness::login(std::vector<Message>* login) {
  Client c = connect();
  auto messages = c.startup();
  INFO(dump());
  REQUIRE(!messages.empty());
  REQUIRE(messages.back().type == proto::msg::kReadyForQuery);
  if (login) *login = std::move(messages);
  return c;
}

Received Harness::received(int shard) const {
  std::lock_guard lock(fakes_->mu);
  return fakes_->received.at(static_cast<std::size_t>(shard));
}

void Harness::clear_received() {
  std::lock_guard lock(fakes_->mu);
  for (auto& r : fakes_->received) r = Received{};
}

std::string Harness::dump() const {
  std::lock_guard lock(fakes_->mu);
  std::string out;
  for (std::size_t i = 0; i < fakes_->received.size(); ++i) {
    const auto& r = fakes_->received[i];
    out += "shard " + std::to_string(i) + ": " + std::to_string(r.connections) + " logins, " +
           std::to_string(r.cancels) + " cancels\n";
    for (const auto& s : r.statements) out += "  " + s + "\n";
    if (!r.copy_data.empty()) out += "  copy data: " + r.copy_data + "\n";
  }
  return out;
}

int Harness::shard_of(int64_t key) const {
  auto h = router::partition_hash(config::KeyType::kInt8, std::to_string(key));
  REQUIRE(h);
  return router::hash_to_index(*h, static_cast<int>(config_->shards.size()));
}

bool Harness::wait_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// ---- the client's end ----

void Client::send(std::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    REQUIRE(n > 0);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::optional<Message> Client::read(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto d = proto::decode_frame(in_);
    if (d.status == proto::DecodeStatus::kFrame) {
      Message m{d.frame.type, std::string(d.frame.body)};
      in_.erase(0, d.consumed);
      return m;
    }
    if (d.status == proto::DecodeStatus::kError || fd_ < 0) return std::nullopt;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0)
      return std::nullopt;
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return std::nullopt;
    in_.append(buf, static_cast<std::size_t>(n));
  }
}

std::vector<Message> Client::read_until_ready(std::chrono::milliseconds timeout) {
  std::vector<Message> out;
  for (;;) {
    auto m = read(timeout);
    if (!m) {
      FAIL_CHECK("no ReadyForQuery within the timeout; got " << types(out));
      return out;
    }
    out.push_back(std::move(*m));
    if (out.back().type == proto::msg::kReadyForQuery) return out;
  }
}

bool Client::closed_within(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        until - std::chrono::steady_clock::now());
    pollfd p{fd_, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return true;
  }
}

void Client::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::vector<Message> Client::startup(const std::string& user, const std::string& database) {
  std::string out;
  proto::write_startup(out, {{"user", user}, {"database", database}});
  send(out);
  return read_until_ready();
}

std::vector<Message> Client::query(std::string_view sql) {
  std::string out;
  proto::Query{sql}.write(out);
  send(out);
  return read_until_ready();
}

std::vector<std::vector<std::string>> data_rows(const std::vector<Message>& messages) {
  std::vector<std::vector<std::string>> out;
  for (const auto& m : messages) {
    if (m.type != proto::msg::kDataRow) continue;
    auto d = proto::DataRow::parse(m.body);
    REQUIRE(d);
    auto& row = out.emplace_back();
    for (const auto& v : d->values) row.push_back(v ? std::string(*v) : "NULL");
  }
  return out;
}

std::string types(const std::vector<Message>& messages) {
  std::string out;
  for (const auto& m : messages) out += m.type;
  return out;
}

std::string error_code(const std::vector<Message>& messages) {
  for (const auto& m : messages)
    if (m.type == proto::msg::kErrorResponse)
      if (auto e = proto::ErrorFields::parse(m.body)) return std::string(e->code());
  return {};
}

}  // namespace pgshard::testing
