// A log line a flood must not turn into a flood of lines (refused connections, say).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>

namespace pgshard {

class LogLimit {
 public:
  explicit LogLimit(std::chrono::steady_clock::duration period = std::chrono::seconds(1))
      : period_(period) {}
  // Whether to write the line now (at most once per period): the number of lines held
  // back since the last one written, or nullopt to hold this one back. Thread-safe.
  std::optional<uint64_t> allow() {
    std::lock_guard lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (written_ && now - last_ < period_) {
      ++held_;
      return std::nullopt;
    }
    written_ = true;
    last_ = now;
    const uint64_t held = held_;
    held_ = 0;
    return held;
  }

 private:
  std::mutex mu_;
  std::chrono::steady_clock::duration period_;
  std::chrono::steady_clock::time_point last_{};
  bool written_ = false;
  uint64_t held_ = 0;
};

}  // namespace pgshard
