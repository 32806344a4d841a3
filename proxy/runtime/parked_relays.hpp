// The sessions of one worker whose relay waits for their next server (Session::server_loop),
// oldest first. Keeping a relay between transactions saves spawning one per transaction, but
// each waiting relay holds its coroutine frames (about 1 KB): a worker keeps at most
// kMax of them, and makes room by ending the oldest, so idle clients cost no relay each.
#pragma once

#include <boost/intrusive/list.hpp>
#include <cstddef>

namespace pgshard::runtime {

class ParkedRelays {
 public:
  static constexpr std::size_t kMax = 256;

  class Entry : public boost::intrusive::list_base_hook<> {
   public:
    // Taken off the list to make room: end the waiting relay.
    virtual void end_parked_relay() = 0;

   protected:
    ~Entry() = default;
  };

  ParkedRelays() = default;
  ParkedRelays(const ParkedRelays&) = delete;
  ParkedRelays& operator=(const ParkedRelays&) = delete;
  ~ParkedRelays() { list_.clear(); }

  // `e`'s relay is about to wait (and is not listed yet).
  void park(Entry& e) {
    while (list_.size() >= kMax) {
      Entry& oldest = list_.front();
      list_.pop_front();
      oldest.end_parked_relay();
    }
    list_.push_back(e);
  }
  // `e`'s relay is woken (or its session ends): off the list, if on it.
  void unpark(Entry& e) {
    if (e.is_linked()) list_.erase(list_.iterator_to(e));
  }
  std::size_t size() const { return list_.size(); }

 private:
  boost::intrusive::list<Entry> list_;  // (constant-time size)
};

}  // namespace pgshard::runtime
