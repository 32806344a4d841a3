// Integration harness: throwaway PostgreSQL shards, pgshard processes with generated
// configs, libpq helpers, and a raw protocol client for what libpq cannot send.
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace harness {

// The shards every test in this process shares (started on first use, stopped at exit).
class Cluster {
 public:
  static Cluster& get();
  int size() const { return static_cast<int>(ports_.size()); }
  int port(int i) const { return ports_[static_cast<std::size_t>(i)]; }
  const std::string& dir() const { return dir_; }
  void kill(int i);
  void restart(int i);
  // The port of a streaming replica of shard i replaying `delay_ms` behind it, started on
  // first use (pg_basebackup -R) and kept, like the shards, until the process ends.
  int replica(int i, int delay_ms = 0);
  // Stops (immediately) and starts again the server on `port` (a replica's).
  void kill_port(int port);
  void restart_port(int port);
  std::string log_tail(int i, int lines = 30) const;
  // Shard i's postmaster process.
  int postmaster_pid(int i) const;
  int postmaster_pid_at(int port) const;  // shards and replicas
  // libpq conninfo straight to shard i (not through pgshard).
  std::string direct(int i) const;
  ~Cluster();

 private:
  Cluster();
  std::string dir_;
  std::vector<int> ports_;
  std::vector<std::pair<std::pair<int, int>, int>> replicas_;  // ((shard, delay), port)
};

struct ProxyOptions {
  std::string pool_mode = "transaction";
  int pool_size = 10;
  std::vector<int> pool_sizes;  // per shard, replaces pool_size for the shards it names
  int workers = 2;
  std::string tls_mode = "disable";
  std::string extra_top;                    // extra top-level YAML
  std::string unsharded = "{ shard: s0 }";  // tables outside the map live on s0
  std::string sharded_tables;               // replaces the sharded_tables list when set
  std::string listen_extra;                 // extra keys inside listen: {}
  std::string users;                        // replaces the users list when set
  std::vector<std::string> shard_urls;      // replaces the shard URLs when set ("[...]": hosts;
                                            // more than the cluster's servers: more shards)
  std::vector<std::string> shard_extra;     // more keys of shard i ("replicas: [...]")
  int port = 0;                             // listen here (0: a free port)
  std::string two_phase_log;                // decision log directory (default: per proxy)
  int max_open_files = 0;                   // RLIMIT_NOFILE, soft and hard (0: inherited)
};

// Freezes shard i (SIGSTOP to its postmaster, then to every process it started) until
// destroyed (SIGCONT to them all): a hung server, which accepts TCP connections and never
// answers. A failing test never leaves the server frozen.
class FrozenShard {
 public:
  explicit FrozenShard(int i);
  // The server listening on `port` (a replica).
  struct AtPort {
    int port;
  };
  explicit FrozenShard(AtPort at);
  ~FrozenShard() { thaw(); }
  FrozenShard(const FrozenShard&) = delete;
  FrozenShard& operator=(const FrozenShard&) = delete;
  void thaw();

 private:
  std::vector<int> pids_;
};

// A pgshard process on a free port, stopped (SIGTERM) when destroyed.
// The pgshard the cases run: PGSHARD_TEST_BINARY when set (the sanitizer build's, by
// ./tests/run.sh; an older build, to see a regression test fail before its fix), else the
// one built with the tests.
std::string pgshard_binary();

class Proxy {
 public:
  explicit Proxy(ProxyOptions opts = {});
  ~Proxy();
  int port() const { return port_; }
  int pid() const { return pid_; }
  std::string conninfo(const std::string& extra = "", const std::string& user = "app",
                       const std::string& password = "secret") const;
  std::string log_tail(int lines = 40) const;
  std::string config_path() const { return dir_ + "/pgshard.yaml"; }
  std::string log_path() const { return dir_ + "/pgshard.log"; }
  // Sends `sig` and waits up to `wait_ms` for the process to exit; returns its status or -1.
  int signal_and_wait(int sig, int wait_ms);
  bool running() const;

 private:
  int port_ = 0;
  int pid_ = 0;
  std::string dir_;
};

using Conn = std::unique_ptr<PGconn, void (*)(PGconn*)>;
// One worker with `pool_size` servers per shard: every client of the test shares them, so
// one client's server is another's next.
ProxyOptions one_worker(int pool_size);

Conn connect(const std::string& conninfo);
// Runs one statement; fails the test on error. Returns rows as text ("NULL" for NULL).
std::vector<std::vector<std::string>> query(PGconn* c, const std::string& sql);
std::string scalar(PGconn* c, const std::string& sql);
// Runs a statement returning rows (a console SHOW): maps from column name to value, one per
// row (NULL as ""); fails the test on error.
std::vector<std::map<std::string, std::string>> show(PGconn* c, const std::string& what);
// The clients waiting for a server of shard `shard` (SHOW POOLS' cl_waiting, summed), read
// on the admin console `console`.
int clients_waiting(PGconn* console, const std::string& shard);
// Runs one statement expecting an error; returns its SQLSTATE ("" if it succeeded).
std::string error_code(PGconn* c, const std::string& sql, std::string* message = nullptr);
// Sends a CancelRequest for `c`'s running statement (libpq's PQcancel); true if sent.
bool send_cancel(PGconn* c);

// Polls `ok` every 50 ms until it holds or `limit` passes; returns whether it held.
bool wait_until(const std::function<bool()>& ok, std::chrono::milliseconds limit);
// TCP connections on local port `port` in `state` (ss state names: close-wait, estab...).
int sockets_in_state(int port, const std::string& state);

int free_port();
std::string temp_dir(const std::string& name);
// Runs a shell command; returns exit status and fills `out` with stdout+stderr.
int run(const std::string& cmd, std::string* out = nullptr);
std::string read_file(const std::string& path);

struct HttpReply {
  int status = 0;
  std::string headers;
  std::string body;
};
// `url` fetched with curl and `args` (method, credentials, -k); status 0: nothing answered.
HttpReply http_fetch(const std::string& url, const std::string& args = "");
// http://127.0.0.1:`port``path` with `method`.
HttpReply http_get(int port, const std::string& path, const std::string& method = "GET",
                   const std::string& args = "");
// The value of the Prometheus sample `series` (name with its labels, exactly as exposed) in
// `text`; -1 if absent.
double metric(const std::string& text, const std::string& series);

// Servers a case starts beyond pgshard and the shared shards (a Patroni cluster and its
// etcd): while registered, `log` is printed when the case fails or hangs, and `stop` ends
// the processes when a hang ends the test without destructors. Destroyed, its log's last
// text is kept until the next case starts, since Catch2 reports a case's end after its
// locals (and so its servers and proxies) are gone.
class CaseServers {
 public:
  CaseServers(std::string title, std::function<std::string()> log, std::function<void()> stop);
  ~CaseServers();
  CaseServers(const CaseServers&) = delete;
  CaseServers& operator=(const CaseServers&) = delete;
  const std::string& title() const { return title_; }
  std::string log() const { return log_(); }
  void stop() const { stop_(); }

 private:
  std::string title_;
  std::function<std::string()> log_;
  std::function<void()> stop_;
};

// Every proxy, case server and cluster started so far, and the logs kept from those of the
// case that has ended, for the failure listener to print.
void print_logs_on_failure();
// Forgets the logs kept from the previous case (the listener calls it as a case starts).
void case_starting();
// For a case that hangs: every running pgshard's threads' stacks (gdb) and the logs, then
// the pgshard processes and the shards are stopped (the caller exits without destructors).
void report_hang_and_stop();
// Every thread's stack of process `pid` (gdb), one line per frame.
std::string stacks_of(int pid);

// A client speaking the wire protocol directly through our protocol library.
class RawClient {
 public:
  explicit RawClient(int port);
  ~RawClient();
  bool send(const std::string& bytes);
  // Logs in with SCRAM; returns false if the server refused.
  bool login(const std::string& user = "app", const std::string& password = "secret",
             const std::vector<std::pair<std::string, std::string>>& extra = {});
  // Next message (type, body); nullopt on EOF or after `timeout_ms`.
  std::optional<std::pair<char, std::string>> next(int timeout_ms = 5000);
  // Reads messages until ReadyForQuery; returns their types in order ("1 2 T D C Z").
  std::string until_ready(std::vector<std::pair<char, std::string>>* all = nullptr);
  int read_byte(int timeout_ms = 5000);  // for 'S'/'N' answers; -1 on EOF/timeout
  bool closed(int timeout_ms = 3000);    // true if the server closed the connection
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  std::string buf_;
};

}  // namespace harness
