// Integration harness: throwaway PostgreSQL shards, pgshard processes with generated
// configs, libpq helpers, and a raw protocol client for what libpq cannot send.
#include "harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "protocol/auth.hpp"
#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"

namespace harness {

std::string pgshard_binary() {
  const char* other = std::getenv("PGSHARD_TEST_BINARY");
  return other && *other ? other : PGSHARD_BINARY;
}

namespace {
std::mutex g_mu;
std::set<Proxy*> g_proxies;
std::set<CaseServers*> g_case_servers;
std::vector<std::string> g_kept_logs;  // (title and text) of proxies and servers gone

void keep_log(const std::string& title, const std::string& text) {
  std::lock_guard lock(g_mu);
  g_kept_logs.push_back("---- " + title + " ----\n" + text + "\n");
}
const std::string kCluster = std::string(PGSHARD_SOURCE_DIR) + "/tests/harness/pgcluster.sh";
}  // namespace

int run(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* p = popen(full.c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string text;
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  int status = pclose(p);
  if (out) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

HttpReply http_fetch(const std::string& url, const std::string& args) {
  const auto dir = temp_dir("http");
  std::string out;
  run("curl -s -m 10 " + args + " -D " + dir + "/headers -o " + dir + "/body -w '%{http_code}' '" +
          url + "'",
      &out);
  HttpReply r;
  r.status = out.empty() ? 0 : std::atoi(out.c_str());
  r.headers = read_file(dir + "/headers");
  r.body = read_file(dir + "/body");
  run("rm -rf " + dir);
  return r;
}

HttpReply http_get(int port, const std::string& path, const std::string& method,
                   const std::string& args) {
  return http_fetch("http://127.0.0.1:" + std::to_string(port) + path, "-X " + method + " " + args);
}

double metric(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line))
    if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
        line[series.size()] == ' ')
      return std::stod(line.substr(series.size() + 1));
  return -1;
}

std::string tail(const std::string& text, int lines) {
  if (text.empty()) return text;
  std::size_t pos = text.size();
  for (int i = 0; i <= lines && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) return text;
  }
  return text.substr(pos + 1);
}

bool wait_until(const std::function<bool()>& ok, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ok();
}

int sockets_in_state(int port, const std::string& state) {
  std::string out;
  run("ss -Htn state " + state + " '( sport = :" + std::to_string(port) + " )' | wc -l", &out);
  return std::stoi(out);
}

int free_port() {
  // Never the same port twice in one run: the kernel may hand a free port out again, and
  // two shards given one port shared one server (and its data directory) without a word.
  static std::set<int> given;
  for (;;) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    const int port = ntohs(a.sin_port);
    close(fd);
    if (given.insert(port).second) return port;
  }
}

std::string temp_dir(const std::string& name) {
  std::string tmpl = "/tmp/pgshard-" + name + "-XXXXXX";
  char* d = mkdtemp(tmpl.data());
  REQUIRE(d != nullptr);
  chmod(d, 0755);
  return d;
}

Cluster& Cluster::get() {
  static Cluster c;
  return c;
}

Cluster::Cluster() {
  dir_ = temp_dir("shards");
  std::string ports;
  for (int i = 0; i < 3; ++i) {
    ports_.push_back(free_port());
    ports += " " + std::to_string(ports_.back());
  }
  std::string out;
  if (run(kCluster + " start " + dir_ + ports, &out) != 0) {
    std::cerr << "cannot start PostgreSQL shards:\n" << out << "\n";
    std::abort();
  }
}

Cluster::~Cluster() {
  run(kCluster + " stop " + dir_);
  run("rm -rf " + dir_);
}

void Cluster::kill(int i) {
  run(kCluster + " kill " + dir_ + " " + std::to_string(port(i)));
}

int Cluster::replica(int i, int delay_ms) {
  for (const auto& [key, port] : replicas_)
    if (key == std::pair{i, delay_ms}) return port;
  const int port = free_port();
  std::string out;
  if (run(kCluster + " replica " + dir_ + " " + std::to_string(this->port(i)) + " " +
              std::to_string(port) + " " + std::to_string(delay_ms),
          &out) != 0)
    FAIL("cannot start a replica of shard " << i << ":\n" << out);
  replicas_.push_back({{i, delay_ms}, port});
  return port;
}

