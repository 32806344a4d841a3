// What one worker's pool for (shard, user) has measured: requests, transactions, their
// latency, errors, waits for a connection and bytes. Plain integers touched only by the
// worker's thread; the admin console and /metrics add the workers' copies up.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>

#include "proxy/asio.hpp"

namespace pgshard::pool {

// A latency histogram with fixed buckets (Prometheus-style cumulative on output).
struct Histogram {
  // Upper bounds in microseconds; one more bucket past the last is +Inf.
  static constexpr std::array<uint64_t, 17> kBounds{
      50,    100,    250,    500,    1000,    2500,    5000,    10000,   25000,
      50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000};
  std::array<uint64_t, kBounds.size() + 1> buckets{};
  uint64_t count = 0;
  uint64_t sum_us = 0;

  void add(uint64_t us) {
    std::size_t i = 0;
    while (i < kBounds.size() && us > kBounds[i]) ++i;
    ++buckets[i];
    ++count;
    sum_us += us;
  }
  void add(const Histogram& o) {
    for (std::size_t i = 0; i < buckets.size(); ++i) buckets[i] += o.buckets[i];
    count += o.count;
    sum_us += o.sum_us;
  }
  // The q-quantile (0..1) in microseconds, interpolated inside its bucket; 0 when empty.
  double quantile(double q) const {
    if (count == 0) return 0;
    const double rank = q * static_cast<double>(count);
    uint64_t seen = 0;
    for (std::size_t i = 0; i < buckets.size(); ++i) {
      if (buckets[i] == 0 || static_cast<double>(seen + buckets[i]) < rank) {
        seen += buckets[i];
        continue;
      }
      const double lo = i == 0 ? 0 : static_cast<double>(kBounds[i - 1]);
      if (i == kBounds.size()) return lo;  // past the last bound: the bound is all we know
      const double hi = static_cast<double>(kBounds[i]);
      return lo + (hi - lo) * (rank - static_cast<double>(seen)) / static_cast<double>(buckets[i]);
    }
    return static_cast<double>(kBounds.back());
  }
};

struct Counters {
  uint64_t queries = 0;  // client requests answered (ReadyForQuery)
  uint64_t xacts = 0;    // transactions ended (the server went idle)
  Histogram query_time;
  Histogram xact_time;
  uint64_t bytes_sent = 0;      // to the server
  uint64_t bytes_received = 0;  // from the server
  uint64_t waits = 0;           // acquisitions that queued for a connection
  uint64_t wait_us = 0;
  uint64_t max_wait_us = 0;
  uint64_t connects = 0;
  uint64_t connect_failures = 0;
  std::map<std::string, uint64_t> errors;  // ErrorResponses to clients, by SQLSTATE class

  void add(const Counters& o) {
    queries += o.queries;
    xacts += o.xacts;
    query_time.add(o.query_time);
    xact_time.add(o.xact_time);
    bytes_sent += o.bytes_sent;
    bytes_received += o.bytes_received;
    waits += o.waits;
    wait_us += o.wait_us;
    max_wait_us = std::max(max_wait_us, o.max_wait_us);
    connects += o.connects;
    connect_failures += o.connect_failures;
    for (const auto& [k, v] : o.errors) errors[k] += v;
  }
  uint64_t error_count() const {
    uint64_t n = 0;
    for (const auto& [k, v] : errors) n += v;
    return n;
  }
};

inline uint64_t micros_since(Clock::time_point t) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t).count());
}

}  // namespace pgshard::pool
