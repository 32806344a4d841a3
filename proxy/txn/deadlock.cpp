// Distributed deadlock detection (see deadlock.hpp).
#include "proxy/txn/deadlock.hpp"

#include <libpq-fe.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <set>

#include "proxy/txn/recovery.hpp"

namespace pgshard::txn {

namespace {

using Clock = std::chrono::steady_clock;

// The wait-for graph: a node per pgshard transaction and per backend pgshard does not know;
// an edge per lock wait, labelled with its shard.
struct Graph {
  struct Edge {
    int to;
    int shard;
  };
  std::vector<std::vector<Edge>> out;
  std::vector<int> txn;  // node -> index in the transactions, or -1
  std::vector<bool> removed;

  Graph(const std::vector<WaitingTxn>& txns, const std::vector<LockWait>& waits) {
    std::map<std::pair<int, int32_t>, int> node_of;
    for (std::size_t t = 0; t < txns.size(); ++t) {
      const int n = add(static_cast<int>(t));
      for (const auto& server : txns[t].servers) node_of[server] = n;
    }
    auto node = [&](int shard, int32_t pid) {
      auto [it, fresh] = node_of.try_emplace({shard, pid}, 0);
      if (fresh) it->second = add(-1);
      return it->second;
    };
    for (const auto& w : waits) {
      const int from = node(w.shard, w.waiter), to = node(w.shard, w.holder);
      if (from != to) out[static_cast<std::size_t>(from)].push_back({to, w.shard});
    }
  }
  int add(int t) {
    out.emplace_back();
    txn.push_back(t);
    removed.push_back(false);
    return static_cast<int>(out.size()) - 1;
  }

  // A cycle whose edges lie on two shards or more, as (node, shard of its wait) steps.
  std::vector<std::pair<int, int>> mixed_cycle() const {
    for (std::size_t u = 0; u < out.size(); ++u) {
      if (removed[u]) continue;
      for (const auto& e : out[u]) {
        if (removed[static_cast<std::size_t>(e.to)]) continue;
        if (auto path = path_back(e.to, static_cast<int>(u), e.shard)) {
          path->insert(path->begin(), {static_cast<int>(u), e.shard});
          return *path;
        }
      }
    }
    return {};
  }

  // A path from `from` to `to` with at least one wait on a shard other than `shard`.
  std::optional<std::vector<std::pair<int, int>>> path_back(int from, int to, int shard) const {
    // Breadth-first over (node, left shard yet); parents rebuild the path.
    using State = std::pair<int, bool>;
    std::map<State, std::pair<State, int>> parent;
    std::deque<State> queue{{from, false}};
    parent[{from, false}] = {{-1, false}, -1};
    while (!queue.empty()) {
      const State s = queue.front();
      queue.pop_front();
      if (s.first == to && s.second) {
        std::vector<std::pair<int, int>> steps;
        for (State at = s; parent[at].first.first != -1; at = parent[at].first)
          steps.insert(steps.begin(), {parent[at].first.first, parent[at].second});
        return steps;
      }
      if (s.first == to) continue;
      for (const auto& e : out[static_cast<std::size_t>(s.first)]) {
        if (removed[static_cast<std::size_t>(e.to)]) continue;
        const State next{e.to, s.second || e.shard != shard};
        if (parent.try_emplace(next, std::make_pair(s, e.shard)).second) queue.push_back(next);
      }
    }
    return std::nullopt;
  }
};

std::set<int> shards_of(const WaitingTxn& t) {
  std::set<int> shards;
  for (const auto& s : t.servers) shards.insert(s.first);
  return shards;
}

}  // namespace

std::vector<Victim> find_victims(const std::vector<WaitingTxn>& txns,
                                 const std::vector<LockWait>& waits,
                                 const std::vector<std::string>& shard_names) {
  std::vector<Victim> victims;
  Graph g(txns, waits);
  auto name = [&](int shard) {
    return shard >= 0 && static_cast<std::size_t>(shard) < shard_names.size()
               ? shard_names[static_cast<std::size_t>(shard)]
               : std::to_string(shard);
  };
  for (;;) {
    const auto cycle = g.mixed_cycle();
    if (cycle.empty()) break;
    // The youngest transaction of the cycle that spans shards and is running a request.
    int victim = -1;
    for (const auto& [node, shard] : cycle) {
      const int t = g.txn[static_cast<std::size_t>(node)];
      if (t < 0 || !txns[static_cast<std::size_t>(t)].busy ||
          shards_of(txns[static_cast<std::size_t>(t)]).size() < 2)
        continue;
      if (victim < 0 ||
          txns[static_cast<std::size_t>(t)].began >
              txns[static_cast<std::size_t>(g.txn[static_cast<std::size_t>(victim)])].began)
        victim = node;
    }
    if (victim < 0) {
      // No transaction of pgshard's can break it: leave the cycle's first wait out.
      auto& edges = g.out[static_cast<std::size_t>(cycle.front().first)];
      const int to = cycle.size() > 1 ? cycle[1].first : cycle.front().first;
      std::erase_if(edges, [&](const Graph::Edge& e) { return e.to == to; });
      continue;
    }
    std::set<int> shards;
    for (const auto& step : cycle) shards.insert(step.second);
    std::string list;
    for (int s : shards) {
      if (!list.empty()) list += ", ";
      list += name(s);
    }
    std::string waits_on;
    for (const auto& [node, shard] : cycle)
      if (node == victim) waits_on = name(shard);
    Victim v{txns[static_cast<std::size_t>(g.txn[static_cast<std::size_t>(victim)])],
             "Lock waits of " + std::to_string(cycle.size()) +
                 " transactions form a cycle across shards " + list +
                 "; this transaction waited on shard " + waits_on +
                 " and was the youngest, so it was cancelled."};
    victims.push_back(std::move(v));
    g.removed[static_cast<std::size_t>(victim)] = true;
  }
  return victims;
}

DeadlockDetector::DeadlockDetector(const config::Config& cfg,
                                   std::function<std::vector<WaitingTxn>()> collect,
                                   std::function<void(const Victim&)> cancel)
    : cfg_(cfg), collect_(std::move(collect)), cancel_(std::move(cancel)) {}

DeadlockDetector::~DeadlockDetector() {
  stop();
  for (auto& [shard, c] : conns_) PQfinish(static_cast<PGconn*>(c));
}

void DeadlockDetector::start() {
  if (cfg_.timeouts.deadlock.count() <= 0 || cfg_.shards.size() < 2) return;
  thread_ = std::thread([this] { run(); });
}

void DeadlockDetector::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void DeadlockDetector::run() {
  // A quarter of the timeout between looks: a cycle is broken at most ~1.5 timeouts after
  // it forms.
  const auto tick = std::max<std::chrono::milliseconds>(std::chrono::milliseconds(20),
                                                        cfg_.timeouts.deadlock / 4);
  std::unique_lock lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, tick, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    check();
    lock.lock();
  }
}

