// Snowflake-style ids: see unique_id.hpp.
#include "proxy/executor/unique_id.hpp"

#include <chrono>
#include <mutex>

namespace pgshard::executor {

namespace {

constexpr int64_t kEpochMillis = 1735689600000;  // 2025-01-01T00:00:00Z

struct Layout {
  int node_bits;
  int sequence_bits;
};
constexpr Layout kWide{10, 12};
constexpr Layout kJsSafe{6, 6};

struct Generator {
  std::mutex mu;
  int64_t last_millis = 0;
  int64_t sequence = 0;
};

Generator& generator(bool js_safe) {
  static Generator wide, safe;
  return js_safe ? safe : wide;
}

}  // namespace

std::optional<int64_t> unique_id(int node_id, bool js_safe) {
  const Layout l = js_safe ? kJsSafe : kWide;
  if (node_id < 0 || node_id >= (1 << l.node_bits)) return std::nullopt;
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() -
                      kEpochMillis;
  auto& g = generator(js_safe);
  std::lock_guard lock(g.mu);
  if (now > g.last_millis) {
    g.last_millis = now;
    g.sequence = 0;
  } else if (++g.sequence == (int64_t{1} << l.sequence_bits)) {
    ++g.last_millis;  // this millisecond is used up: borrow the next
    g.sequence = 0;
  }
  return (g.last_millis << (l.node_bits + l.sequence_bits)) |
         (int64_t{node_id} << l.sequence_bits) | g.sequence;
}

UniqueIdParts unique_id_parts(int64_t id, bool js_safe) {
  const Layout l = js_safe ? kJsSafe : kWide;
  return {id >> (l.node_bits + l.sequence_bits),
          static_cast<int>((id >> l.sequence_bits) & ((1 << l.node_bits) - 1)),
          static_cast<int>(id & ((1 << l.sequence_bits) - 1))};
}

}  // namespace pgshard::executor
