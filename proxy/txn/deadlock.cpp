// Distributed deadlock detection (see deadlock.hpp).
#include "proxy/txn/deadlock.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <optional>
#include <set>

namespace pgshard::txn {

namespace {

using Clock = std::chrono::steady_clock;

// The wait-for graph: a node per pgshard transaction and per backend pgshard does not know;
// an edge per lock wait, labelled with its shard, and per holder of a pool waited for.
struct Graph {
  struct Edge {
    int to;
    int shard;
    bool pool;  // a pool wait (an OR-wait), not a lock wait
  };
  struct Step {  // a node of a cycle and its wait for the next one
    int node;
    Edge wait;
  };
  std::vector<std::vector<Edge>> out;
  std::vector<int> txn;          // node -> index in the transactions, or -1
  std::vector<bool> removed;     // victims (they let go of everything they hold)
  std::vector<bool> waits_pool;  // a pool wait no spare server may end
  std::vector<bool> stuck;       // can never proceed (see settle)

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
      if (from != to) out[static_cast<std::size_t>(from)].push_back({to, w.shard, false});
    }
    for (std::size_t t = 0; t < txns.size(); ++t) {
      const auto& pw = txns[t].pool_wait;
      if (!pw) continue;
      bool held = false;  // by someone else (a node per transaction comes first)
      for (int32_t pid : pw->holders)
        if (const int to = node(pw->shard, pid); to != static_cast<int>(t)) {
          out[t].push_back({to, pw->shard, true});  // (node() may grow `out`)
          held = true;
        }
      waits_pool[t] = !pw->spare && held;
    }
    settle();
  }
  int add(int t) {
    out.emplace_back();
    txn.push_back(t);
    removed.push_back(false);
    waits_pool.push_back(false);
    stuck.push_back(false);
    return static_cast<int>(out.size()) - 1;
  }

  // Graph reduction: a node proceeds once every holder of the locks it waits for proceeds
  // and, if it waits for a pool, one holder of the pool does; a node that waits for nothing
  // (as far as the shards that answered tell) proceeds. What is left can never proceed.
  void settle() {
    std::vector<bool> proceeds(out.size(), false);
    for (bool changed = true; changed;) {
      changed = false;
      for (std::size_t u = 0; u < out.size(); ++u)
        if (!proceeds[u] && can_proceed(u, proceeds)) proceeds[u] = changed = true;
    }
    for (std::size_t u = 0; u < out.size(); ++u) stuck[u] = !proceeds[u];
  }
  bool can_proceed(std::size_t u, const std::vector<bool>& proceeds) const {
    if (removed[u]) return true;
    bool pool_served = !waits_pool[u];
    for (const auto& e : out[u]) {
      const bool gone = proceeds[static_cast<std::size_t>(e.to)];
      if (!e.pool && !gone) return false;
      pool_served = pool_served || (e.pool && gone);
    }
    return pool_served;
  }
  bool live(int to) const { return stuck[static_cast<std::size_t>(to)]; }

  // A cycle among stuck nodes whose edges lie on two shards or more or include a pool wait.
  std::vector<Step> mixed_cycle() const {
    for (std::size_t u = 0; u < out.size(); ++u) {
      if (!stuck[u]) continue;
      for (const auto& e : out[u]) {
        if (!live(e.to)) continue;
        if (auto path = path_back(e.to, static_cast<int>(u), e.shard, e.pool)) {
          path->insert(path->begin(), {static_cast<int>(u), e});
          return *path;
        }
      }
    }
    return {};
  }

  // A path from `from` to `to` that is pgshard's to break (`ours` already, or by a wait on
  // a shard other than `shard` or a pool wait).
  std::optional<std::vector<Step>> path_back(int from, int to, int shard, bool ours) const {
    // Breadth-first over (node, pgshard's yet); parents rebuild the path.
    using State = std::pair<int, bool>;
    std::map<State, std::pair<State, Edge>> parent;
    std::deque<State> queue{{from, ours}};
    parent[{from, ours}] = {{-1, false}, {}};
    while (!queue.empty()) {
      const State s = queue.front();
      queue.pop_front();
      if (s.first == to && s.second) {
        std::vector<Step> steps;
        for (State at = s; parent[at].first.first != -1; at = parent[at].first)
          steps.insert(steps.begin(), {parent[at].first.first, parent[at].second});
        return steps;
      }
      if (s.first == to) continue;
      for (const auto& e : out[static_cast<std::size_t>(s.first)]) {
        if (!live(e.to)) continue;
        const State next{e.to, s.second || e.shard != shard || e.pool};
        if (parent.try_emplace(next, std::make_pair(s, e)).second) queue.push_back(next);
      }
    }
    return std::nullopt;
  }

  // Leaves a wait out of the graph (a cycle nobody pgshard may cancel is in): a pool wait
  // goes as a whole (its holders are alternatives).
  void drop(const Step& step) {
    auto& edges = out[static_cast<std::size_t>(step.node)];
    if (step.wait.pool) waits_pool[static_cast<std::size_t>(step.node)] = false;
    std::erase_if(edges, [&](const Edge& e) {
      return step.wait.pool ? e.pool : !e.pool && e.to == step.wait.to;
    });
    settle();
  }
};

std::set<int> shards_of(const WaitingTxn& t) {
  std::set<int> shards;
  for (const auto& s : t.servers) shards.insert(s.first);
  if (t.pool_wait) shards.insert(t.pool_wait->shard);
  return shards;
}

