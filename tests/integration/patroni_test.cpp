// Failover with real tooling: shard s0 is three PostgreSQL servers managed by Patroni
// (Debian's `patroni`) over a single-member etcd (`etcd-server`) that the case starts itself,
// in synchronous_mode; s1 and s2 are the shared shards. The leader dies under a cross-shard
// transfer load (its Patroni killed with SIGKILL, its PostgreSQL stopped at once, as a crashed
// machine); Patroni promotes the synchronous standby once the leader key expires, and pgshard,
// whose map lists the three servers, moves s0's writes there on its own.
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "failover_support.hpp"
#include "harness.hpp"

using namespace harness;

extern char** environ;

namespace {

const std::string kPgBin = "/usr/lib/postgresql/15/bin";

// The path of `program` on PATH, "" when it is not installed.
std::string installed(const std::string& program) {
  std::string out;
  if (run("command -v " + program, &out) != 0) return "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

// `cmd` run as the postgres user (PostgreSQL refuses root; Patroni runs it as itself).
std::string as_postgres(const std::string& cmd) {
  return getuid() == 0 ? "runuser -u postgres -- " + cmd : cmd;
}

// Starts `argv` (argv[0] a full path) with stdout and stderr appended to `log` and HOME set to
// `home`, as the postgres user when the test runs as root. Returns its pid.
pid_t spawn(const std::vector<std::string>& argv, const std::string& log, const std::string& home) {
  // Everything the child needs is made before fork (the test process has threads).
  const passwd* pw = getuid() == 0 ? getpwnam("postgres") : nullptr;
  const uid_t uid = pw ? pw->pw_uid : getuid();
  const gid_t gid = pw ? pw->pw_gid : getgid();
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_text{"HOME=" + home};
  for (char** e = environ; *e; ++e)
    if (std::string(*e).rfind("HOME=", 0) != 0) env_text.emplace_back(*e);
  std::vector<char*> env;
  for (auto& e : env_text) env.push_back(e.data());
  env.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    if (pw && (setgroups(1, &gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) _exit(126);
    execve(args[0], args.data(), env.data());
    _exit(127);
  }
  return pid;
}

// Sends `sig` to `pid` and reaps it, waiting up to `wait_ms`; true when it has exited.
bool signal_and_reap(pid_t pid, int sig, int wait_ms) {
  ::kill(pid, sig);
  for (int waited = 0; waited <= wait_ms; waited += 20) {
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

// Shard s0 as Patroni runs it: an etcd of its own and three nodes n1..n3, each a Patroni
// process (as the postgres user) with its PostgreSQL, REST API and data directory in the
// case's directory. Stopped (Patroni stops its PostgreSQL) and removed when the case ends;
// their logs are printed when it fails.
class PatroniShard {
 public:
  static constexpr int kNodes = 3;

  PatroniShard();
  ~PatroniShard();
  PatroniShard(const PatroniShard&) = delete;
  PatroniShard& operator=(const PatroniShard&) = delete;

  int port(int i) const { return nodes_[static_cast<std::size_t>(i)].pg; }
  std::string name(int i) const { return "n" + std::to_string(i + 1); }
  // The running node whose Patroni answers GET `path` with 200 (/primary: the leader, a
  // primary; /sync: the synchronous standby), -1 when none does.
  int answering(const std::string& path) const;
  // Waits until the cluster has a leader, a synchronous standby and a streaming third node.
  bool wait_ready(std::chrono::seconds limit) const;
  // The node's machine dies: its Patroni gets SIGKILL, its PostgreSQL an immediate stop.
  void crash(int i);
  // Runs `sql` as the superuser on node i.
  void superuser_sql(int i, const std::string& sql) const;
  std::string logs() const;

 private:
  struct Node {
    int pg = 0, rest = 0;
    pid_t pid = 0;  // its Patroni, 0 once stopped
  };
  std::string data_dir(int i) const { return dir_ + "/" + name(i); }
  std::string node_yaml(int i) const;
  void start_etcd();
  void stop_all(int wait_ms);

  std::string dir_;
  int etcd_client_ = 0, etcd_peer_ = 0;
  pid_t etcd_ = 0;
  std::vector<Node> nodes_;
  std::unique_ptr<CaseServers> registered_;
};

PatroniShard::PatroniShard() : dir_(temp_dir("patroni")) {
  // Patroni (as postgres) makes the data directories, its pgpass files and the sockets here.
  if (const passwd* pw = getuid() == 0 ? getpwnam("postgres") : nullptr)
    REQUIRE(chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) == 0);
  registered_ = std::make_unique<CaseServers>(
      "Patroni and etcd logs (tail)", [this] { return logs(); }, [this] { stop_all(0); });
  start_etcd();
  for (int i = 0; i < kNodes; ++i) nodes_.push_back({free_port(), free_port(), 0});
  const std::string patroni = installed("patroni");
  for (int i = 0; i < kNodes; ++i) {
    const std::string config = dir_ + "/" + name(i) + ".yml";
    std::ofstream(config) << node_yaml(i);
    chmod(config.c_str(), 0644);
    nodes_[static_cast<std::size_t>(i)].pid =
        spawn({patroni, config}, dir_ + "/" + name(i) + ".log", dir_);
  }
}

PatroniShard::~PatroniShard() {
  stop_all(30000);
  registered_.reset();  // (keeps the logs for a failure report)
  run("rm -rf " + dir_);
}

void PatroniShard::start_etcd() {
  etcd_client_ = free_port();
  etcd_peer_ = free_port();
  const std::string client = "http://127.0.0.1:" + std::to_string(etcd_client_);
  const std::string peer = "http://127.0.0.1:" + std::to_string(etcd_peer_);
  // One member, on loopback, its data in the case's directory: Debian's etcd service is not
  // used. (Run as postgres like the rest: the directory is postgres's.)
  etcd_ = spawn({installed("etcd"), "--name", "e0", "--data-dir", dir_ + "/etcd",
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", "e0=" + peer, "--initial-cluster-state", "new"},
                dir_ + "/etcd.log", dir_);
  REQUIRE(wait_until(
      [&] {
        const auto health = http_get(etcd_client_, "/health");
        return health.status == 200 && health.body.find("true") != std::string::npos;
      },
      std::chrono::seconds(20)));
}

// Patroni 3.0's etcd3 client speaks etcd's v3 JSON gateway, which Debian's etcd 3.4 serves
// (its v2 API is off by default). ttl 8 s: the leader key of a dead leader expires 8 s after
// its last renewal, the failover's main delay (loop_wait + 2 retry_timeout must stay below).
std::string PatroniShard::node_yaml(int i) const {
  std::string yaml = R"(scope: pgshard-s0
namespace: /pgshard/
name: NAME
restapi: { listen: "127.0.0.1:REST", connect_address: "127.0.0.1:REST" }
etcd3: { hosts: "127.0.0.1:ETCD" }
bootstrap:
  dcs:
    ttl: 8
    loop_wait: 1
    retry_timeout: 3
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters: { max_prepared_transactions: 50, max_connections: 200, synchronous_commit: "on" }
  initdb: [{ encoding: UTF8 }, { locale: C.UTF-8 }]
postgresql:
  listen: "127.0.0.1:PORT"
  connect_address: "127.0.0.1:PORT"
  data_dir: DIR/NAME
  bin_dir: PGBIN
  pgpass: DIR/NAME.pgpass
  use_unix_socket: true
  authentication:
    superuser: { username: postgres, password: superpw }
    replication: { username: replicator, password: replpw }
    rewind: { username: postgres, password: superpw }
  parameters: { unix_socket_directories: "DIR", fsync: "off", shared_buffers: 32MB }
  pg_hba:
    - local all all trust
    - local replication all trust
    - host replication replicator 127.0.0.1/32 md5
    - host all all 127.0.0.1/32 md5
)";
  const Node& n = nodes_[static_cast<std::size_t>(i)];
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, std::string>>{{"NAME", name(i)},
                                                        {"REST", std::to_string(n.rest)},
                                                        {"ETCD", std::to_string(etcd_client_)},
                                                        {"PORT", std::to_string(n.pg)},
                                                        {"PGBIN", kPgBin},
                                                        {"DIR", dir_}})
    for (auto at = yaml.find(key); at != std::string::npos; at = yaml.find(key, at + value.size()))
      yaml.replace(at, key.size(), value);
  return yaml;
}

int PatroniShard::answering(const std::string& path) const {
  for (int i = 0; i < kNodes; ++i) {
    const Node& n = nodes_[static_cast<std::size_t>(i)];
    if (n.pid != 0 && http_get(n.rest, path).status == 200) return i;
  }
  return -1;
}

bool PatroniShard::wait_ready(std::chrono::seconds limit) const {
  return wait_until(
      [&] {
        const int leader = answering("/primary"), sync = answering("/sync");
        if (leader < 0 || sync < 0) return false;
        const int third = 0 + 1 + 2 - leader - sync;
        return http_get(nodes_[static_cast<std::size_t>(third)].rest, "/replica").status == 200;
      },
      limit);
}

void PatroniShard::crash(int i) {
  Node& n = nodes_[static_cast<std::size_t>(i)];
  REQUIRE(signal_and_reap(n.pid, SIGKILL, 5000));
  n.pid = 0;
  // (Patroni dead, nobody starts it again.)
  std::string out;
  REQUIRE(run(as_postgres(kPgBin + "/pg_ctl -D " + data_dir(i) + " -m immediate -w stop"), &out) ==
          0);
}

void PatroniShard::superuser_sql(int i, const std::string& sql) const {
  auto c = connect("host=127.0.0.1 port=" + std::to_string(port(i)) +
                   " user=postgres password=superpw dbname=postgres");
  query(c.get(), sql);
}

std::string PatroniShard::logs() const {
  std::string out;
  std::string text;
  for (int i = 0; i < kNodes; ++i) {
    run("tail -n 40 " + dir_ + "/" + name(i) + ".log", &text);
    out += "-- " + name(i) + " (PostgreSQL on " + std::to_string(port(i)) + ", REST " +
           std::to_string(nodes_[static_cast<std::size_t>(i)].rest) + ") --\n" + text;
  }
  run("tail -n 15 " + dir_ + "/etcd.log", &text);
  return out + "-- etcd --\n" + text;
}

// SIGTERM: Patroni stops its PostgreSQL and exits. What is left after `wait_ms` (a case that
// hangs passes 0) is killed, and any PostgreSQL still running is stopped at once.
void PatroniShard::stop_all(int wait_ms) {
  for (auto& n : nodes_)
    if (n.pid != 0) ::kill(n.pid, SIGTERM);
  for (auto& n : nodes_) {
    if (n.pid != 0 && !signal_and_reap(n.pid, SIGTERM, wait_ms))
      signal_and_reap(n.pid, SIGKILL, 5000);
    n.pid = 0;
  }
  for (int i = 0; i < static_cast<int>(nodes_.size()); ++i)
    if (access((data_dir(i) + "/postmaster.pid").c_str(), F_OK) == 0)
      run(as_postgres(kPgBin + "/pg_ctl -D " + data_dir(i) + " -m immediate -w stop"));
  if (etcd_ != 0 && !signal_and_reap(etcd_, SIGTERM, wait_ms + 2000))
    signal_and_reap(etcd_, SIGKILL, 5000);
  etcd_ = 0;
}

bool in_recovery(int port) {
  PGconn* c = PQconnectdb((host_direct(port) + " connect_timeout=2").c_str());
  bool recovering = true;
  if (PQstatus(c) == CONNECTION_OK) {
    PGresult* r = PQexec(c, "SELECT pg_is_in_recovery()");
    recovering = PQresultStatus(r) != PGRES_TUPLES_OK || std::string(PQgetvalue(r, 0, 0)) != "f";
    PQclear(r);
  }
  PQfinish(c);
  return recovering;
}

long long ms_between(std::chrono::steady_clock::time_point a,
                     std::chrono::steady_clock::time_point b) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count();
}

}  // namespace

TEST_CASE(
    "patroni: pgshard follows the synchronous standby Patroni promotes when the leader dies; "
    "no acknowledged commit is lost, nothing stays prepared, the sum is kept",
    "[patroni]") {
  if (installed("patroni").empty() || installed("etcd").empty())
    FAIL("patroni or etcd is not installed (deploy/install-deps.sh --tests installs them)");
  auto& cluster = Cluster::get();
  for (int i : {1, 2}) {
    auto c = connect(cluster.direct(i));
    query(c.get(), "DROP TABLE IF EXISTS pa_accounts, pa_done, pa_open");
  }
  PatroniShard s0;
  REQUIRE(s0.wait_ready(std::chrono::seconds(90)));
  const int leader = s0.answering("/primary"), sync = s0.answering("/sync");
  s0.superuser_sql(leader, "CREATE ROLE app LOGIN SUPERUSER PASSWORD 'secret'");
  s0.superuser_sql(leader, "CREATE DATABASE app OWNER app");

  // The map lists the three servers with the leader last, as a map written before an earlier
  // failover would: pgshard finds the primary (and that is no failover).
  std::string hosts = "[";
  for (int k = 1; k <= PatroniShard::kNodes; ++k)
    hosts += (k > 1 ? ", " : "") + host_quoted_url(s0.port((leader + k) % PatroniShard::kNodes));
  Proxy proxy(failover_map(hosts + "]", "", "pa_accounts", "pa_done"));
  REQUIRE(wait_until(
      [&] {
        for (int i = 0; i < PatroniShard::kNodes; ++i)
          if (host_column(proxy, s0.port(i), "role") != (i == leader ? "primary" : "replica"))
            return false;
        return host_column(proxy, s0.port(leader), "writes") == "yes";
      },
      std::chrono::seconds(20)));
  CHECK(host_column(proxy, s0.port(leader), "failovers") == "0");
  auto app = connect(proxy.conninfo());
  TransferLoad load;
  load.accounts = "pa_accounts";
  load.done = "pa_done";
  load.create(app.get());
  query(app.get(), "CREATE TABLE pa_open (id int)");  // (unsharded: on s0)

  load.conninfo = proxy.conninfo("connect_timeout=5");
  load.start();
  std::this_thread::sleep_for(std::chrono::seconds(2));
  // A transaction open on the leader when it dies.
  auto open_txn = connect(proxy.conninfo());
  query(open_txn.get(), "BEGIN");
  query(open_txn.get(), "INSERT INTO pa_open VALUES (1)");
  const int before_crash = load.committed;
  s0.crash(leader);
  const auto crashed = std::chrono::steady_clock::now();
  // Patroni promotes once the dead leader's key has expired: only the synchronous standby may
  // take over (synchronous_mode), since only it surely has every acknowledged commit.
  const bool promoted_in_time =
      wait_until([&] { return !in_recovery(s0.port(sync)); }, std::chrono::seconds(40));
  const auto promoted = std::chrono::steady_clock::now();
  REQUIRE(promoted_in_time);
  const int during_failover = load.committed - before_crash;
  const auto write_sql = "/* pgshard: shard=s0 */ INSERT INTO pa_open VALUES (2)";
  const bool writes_back = wait_until([&] { return try_statement(proxy.conninfo(), write_sql); },
                                      std::chrono::seconds(10));
  const auto back = std::chrono::steady_clock::now();
  CHECK(writes_back);
  std::cout << "patroni: " << s0.name(sync) << " promoted " << ms_between(crashed, promoted)
            << " ms after the leader " << s0.name(leader) << " died (ttl 8 s); writes through "
            << "pgshard back " << ms_between(promoted, back) << " ms after the promotion\n";
  // health.interval (100 ms) and one check (under health.timeout, 1 s) after the promotion.
  CHECK(ms_between(promoted, back) < 2000);
  // The transaction open on the dead leader ends with an error, never a COMMIT.
  PGresult* r = PQexec(open_txn.get(), "COMMIT");
  CHECK(std::string(PQcmdStatus(r)) != "COMMIT");
  PQclear(r);
  // The load goes on against the new leader.
  const int at_failover = load.committed;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  load.finish();
  std::cout << "patroni: " << load.committed << " transfers committed (" << before_crash
            << " before the crash, " << during_failover << " while s0 had no leader, "
            << load.committed - at_failover << " in the 2 s after), " << load.failed << " failed\n";
  CHECK(load.committed > at_failover);

  // After pgshard's two-phase commit recovery: nothing prepared, the sum kept, and every
  // COMMIT a client saw succeed on the primaries.
  const std::vector<std::string> primaries = {host_direct(s0.port(sync)), cluster.direct(1),
                                              cluster.direct(2)};
  CHECK(wait_nothing_prepared(primaries, std::chrono::seconds(45)));
  CHECK(load.total(primaries) == TransferLoad::start_total());
  CHECK(load.missing(primaries) == 0);
  {
    auto c = connect(host_direct(s0.port(sync)));
    CHECK(scalar(c.get(), "SELECT count(*) FROM pa_open WHERE id = 1") == "0");
  }
  CHECK(host_column(proxy, s0.port(sync), "writes") == "yes");
  CHECK(std::stoi(host_column(proxy, s0.port(sync), "timeline")) >= 2);
  CHECK(host_column(proxy, s0.port(sync), "failovers") == "1");
  CHECK_THAT(
      read_file(proxy.log_path()),
      Catch::Contains("shard s0: primary moved from 127.0.0.1:" + std::to_string(s0.port(leader)) +
                      " to 127.0.0.1:" + std::to_string(s0.port(sync))));
  for (int i : {1, 2}) {
    auto c = connect(cluster.direct(i));
    query(c.get(), "DROP TABLE IF EXISTS pa_accounts, pa_done, pa_open");
  }
}