void Cluster::kill_port(int port) {
  run(kCluster + " kill " + dir_ + " " + std::to_string(port));
}

void Cluster::restart_port(int port) {
  std::string out;
  REQUIRE(run(kCluster + " restart " + dir_ + " " + std::to_string(port), &out) == 0);
}

void Cluster::restart(int i) {
  std::string out;
  REQUIRE(run(kCluster + " restart " + dir_ + " " + std::to_string(port(i)), &out) == 0);
}

std::string Cluster::log_tail(int i, int lines) const {
  return tail(read_file(dir_ + "/" + std::to_string(port(i)) + ".log"), lines);
}

int Cluster::postmaster_pid(int i) const {
  return postmaster_pid_at(port(i));
}

int Cluster::postmaster_pid_at(int port) const {
  // postmaster.pid's first line (PostgreSQL docs, "Database File Layout").
  return std::stoi(read_file(dir_ + "/" + std::to_string(port) + "/postmaster.pid"));
}

FrozenShard::FrozenShard(int i) : FrozenShard(AtPort{Cluster::get().port(i)}) {}

FrozenShard::FrozenShard(AtPort at) {
  const int postmaster = Cluster::get().postmaster_pid_at(at.port);
  // The postmaster first, so that it starts nobody new meanwhile.
  REQUIRE(::kill(postmaster, SIGSTOP) == 0);
  pids_.push_back(postmaster);
  std::string children;
  run("pgrep -P " + std::to_string(postmaster), &children);
  std::istringstream in(children);
  for (int pid; in >> pid;)
    if (::kill(pid, SIGSTOP) == 0) pids_.push_back(pid);
}

void FrozenShard::thaw() {
  for (auto it = pids_.rbegin(); it != pids_.rend(); ++it) ::kill(*it, SIGCONT);
  pids_.clear();
}

std::string Cluster::direct(int i) const {
  // A lock that is never let go (a prepared transaction left behind, a session pgshard leaked)
  // fails the statement that waits for it instead of hanging the test.
  return "host=127.0.0.1 port=" + std::to_string(port(i)) +
         " user=app password=secret dbname=app options='-c lock_timeout=60s'";
}

Proxy::Proxy(ProxyOptions o) {
  auto& cluster = Cluster::get();
  dir_ = temp_dir("proxy");
  port_ = o.port ? o.port : free_port();
  std::ostringstream y;
  y << "listen: { host: 127.0.0.1, port: " << port_ << ", workers: " << o.workers
    << (o.listen_extra.empty() ? "" : ", " + o.listen_extra) << " }\n";
  if (o.tls_mode != "disable") {
    std::string out;
    if (run("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -keyout " +
                dir_ + "/server.key -out " + dir_ + "/server.crt",
            &out) != 0)
      FAIL("openssl failed: " << out);
    y << "tls: { mode: " << o.tls_mode << ", cert: " << dir_ << "/server.crt, key: " << dir_
      << "/server.key }\n";
  }
  y << "users:\n"
    << (o.users.empty() ? "  - { name: app, password: secret, pool_mode: " + o.pool_mode + " }\n"
                        : o.users);
  y << "shards:\n";
  // One shard per cluster server, or more when shard_urls names more (databases of them).
  const int shards = std::max(cluster.size(), static_cast<int>(o.shard_urls.size()));
  for (int i = 0; i < shards; ++i) {
    std::string url =
        i < static_cast<int>(o.shard_urls.size())
            ? o.shard_urls[static_cast<std::size_t>(i)]
            : "postgres://app:secret@127.0.0.1:" + std::to_string(cluster.port(i)) + "/app";
    // (A list: the shard's hosts, `hosts: [...]`.)
    y << "  - { name: s" << i
      << (url.starts_with("[") ? ", hosts: " + url : ", primary: \"" + url + "\"")
      << ", pool_size: "
      << (i < static_cast<int>(o.pool_sizes.size()) ? o.pool_sizes[static_cast<std::size_t>(i)]
                                                    : o.pool_size)
      << (i < static_cast<int>(o.shard_extra.size())
              ? ", " + o.shard_extra[static_cast<std::size_t>(i)]
              : std::string())
      << " }\n";
  }
  y << "sharded_tables:\n"
    << (o.sharded_tables.empty() ? "  - { table: users, column: id, type: bigint }\n"
                                   "  - { table: orders, column: user_id, type: bigint }\n"
                                 : o.sharded_tables);
  y << "unsharded: " << o.unsharded << "\n";
  y << "two_phase_log: " << (o.two_phase_log.empty() ? dir_ + "/2pc" : o.two_phase_log) << "\n";
  y << o.extra_top;
  {
    std::ofstream f(dir_ + "/pgshard.yaml");
    f << y.str();
  }
  const std::string path = pgshard_binary();
  const char* binary = path.c_str();
  pid_ = fork();
  if (pid_ == 0) {
    int fd = open((dir_ + "/pgshard.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (o.max_open_files > 0) {
      const rlimit lim{static_cast<rlim_t>(o.max_open_files),
                       static_cast<rlim_t>(o.max_open_files)};
      setrlimit(RLIMIT_NOFILE, &lim);
    }
    execl(binary, "pgshard", "--config", (dir_ + "/pgshard.yaml").c_str(), nullptr);
    _exit(127);
  }
  // Ready when the port accepts connections.
  for (int i = 0; i < 200; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port_));
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    close(fd);
    if (ok) break;
    if (!running()) FAIL("pgshard exited at start:\n" << log_tail());
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  std::lock_guard lock(g_mu);
  g_proxies.insert(this);
}