// The youngest transaction of the cycle that spans shards and is running a request (-1:
// none), as the step it takes in the cycle.
int youngest(const Graph& g, const std::vector<WaitingTxn>& txns,
             const std::vector<Graph::Step>& cycle) {
  int victim = -1;
  for (std::size_t i = 0; i < cycle.size(); ++i) {
    const int t = g.txn[static_cast<std::size_t>(cycle[i].node)];
    if (t < 0) continue;
    const auto& txn = txns[static_cast<std::size_t>(t)];
    if (!txn.busy || shards_of(txn).size() < 2) continue;
    if (victim < 0 ||
        txn.began >
            txns[static_cast<std::size_t>(
                     g.txn[static_cast<std::size_t>(cycle[static_cast<std::size_t>(victim)].node)])]
                .began)
      victim = static_cast<int>(i);
  }
  return victim;
}

// The victim's DETAIL: the cycle's shards, and where the victim waited.
std::string describe(const std::vector<Graph::Step>& cycle, const Graph::Step& victim,
                     bool statement, const std::vector<std::string>& shard_names) {
  auto name = [&](int shard) {
    return shard >= 0 && static_cast<std::size_t>(shard) < shard_names.size()
               ? shard_names[static_cast<std::size_t>(shard)]
               : std::to_string(shard);
  };
  std::set<int> shards;
  bool pooled = false;
  for (const auto& step : cycle) {
    shards.insert(step.wait.shard);
    pooled = pooled || step.wait.pool;
  }
  std::string list;
  for (int s : shards) list += (list.empty() ? "" : ", ") + name(s);
  return std::string(pooled ? "Lock and pool waits of " : "Lock waits of ") +
         std::to_string(cycle.size()) + " transactions form a cycle across shards " + list +
         (statement ? "; this statement waited on shard " : "; this transaction waited on shard ") +
         name(victim.wait.shard) + (victim.wait.pool ? " for a pooled server" : "") +
         " and was the youngest, so it was cancelled.";
}

}  // namespace

void keep_unchanged(std::vector<WaitingTxn>& txns, const std::vector<WaitingTxn>& later) {
  std::erase_if(txns, [&](const WaitingTxn& t) {
    return std::none_of(later.begin(), later.end(), [&](const WaitingTxn& l) {
      return l.worker == t.worker && l.session == t.session && l.serial == t.serial &&
             l.request == t.request && l.servers == t.servers;
    });
  });
}

void merge_pool_waits(std::vector<WaitingTxn>& txns, const std::vector<PoolWait>& seen) {
  for (auto& t : txns) {
    if (!t.pool_wait) continue;
    auto& wait = *t.pool_wait;
    std::set<int32_t> holders(wait.holders.begin(), wait.holders.end());
    for (const auto& other : seen) {
      if (other.pool != wait.pool || !wait.pool) continue;
      holders.insert(other.holders.begin(), other.holders.end());
      wait.spare = wait.spare || other.spare;
      wait.servers = std::max(wait.servers, other.servers);
    }
    wait.holders.assign(holders.begin(), holders.end());
    wait.spare = wait.spare || wait.servers > static_cast<int>(wait.holders.size());
  }
}

std::vector<Victim> find_victims(const std::vector<WaitingTxn>& txns,
                                 const std::vector<LockWait>& waits,
                                 const std::vector<std::string>& shard_names) {
  std::vector<Victim> victims;
  Graph g(txns, waits);
  for (;;) {
    const auto cycle = g.mixed_cycle();
    if (cycle.empty()) break;
    const int at = youngest(g, txns, cycle);
    if (at < 0) {
      // No transaction of pgshard's can break it: leave the cycle's first wait out.
      g.drop(cycle.front());
      continue;
    }
    const auto& step = cycle[static_cast<std::size_t>(at)];
    const auto& txn = txns[static_cast<std::size_t>(g.txn[static_cast<std::size_t>(step.node)])];
    victims.push_back({txn, describe(cycle, step, txn.statement, shard_names)});
    // Its locks and servers go: whoever waited only for it may proceed now.
    g.removed[static_cast<std::size_t>(step.node)] = true;
    g.settle();
  }
  return victims;
}

DeadlockDetector::DeadlockDetector(const config::Config& cfg,
                                   std::function<std::vector<WaitingTxn>()> collect,
                                   std::function<void(const Victim&)> cancel,
                                   const runtime::HostHealth* hosts)
    : cfg_(cfg), collect_(std::move(collect)), cancel_(std::move(cancel)), reader_(cfg, hosts) {}

DeadlockDetector::~DeadlockDetector() {
  stop();
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
    for (int shard : shards_of(t)) shards.insert(shard);
  }
  seen_ = std::move(seen);
  if (!overdue) return;
  // A shard that did not answer leaves its waits out: the cycles among the others are
  // cycles all the same, and a missing edge can only hide one.
  std::vector<LockWait> waits;
  for (auto& [shard, some] : reader_.read(shards, read_limit()))
    waits.insert(waits.end(), some.begin(), some.end());
  // The waits were read after the transactions were listed: one that moved on meanwhile may
  // have handed its servers to another, whose waits would be taken for its own.
  keep_unchanged(txns, collect_());
  std::vector<std::string> names;
  for (const auto& s : cfg_.shards) names.push_back(s.name);
  for (const auto& v : find_victims(txns, waits, names)) {
    ++victims_;
    spdlog::warn("deadlock across shards: cancelling the transaction of session C-{}: {}",
                 v.txn.session, v.detail);
    cancel_(v);
  }
}

std::chrono::milliseconds DeadlockDetector::read_limit() const {
  // Half the timeout, within [100 ms, 1 s]: a hung shard delays the round that asks it by
  // this much, and lock waits take a healthy shard a few milliseconds to read.
  return std::clamp<std::chrono::milliseconds>(
      cfg_.timeouts.deadlock / 2, std::chrono::milliseconds(100), std::chrono::milliseconds(1000));
}

}  // namespace pgshard::txn
