// Reading the lock waits of several shards at once, each within a deadline (see
// lock_waits.hpp).
#include "proxy/txn/lock_waits.hpp"

#include <libpq-fe.h>
#include <poll.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>

#include "proxy/runtime/health.hpp"
#include "proxy/txn/recovery.hpp"

namespace pgshard::txn {

namespace {

using Clock = std::chrono::steady_clock;

// A shard that missed a round is asked again after this long: each retry of a hung shard
// costs the round its deadline.
constexpr auto kRetryAfter = std::chrono::seconds(5);
// A shard that keeps missing is logged again after this long.
constexpr auto kLogEvery = std::chrono::minutes(1);

// pg_locks and pg_blocking_pids are readable by every role.
constexpr const char* kQuery =
    "SELECT w.pid, b.pid FROM (SELECT DISTINCT pid FROM pg_catalog.pg_locks "
    "WHERE NOT granted) w, unnest(pg_catalog.pg_blocking_pids(w.pid)) b(pid)";

PGconn* pg(void* conn) {
  return static_cast<PGconn*>(conn);
}

}  // namespace

LockWaitReader::LockWaitReader(const config::Config& cfg, const runtime::HostHealth* hosts)
    : cfg_(cfg), hosts_(hosts) {}

LockWaitReader::~LockWaitReader() {
  for (auto& [shard, s] : shards_)
    if (s.conn) PQfinish(pg(s.conn));
}

std::map<int, std::vector<LockWait>> LockWaitReader::read(const std::set<int>& shards,
                                                          std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  std::vector<int> asked;
  for (int shard : shards) {
    auto& s = shards_[shard];
    if (Clock::now() < s.retry_at) continue;
    start(shard, s, limit);
    asked.push_back(shard);
  }
  wait_all(asked, deadline, limit);
  std::map<int, std::vector<LockWait>> out;
  for (int shard : asked) {
    auto& s = shards_[shard];
    if (s.step != Step::kDone) {
      missed(shard, s);
      continue;
    }
    if (s.misses > 0)
      spdlog::info("deadlock detection: shard {} answers again (after {} missed rounds)",
                   name(shard), s.misses);
    s.misses = 0;
    out[shard] = std::move(s.waits);
  }
  return out;
}

void LockWaitReader::wait_all(const std::vector<int>& asked,
                              std::chrono::steady_clock::time_point deadline,
                              std::chrono::milliseconds limit) {
  for (;;) {
    std::vector<pollfd> fds;
    std::vector<int> of;
    for (int shard : asked) {
      auto& s = shards_[shard];
      if (s.step != Step::kDone && s.step != Step::kFailed && PQsocket(pg(s.conn)) < 0)
        fail(s, PQerrorMessage(pg(s.conn)));
      if (s.step == Step::kDone || s.step == Step::kFailed) continue;
      fds.push_back({PQsocket(pg(s.conn)), events(s), 0});
      of.push_back(shard);
    }
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (fds.empty() || left.count() <= 0) break;
    if (poll(fds.data(), fds.size(), static_cast<int>(left.count())) < 0 && errno != EINTR) break;
    for (std::size_t i = 0; i < fds.size(); ++i)
      if (fds[i].revents != 0) advance(of[i], shards_[of[i]], limit);
  }
}

void LockWaitReader::start(int shard, Shard& s, std::chrono::milliseconds limit) {
  s.waits.clear();
  s.error.clear();
  if (s.conn && PQstatus(pg(s.conn)) == CONNECTION_OK &&
      PQtransactionStatus(pg(s.conn)) == PQTRANS_IDLE) {
    send(shard, s, limit);
    return;
  }
  if (s.conn) PQfinish(pg(s.conn));
  const auto& at = cfg_.shards[static_cast<std::size_t>(shard)];
  const auto& host = at.host(hosts_ ? hosts_->writer(shard).host : 0);
  s.conn =
      PQconnectStart(runtime::maintenance_conninfo(cfg_, at, host, "pgshard-deadlock").c_str());
  if (!s.conn || PQstatus(pg(s.conn)) == CONNECTION_BAD || PQsocket(pg(s.conn)) < 0) {
    fail(s, s.conn ? PQerrorMessage(pg(s.conn)) : "out of memory");
    return;
  }
  s.step = Step::kConnecting;
  s.polling = PGRES_POLLING_WRITING;  // as libpq documents for the first PQconnectPoll
}

void LockWaitReader::send(int shard, Shard& s, std::chrono::milliseconds limit) {
  auto* c = pg(s.conn);
  // The server ends a slow read itself too; the deadline covers a server that cannot.
  const std::string sql =
      "SET statement_timeout = " + std::to_string(limit.count()) + "; " + kQuery;
  if (PQsetnonblocking(c, 1) != 0 || PQsendQuery(c, sql.c_str()) != 1) {
    fail(s, PQerrorMessage(c));
    return;
  }
  s.step = Step::kFlushing;
  advance(shard, s, limit);
}

void LockWaitReader::advance(int shard, Shard& s, std::chrono::milliseconds limit) {
  auto* c = pg(s.conn);
  switch (s.step) {
    case Step::kConnecting:
      s.polling = PQconnectPoll(c);
      if (s.polling == PGRES_POLLING_OK)
        send(shard, s, limit);
      else if (s.polling == PGRES_POLLING_FAILED)
        fail(s, PQerrorMessage(c));
      return;
    case Step::kFlushing:
      // libpq asks for input to be consumed while a flush waits (the server may be
      // writing too).
      if (PQconsumeInput(c) != 1) return fail(s, PQerrorMessage(c));
      if (const int left = PQflush(c); left < 0) {
        fail(s, PQerrorMessage(c));
      } else if (left == 0) {
        // The answer may be in libpq's buffer already (read above): no poll would see it.
        s.step = Step::kReading;
        read_results(shard, s);
      }
      return;
    case Step::kReading:
      read_results(shard, s);
      return;
    case Step::kDone:
    case Step::kFailed:
      return;
  }
}

void LockWaitReader::read_results(int shard, Shard& s) {
  auto* c = pg(s.conn);
  if (PQconsumeInput(c) != 1) return fail(s, PQerrorMessage(c));
  while (PQisBusy(c) == 0) {
    PGresult* r = PQgetResult(c);
    if (!r) {
      s.step = s.error.empty() ? Step::kDone : Step::kFailed;
      return;
    }
    if (PQresultStatus(r) == PGRES_TUPLES_OK) {
      for (int i = 0; i < PQntuples(r); ++i)
        s.waits.push_back({shard,
                           static_cast<int32_t>(std::strtol(PQgetvalue(r, i, 0), nullptr, 10)),
                           static_cast<int32_t>(std::strtol(PQgetvalue(r, i, 1), nullptr, 10))});
    } else if (PQresultStatus(r) != PGRES_COMMAND_OK) {
      s.error = PQresultErrorMessage(r);
    }
    PQclear(r);
  }
}

void LockWaitReader::fail(Shard& s, std::string why) {
  s.step = Step::kFailed;
  s.error = std::move(why);
}

void LockWaitReader::missed(int shard, Shard& s) {
  // A connection left mid-way is out of step (and a frozen server's never answers): close it.
  if (s.conn) PQfinish(pg(s.conn));
  s.conn = nullptr;
  const auto now = Clock::now();
  s.retry_at = now + kRetryAfter;
  if (s.misses++ > 0 && now - s.logged_at < kLogEvery) return;
  s.logged_at = now;
  static constexpr const char* kWhile[] = {"connecting", "sending", "reading", "", ""};
  std::string why =
      s.error.empty() ? std::string("no answer in time, while ") + kWhile[static_cast<int>(s.step)]
                      : s.error;
  while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
  spdlog::warn(
      "deadlock detection: shard {} did not answer ({}, {} rounds in a row); cycles among the "
      "shards that answered are still broken; asking it again in {} s",
      name(shard), why, s.misses,
      std::chrono::duration_cast<std::chrono::seconds>(kRetryAfter).count());
}

short LockWaitReader::events(const Shard& s) const {
  switch (s.step) {
    case Step::kConnecting:
      return s.polling == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    case Step::kFlushing:
      return POLLIN | POLLOUT;
    default:
      return POLLIN;
  }
}

const std::string& LockWaitReader::name(int shard) const {
  return cfg_.shards[static_cast<std::size_t>(shard)].name;
}

}  // namespace pgshard::txn