Proxy::~Proxy() {
  {
    std::lock_guard lock(g_mu);
    g_proxies.erase(this);
  }
  if (running()) {
    if (signal_and_wait(SIGTERM, 5000) < 0) signal_and_wait(SIGKILL, 5000);
  }
  // A sanitizer report in pgshard's own log fails the test that ran it.
  std::string log = read_file(dir_ + "/pgshard.log");
  keep_log("pgshard log (tail)", tail(log, 40));
  for (const char* marker : {"AddressSanitizer", "LeakSanitizer", "runtime error:"}) {
    INFO(tail(log, 60));
    CHECK(log.find(marker) == std::string::npos);
  }
  run("rm -rf " + dir_);
}

bool Proxy::running() const {
  if (pid_ <= 0) return false;
  int status;
  return waitpid(pid_, &status, WNOHANG) == 0;
}

int Proxy::signal_and_wait(int sig, int wait_ms) {
  if (pid_ <= 0) return -1;
  ::kill(pid_, sig);
  for (int waited = 0; waited < wait_ms; waited += 10) {
    int status;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return status;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

std::string Proxy::conninfo(const std::string& extra, const std::string& user,
                            const std::string& password) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " dbname=app user=" + user +
         " password=" + password + " sslmode=disable connect_timeout=10 " + extra;
}

std::string Proxy::log_tail(int lines) const {
  return tail(read_file(dir_ + "/pgshard.log"), lines);
}

CaseServers::CaseServers(std::string title, std::function<std::string()> log,
                         std::function<void()> stop)
    : title_(std::move(title)), log_(std::move(log)), stop_(std::move(stop)) {
  std::lock_guard lock(g_mu);
  g_case_servers.insert(this);
}

CaseServers::~CaseServers() {
  {
    std::lock_guard lock(g_mu);
    g_case_servers.erase(this);
  }
  keep_log(title_, log_());
}

void case_starting() {
  std::lock_guard lock(g_mu);
  g_kept_logs.clear();
}

void print_logs_on_failure() {
  std::lock_guard lock(g_mu);
  for (const auto& text : g_kept_logs) std::cerr << text;
  g_kept_logs.clear();
  for (auto* s : g_case_servers)
    std::cerr << "---- " << s->title() << " ----\n" << s->log() << "\n";
  for (auto* p : g_proxies) std::cerr << "---- pgshard log (tail) ----\n" << p->log_tail() << "\n";
  auto& c = Cluster::get();
  for (int i = 0; i < c.size(); ++i)
    std::cerr << "---- shard s" << i << " log (tail) ----\n" << c.log_tail(i, 15) << "\n";
}

std::string stacks_of(int pid) {
  std::string out;
  run("gdb -p " + std::to_string(pid) + " -batch -ex 'thread apply all bt' | grep -E '^(#|Thread)'",
      &out);
  return out;
}

void report_hang_and_stop() {
  {
    std::lock_guard lock(g_mu);
    for (auto* p : g_proxies)
      std::cerr << "---- pgshard pid " << p->pid() << " stacks ----\n"
                << stacks_of(p->pid()) << "\n";
  }
  print_logs_on_failure();
  // What each shard's sessions are doing, and what they wait for.
  const auto& c = Cluster::get();
  for (int i = 0; i < c.size(); ++i) {
    std::string out;
    run("PGPASSWORD=secret psql -X -q -h 127.0.0.1 -p " + std::to_string(c.port(i)) +
            " -U app app -c \"select pid, usename, application_name, state, wait_event_type, "
            "wait_event, left(query, 100) as query from pg_stat_activity where datname = 'app'\" "
            "-c 'select * from pg_prepared_xacts' "
            "-c 'select locktype, relation::regclass, pid, mode, granted from pg_locks where not "
            "granted'",
        &out);
    std::cerr << "---- shard s" << i << " sessions ----\n" << out << "\n";
  }
  std::lock_guard lock(g_mu);
  for (auto* p : g_proxies) ::kill(p->pid(), SIGKILL);
  for (auto* s : g_case_servers) s->stop();
  run(kCluster + " stop " + c.dir());
}

ProxyOptions one_worker(int pool_size) {
  ProxyOptions o;
  o.pool_size = pool_size;
  o.workers = 1;
  return o;
}

namespace {
// Catch2's INFO and assertions are not thread-safe, and tests call connect() and query()
// from several client threads at once (concurrent INFO corrupted the heap: "free():
// unaligned chunk detected in tcache"). The helpers' Catch2 use goes through this lock; the
// database work stays outside it.
std::mutex& catch_lock() {
  static std::mutex m;
  return m;
}
}  // namespace

Conn connect(const std::string& conninfo) {
  Conn c(PQconnectdb(conninfo.c_str()), PQfinish);
  std::lock_guard lock(catch_lock());
  INFO("connecting with " << conninfo);
  REQUIRE(PQstatus(c.get()) == CONNECTION_OK);
  return c;
}

std::vector<std::vector<std::string>> query(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  auto st = PQresultStatus(r);
  const std::string error = PQresultErrorMessage(r);
  std::vector<std::vector<std::string>> rows;
  bool ok = st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK || st == PGRES_EMPTY_QUERY;
  if (ok) {
    for (int i = 0; i < PQntuples(r); ++i) {
      rows.emplace_back();
      for (int j = 0; j < PQnfields(r); ++j)
        rows.back().push_back(PQgetisnull(r, i, j) ? "NULL" : PQgetvalue(r, i, j));
    }
  }
  PQclear(r);
  std::lock_guard lock(catch_lock());
  INFO(sql << " -> " << error);
  REQUIRE(ok);
  return rows;
}

std::vector<std::map<std::string, std::string>> show(PGconn* c, const std::string& what) {
  PGresult* r = PQexec(c, what.c_str());
  INFO(what << ": " << PQerrorMessage(c));
  REQUIRE(PQresultStatus(r) == PGRES_TUPLES_OK);
  std::vector<std::map<std::string, std::string>> rows;
  for (int i = 0; i < PQntuples(r); ++i) {
    std::map<std::string, std::string> row;
    for (int j = 0; j < PQnfields(r); ++j) row[PQfname(r, j)] = PQgetvalue(r, i, j);
    rows.push_back(std::move(row));
  }
  PQclear(r);
  return rows;
}

std::string scalar(PGconn* c, const std::string& sql) {
  auto rows = query(c, sql);
  std::lock_guard lock(catch_lock());
  REQUIRE(rows.size() == 1);
  REQUIRE(rows[0].size() == 1);
  return rows[0][0];
}

bool send_cancel(PGconn* c) {
  PGcancel* cancel = PQgetCancel(c);
  char err[256];
  const bool sent = PQcancel(cancel, err, sizeof err) == 1;
  PQfreeCancel(cancel);
  return sent;
}

int clients_waiting(PGconn* console, const std::string& shard) {
  int n = 0;
  for (auto& row : show(console, "SHOW POOLS"))
    if (row["database"] == shard) n += std::stoi(row["cl_waiting"]);
  return n;
}

std::string error_code(PGconn* c, const std::string& sql, std::string* message) {
  PGresult* r = PQexec(c, sql.c_str());
  std::string code;
  if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
    const char* s = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    code = s ? s : "?????";
    if (message) {
      const char* m = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
      *message = m ? m : PQresultErrorMessage(r);
    }
  }
  PQclear(r);
  return code;
}

