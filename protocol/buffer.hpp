// A growable byte buffer with a read cursor, for socket reads without zero-filling.
#pragma once

#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>
#include <vector>

namespace pgshard::protocol {

class Buffer {
 public:
  std::string_view view() const { return {data_.get() + begin_, end_ - begin_}; }
  std::size_t size() const { return end_ - begin_; }
  bool empty() const { return begin_ == end_; }
  const char* data() const { return data_.get() + begin_; }

  void consume(std::size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void clear() { begin_ = end_ = 0; }

  // Room for at least `min_free` more bytes after the data; returns where to write.
  char* prepare(std::size_t min_free, std::size_t* room) {
    if (cap_ - end_ < min_free) {
      const std::size_t used = end_ - begin_;
      if (begin_ > 0 && cap_ - used >= min_free && used < cap_ / 2) {
        std::memmove(data_.get(), data_.get() + begin_, used);
      } else {
        std::size_t cap = cap_ ? cap_ : 1024;
        while (cap - used < min_free) cap *= 2;
        auto fresh = std::make_unique_for_overwrite<char[]>(cap);
        if (used) std::memcpy(fresh.get(), data_.get() + begin_, used);
        data_ = std::move(fresh);
        cap_ = cap;
      }
      begin_ = 0;
      end_ = used;
    }
    *room = cap_ - end_;
    return data_.get() + end_;
  }
  void commit(std::size_t n) { end_ += n; }
  void append(std::string_view s) {
    std::size_t room;
    std::memcpy(prepare(s.size(), &room), s.data(), s.size());
    commit(s.size());
  }
  // Bytes of storage held (0: none).
  std::size_t capacity() const { return cap_; }
  // The storage, handed over (see SpareBlocks); the buffer is left empty with none.
  std::unique_ptr<char[]> release_storage() {
    cap_ = begin_ = end_ = 0;
    return std::move(data_);
  }
  // Uses `data` (`cap` bytes) as the buffer's storage; the buffer is empty.
  void adopt_storage(std::unique_ptr<char[]> data, std::size_t cap) {
    data_ = std::move(data);
    cap_ = cap;
    begin_ = end_ = 0;
  }
  // Releases a large allocation once it is no longer needed.
  void shrink(std::size_t keep) {
    if (empty() && cap_ > keep) {
      data_.reset();
      cap_ = begin_ = end_ = 0;
    }
  }

 private:
  std::unique_ptr<char[]> data_;
  std::size_t cap_ = 0;
  std::size_t begin_ = 0;
  std::size_t end_ = 0;
};

// Small read buffers kept for reuse by the clients of one thread: a client between requests
// holds no buffer (most clients are idle), and the next request's takes one back without
// an allocation.
class SpareBlocks {
 public:
  static constexpr std::size_t kBlock = 1024;  // what Buffer::prepare makes first
  // Empties `b` (which holds no data), keeping its storage when it is one block.
  void take_from(Buffer& b) {
    if (b.capacity() == kBlock && kept_.size() < kMax)
      kept_.push_back(b.release_storage());
    else
      b.shrink(0);
  }
  // Gives `b`, holding no storage, a kept block if there is one.
  void give_to(Buffer& b) {
    if (b.capacity() != 0 || kept_.empty()) return;
    b.adopt_storage(std::move(kept_.back()), kBlock);
    kept_.pop_back();
  }

 private:
  static constexpr std::size_t kMax = 64;
  std::vector<std::unique_ptr<char[]>> kept_;
};

}  // namespace pgshard::protocol
