// The process-wide side of a (shard, user) pool: its limit across every worker, the
// workers' clients waiting for a server, and hand-overs of servers between workers.
#include "proxy/pool/shared_pool.hpp"

#include <algorithm>

#include "proxy/pool/pool.hpp"

namespace pgshard::pool {

// A server (or, when null, a slot) on its way to a worker. Dropped undelivered (its worker's
// pool went, or the worker stopped), the server closes and its slot is passed on.
class Parcel {
 public:
  Parcel(SharedPool* shared, std::unique_ptr<ServerConn> conn)
      : shared_(shared), conn_(std::move(conn)) {}
  Parcel(Parcel&& o) noexcept
      : shared_(std::exchange(o.shared_, nullptr)), conn_(std::move(o.conn_)) {}
  Parcel& operator=(Parcel&&) = delete;
  ~Parcel() {
    if (!shared_) return;
    conn_.reset();  // (its descriptor closes)
    shared_->release_and_pass();
  }
  std::unique_ptr<ServerConn> open() {
    shared_ = nullptr;
    return std::move(conn_);
  }

 private:
  SharedPool* shared_;
  std::unique_ptr<ServerConn> conn_;
};

SharedPool::SharedPool(int limit, int workers)
    : limit_(limit), members_(static_cast<std::size_t>(std::max(1, workers))) {}

void SharedPool::attach(int worker, Pool* pool, asio::any_io_executor ex) {
  std::lock_guard lock(mu_);
  auto& m = members_[static_cast<std::size_t>(worker)];
  m.pool = pool;
  m.ex = std::move(ex);
  m.idle.store(0, std::memory_order_relaxed);
}

void SharedPool::detach(int worker, const Pool* pool) {
  std::lock_guard lock(mu_);
  auto& m = members_[static_cast<std::size_t>(worker)];
  if (m.pool != pool) return;
  m.pool = nullptr;
  m.ex = {};  // (its worker may stop: nothing is posted to it any more)
  m.idle.store(0, std::memory_order_relaxed);
  std::erase_if(queue_, [&](const Place& p) { return p.worker == worker; });
  waiting_.store(static_cast<int>(queue_.size()));
}

const std::map<std::string, std::string>& SharedPool::server_params() const {
  static const std::map<std::string, std::string> kNone;
  return params_known_.load(std::memory_order_acquire) ? params_ : kNone;
}

void SharedPool::learn_server_params(const std::map<std::string, std::string>& params) {
  std::lock_guard lock(mu_);
  if (params_known_.load(std::memory_order_relaxed)) return;
  params_ = params;
  params_known_.store(true, std::memory_order_release);
}

Pool* SharedPool::pool_of(int worker) {
  std::lock_guard lock(mu_);
  return members_[static_cast<std::size_t>(worker)].pool;
}

bool SharedPool::reserve_or_queue(int worker, int* donor) {
  *donor = -1;
  std::lock_guard lock(mu_);
  if (total_.load(std::memory_order_relaxed) < limit_.load(std::memory_order_relaxed)) {
    total_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  queue_.push_back({worker, std::chrono::steady_clock::now()});
  // Before reading the idle counts (see set_idle): a worker that makes a server idle after
  // this either is seen here or sees this waiter.
  waiting_.store(static_cast<int>(queue_.size()), std::memory_order_seq_cst);
  const std::size_t n = members_.size();
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t at = (next_donor_ + i) % n;
    // (A detached worker's count is 0.)
    if (static_cast<int>(at) == worker || members_[at].idle.load(std::memory_order_seq_cst) == 0)
      continue;
    *donor = static_cast<int>(at);
    next_donor_ = at + 1;
    break;
  }
  return false;
}

void SharedPool::unqueue(int worker) {
  std::lock_guard lock(mu_);
  // Its newest place: the worker's other waiters keep their older ones.
  auto it = std::find_if(queue_.rbegin(), queue_.rend(),
                         [&](const Place& p) { return p.worker == worker; });
  if (it == queue_.rend()) return;  // taken: a hand-over is on its way (it finds no waiter)
  queue_.erase(std::next(it).base());
  waiting_.store(static_cast<int>(queue_.size()));
}

int SharedPool::next_waiter(int own) {
  std::lock_guard lock(mu_);
  if (queue_.empty()) return -1;
  auto it = queue_.begin();
  if (own >= 0 && it->worker != own && std::chrono::steady_clock::now() - it->since < kFairAfter) {
    // (The oldest place of `own`: its pool serves its own longest waiter.)
    auto mine = std::find_if(it, queue_.end(), [&](const Place& p) { return p.worker == own; });
    if (mine != queue_.end()) it = mine;
  }
  const int worker = it->worker;
  queue_.erase(it);
  waiting_.store(static_cast<int>(queue_.size()));
  return worker;
}

int SharedPool::release() {
  std::lock_guard lock(mu_);
  if (queue_.empty() || total_.load(std::memory_order_relaxed) > limit_) {
    total_.fetch_sub(1, std::memory_order_relaxed);
    return -1;
  }
  const int worker = queue_.front().worker;
  queue_.pop_front();
  waiting_.store(static_cast<int>(queue_.size()));
  return worker;
}

std::vector<int> SharedPool::set_limit(int limit) {
  std::vector<int> granted;
  std::lock_guard lock(mu_);
  limit_.store(limit, std::memory_order_relaxed);
  while (!queue_.empty() && total_.load(std::memory_order_relaxed) < limit) {
    total_.fetch_add(1, std::memory_order_relaxed);
    granted.push_back(queue_.front().worker);
    queue_.pop_front();
  }
  waiting_.store(static_cast<int>(queue_.size()));
  return granted;
}

void SharedPool::release_and_pass() {
  if (const int to = release(); to >= 0) send(to, nullptr);
}

void SharedPool::send(int worker, std::unique_ptr<ServerConn> conn) {
  asio::any_io_executor ex;
  {
    std::lock_guard lock(mu_);
    ex = members_[static_cast<std::size_t>(worker)].ex;
  }
  Parcel parcel(this, std::move(conn));
  if (!ex) return;  // (never attached: the parcel passes the slot on)
  asio::post(ex, [this, worker, parcel = std::move(parcel)]() mutable {
    // On the worker's thread, the only one that destroys its pool.
    if (Pool* pool = pool_of(worker)) pool->receive(parcel.open());
  });
}

void SharedPool::ask_to_lend(int worker) {
  asio::any_io_executor ex;
  {
    std::lock_guard lock(mu_);
    ex = members_[static_cast<std::size_t>(worker)].ex;
  }
  if (!ex) return;
  asio::post(ex, [this, worker] {
    if (Pool* pool = pool_of(worker)) pool->lend_away();
  });
}

SharedPool& SharedPools::get(const std::pair<int, std::string>& key, int limit, int workers) {
  std::lock_guard lock(mu_);
  auto& p = pools_[key];
  if (!p) {
    p = std::make_unique<SharedPool>(limit, workers);
  } else if (p->limit() != limit) {
    for (int to : p->set_limit(limit)) p->send(to, nullptr);
  }
  return *p;
}

}  // namespace pgshard::pool