RawClient::RawClient(int port) {
  fd_ = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
}

RawClient::~RawClient() {
  if (fd_ >= 0) close(fd_);
}

bool RawClient::send(const std::string& bytes) {
  // A proxy that stops reading fails the send after a minute instead of hanging the test.
  std::size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      if (poll(&p, 1, 60000) <= 0) return false;
      continue;
    }
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

namespace {
bool wait_readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) > 0;
}
}  // namespace

int RawClient::read_byte(int timeout_ms) {
  if (!buf_.empty()) {
    int c = static_cast<unsigned char>(buf_[0]);
    buf_.erase(0, 1);
    return c;
  }
  if (!wait_readable(fd_, timeout_ms)) return -1;
  char c;
  return recv(fd_, &c, 1, 0) == 1 ? static_cast<unsigned char>(c) : -1;
}

std::optional<std::pair<char, std::string>> RawClient::next(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto d = pgshard::protocol::decode_frame(buf_);
    if (d.status == pgshard::protocol::DecodeStatus::kFrame) {
      std::pair<char, std::string> m{d.frame.type, std::string(d.frame.body)};
      buf_.erase(0, d.consumed);
      return m;
    }
    if (d.status == pgshard::protocol::DecodeStatus::kError) return std::nullopt;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0 || !wait_readable(fd_, static_cast<int>(left))) return std::nullopt;
    char tmp[65536];
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return std::nullopt;
    buf_.append(tmp, static_cast<std::size_t>(n));
  }
}