void DeadlockDetector::check() {
  const auto now = Clock::now();
  std::vector<WaitingTxn> txns = collect_();
  // Forget what no longer waits; note when each busy request was first seen.
  std::map<std::pair<int, uint64_t>, Seen> seen;
  bool overdue = false;
  std::set<int> shards;
  for (const auto& t : txns) {
    if (!t.busy) continue;
    const auto key = std::make_pair(t.worker, t.session);
    Seen s{t.serial, t.request, now};
    if (auto it = seen_.find(key);
        it != seen_.end() && it->second.serial == t.serial && it->second.request == t.request)
      s.since = it->second.since;
    overdue = overdue || now - s.since >= cfg_.timeouts.deadlock;
    seen.emplace(key, s);
    for (const auto& server : t.servers) shards.insert(server.first);
  }
  seen_ = std::move(seen);
  if (!overdue) return;
  std::vector<LockWait> waits;
  for (int shard : shards)
    if (!read_waits(shard, waits)) return;  // an incomplete graph could name a wrong victim
  std::vector<std::string> names;
  for (const auto& s : cfg_.shards) names.push_back(s.name);
  for (const auto& v : find_victims(txns, waits, names)) {
    ++victims_;
    spdlog::warn("deadlock across shards: cancelling the transaction of session C-{}: {}",
                 v.txn.session, v.detail);
    cancel_(v);
  }
}

bool DeadlockDetector::read_waits(int shard, std::vector<LockWait>& out) {
  auto& slot = conns_[shard];
  auto* c = static_cast<PGconn*>(slot);
  if (c && PQstatus(c) != CONNECTION_OK) {
    PQfinish(c);
    c = nullptr;
  }
  if (!c) {
    c = PQconnectdb(
        maintenance_conninfo(cfg_, cfg_.shards[static_cast<std::size_t>(shard)], "pgshard-deadlock")
            .c_str());
    slot = c;
    if (PQstatus(c) != CONNECTION_OK) {
      spdlog::warn("deadlock detection: cannot reach shard {}: {}",
                   cfg_.shards[static_cast<std::size_t>(shard)].name, PQerrorMessage(c));
      return false;
    }
  }
  // pg_locks and pg_blocking_pids are readable by every role.
  PGresult* r = PQexec(c,
                       "SELECT w.pid, b.pid FROM (SELECT DISTINCT pid FROM pg_catalog.pg_locks "
                       "WHERE NOT granted) w, unnest(pg_catalog.pg_blocking_pids(w.pid)) b(pid)");
  const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
  if (ok)
    for (int i = 0; i < PQntuples(r); ++i)
      out.push_back({shard, std::stoi(PQgetvalue(r, i, 0)), std::stoi(PQgetvalue(r, i, 1))});
  else
    spdlog::warn("deadlock detection: shard {}: {}",
                 cfg_.shards[static_cast<std::size_t>(shard)].name, PQresultErrorMessage(r));
  PQclear(r);
  return ok;
}

}  // namespace pgshard::txn
