#include "proxy/pool/backends.hpp"

#include "proxy/pool/server_fate.hpp"

namespace pgshard::pool {

std::vector<std::shared_ptr<Link>> Backends::all() const {
  std::vector<std::shared_ptr<Link>> links;
  if (active) links.push_back(active);
  for (const auto& [s, l] : kept_) links.push_back(l);
  for (const auto& [s, l] : participants_) links.push_back(l);
  return links;
}

bool Backends::in_transaction_besides(int shard) const {
  for (const auto& link : all())
    if (link->lease && link->lease->status != 'I' && link->shard != shard) return true;
  return false;
}

void Backends::keep(std::shared_ptr<Link> link) {
  const int shard = link->shard;
  kept_[shard] = std::move(link);
}

std::shared_ptr<Link> Backends::take_kept(int shard) {
  auto it = kept_.find(shard);
  if (it == kept_.end()) return nullptr;
  auto link = std::move(it->second);
  kept_.erase(it);
  return link;
}

bool Backends::is_participant(const Link& link) const {
  auto it = participants_.find(link.shard);
  return it != participants_.end() && it->second.get() == &link;
}

std::shared_ptr<Link> Backends::participant(int shard) const {
  auto it = participants_.find(shard);
  return it == participants_.end() ? nullptr : it->second;
}

void Backends::add_participant(std::shared_ptr<Link> link) {
  const int shard = link->shard;
  participants_[shard] = std::move(link);
}

bool Backends::move_to(int shard) {
  if (active) add_participant(std::move(active));
  active.reset();
  auto it = participants_.find(shard);
  if (it == participants_.end()) return false;
  active = std::move(it->second);
  participants_.erase(it);
  return true;
}

void Backends::promote() {
  if (active || participants_.empty()) return;
  active = std::move(participants_.begin()->second);
  participants_.erase(participants_.begin());
}

std::vector<std::shared_ptr<Link>> Backends::take_participants() {
  std::vector<std::shared_ptr<Link>> parts;
  for (auto& [shard, link] : participants_) parts.push_back(std::move(link));
  participants_.clear();
  if (active) parts.push_back(std::move(active));
  active.reset();
  return parts;
}

bool Backends::forget(const Link& link) {
  // The link has ended (its relay stopped, often on a lost or broken server): a borrower
  // waiting for it to park must see that, or the statement and its other servers (idle in
  // their transaction) would wait forever.
  borrow_done_.notify_all();
  if (auto it = kept_.find(link.shard); it != kept_.end() && it->second.get() == &link)
    kept_.erase(it);
  if (auto it = participants_.find(link.shard);
      it != participants_.end() && it->second.get() == &link)
    participants_.erase(it);
  if (active.get() != &link) return false;
  active.reset();
  return true;
}

void Backends::release(const std::shared_ptr<Link>& link, bool owes) {
  if (!link) return;
  // A server that still owes the client replies is never handed to anyone else.
  if (link->lease && (owes || !link->lease->replies.empty()))
    report(*link->lease, ServerFailure::kOwesReplies);
  if (link->done) return;
  link->done = true;
  auto keep_alive = link;  // `link` may be `active`, which forget() resets
  forget(*keep_alive);
  wake(*keep_alive);  // (so it returns the connection)
}

awaitable<bool> Backends::borrow(const std::shared_ptr<Link>& link) {
  if (link->done || !link->lease) co_return false;
  link->borrowed = true;
  wake(*link);  // the relay's pending read ends; it parks
  while (!link->parked && !link->done) co_await borrow_done_.wait();
  // Ended meanwhile: the relay waits in given_back() with the server until give_back().
  if (link->done || !link->lease) {
    give_back(link);
    co_return false;
  }
  co_return true;
}

void Backends::give_back(const std::shared_ptr<Link>& link) {
  link->borrowed = false;
  borrow_done_.notify_all();
}

awaitable<void> Backends::park(Link& link) {
  link.parked = true;
  borrow_done_.notify_all();
  while (link.borrowed && !link.done) co_await borrow_done_.wait();
  link.parked = false;
}

awaitable<void> Backends::given_back(Link& link) {
  while (link.borrowed) co_await borrow_done_.wait();
}

}  // namespace pgshard::pool