bool RawClient::closed(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (!wait_readable(fd_, 50)) continue;
    char tmp[4096];
    ssize_t n = recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) return true;
  }
  return false;
}

std::string RawClient::until_ready(std::vector<std::pair<char, std::string>>* all) {
  std::string types;
  for (;;) {
    auto m = next();
    if (!m) return types + "<eof>";
    if (!types.empty()) types += " ";
    types += m->first;
    if (all) all->push_back(*m);
    if (m->first == 'Z') return types;
  }
}

bool RawClient::login(const std::string& user, const std::string& password,
                      const std::vector<std::pair<std::string, std::string>>& extra) {
  namespace p = pgshard::protocol;
  std::vector<std::pair<std::string, std::string>> params{{"user", user}};
  // The database is "app" unless `extra` names another (the admin console's "pgshard").
  if (std::none_of(extra.begin(), extra.end(),
                   [](const auto& kv) { return kv.first == "database"; }))
    params.emplace_back("database", "app");
  params.insert(params.end(), extra.begin(), extra.end());
  std::string out;
  p::write_startup(out, params);
  send(out);
  std::unique_ptr<p::ScramClient> scram;
  for (;;) {
    auto m = next();
    if (!m) return false;
    out.clear();
    if (m->first == 'E') return false;
    if (m->first == 'Z') return true;
    if (m->first != 'R') continue;
    auto a = p::Authentication::parse(m->second);
    if (!a) return false;
    if (a->code == p::auth::kSASL) {
      scram = std::make_unique<p::ScramClient>(password, "rawclientnonce");
      auto first = scram->client_first();
      p::SASLInitialResponse{"SCRAM-SHA-256", std::string_view(first)}.write(out);
    } else if (a->code == p::auth::kSASLContinue) {
      std::string err;
      auto f = scram->server_first(a->data, &err);
      if (!f) return false;
      p::SASLResponse{*f}.write(out);
    }
    if (!out.empty()) send(out);
  }
}

}  // namespace harness
