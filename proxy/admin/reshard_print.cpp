// `pgshard reshard plan`'s text: one block per sharded table, one line per (from, to) move.
#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "proxy/admin/reshard_plan.hpp"

namespace pgshard::admin {

namespace {

constexpr std::size_t kShown = 8;  // ring arcs, ranges and keys listed without --verbose

std::string percent(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", share * 100);
  return buf;
}

std::string hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

std::string range_text(const std::optional<int64_t>& lo, const std::optional<int64_t>& hi) {
  return (lo ? "[" + std::to_string(*lo) : std::string("(-inf")) + ", " +
         (hi ? std::to_string(*hi) : std::string("+inf")) + ")";
}

// The first few items (all with `verbose`), then how many more.
std::string listed(const std::vector<std::string>& items, bool verbose) {
  std::string out;
  const std::size_t n = verbose ? items.size() : std::min(items.size(), kShown);
  for (std::size_t i = 0; i < n; ++i) out += (i ? ", " : "") + items[i];
  if (n < items.size())
    out += " and " + std::to_string(items.size() - n) + " more (--verbose lists them)";
  return out;
}

std::string units(const TablePlan& p, int n) {
  const bool buckets = p.to && p.to->buckets > 0 && p.modulus == p.new_units;
  return std::to_string(n) + (buckets ? " bucket" : " hash remainder") + (n == 1 ? "" : "s");
}

std::string map_units(const config::ShardedTable& t, int units) {
  return t.buckets > 0 ? std::to_string(units) + " buckets"
                       : std::to_string(units) + " shards (no buckets)";
}

void print_hash(const TablePlan& p, std::ostream& out) {
  int moving = 0;
  for (const auto& m : p.moves) moving += static_cast<int>(m.remainders.size());
  out << "  " << map_units(*p.from, p.old_units) << " -> " << map_units(*p.to, p.new_units) << ": "
      << moving << " of " << units(p, p.modulus) << " move ("
      << percent(p.modulus ? static_cast<double>(moving) / p.modulus : 0) << " of the hash space)";
  if (!(p.to->buckets > 0 && p.modulus == p.new_units))
    out << "; remainders of the partition hash modulo " << p.modulus;
  out << "\n";
  for (const auto& m : p.moves)
    out << "    " << m.from << " -> " << m.to << ": "
        << units(p, static_cast<int>(m.remainders.size())) << " " << number_ranges(m.remainders)
        << "\n";
}

void print_move(const TablePlan& p, const Move& m, std::ostream& out, bool verbose) {
  std::vector<std::string> items;
  out << "    " << m.from << " -> " << m.to << ": ";
  switch (p.from->function) {
    case config::ShardFunction::kRing:
      for (const auto& [lo, hi] : m.arcs) items.push_back("(" + hex(lo) + ", " + hex(hi) + "]");
      out << m.arcs.size() << " ring range" << (m.arcs.size() == 1 ? "" : "s") << ", "
          << percent(m.share) << " of the hash space: " << listed(items, verbose) << "\n";
      return;
    case config::ShardFunction::kRange:
      for (const auto& [lo, hi] : m.ranges) items.push_back(range_text(lo, hi));
      out << "keys in " << listed(items, verbose) << "\n";
      return;
    default:
      for (const auto& k : m.keys) items.push_back("'" + k + "'");
      if (m.unlisted) items.push_back("(every key neither map lists: the default changed)");
      out << "keys " << listed(items, verbose) << "\n";
      return;
  }
}

}  // namespace

void print_plan(const std::vector<TablePlan>& plan, std::ostream& out, bool verbose) {
  int moving = 0, refused = 0;
  for (const auto& p : plan) {
    const auto* t = p.from ? p.from : p.to;
    out << "table " << p.name << " (" << config::to_string(t->type) << " "
        << config::to_string(t->function) << "): ";
    if (!p.refusal.empty()) {
      ++refused;
      out << "REFUSED: " << p.refusal << "\n";
      continue;
    }
    if (p.moves.empty()) {
      out << "nothing moves\n";
      continue;
    }
    ++moving;
    out << "rows move\n";
    if (!p.note.empty()) out << "  note: " << p.note << "\n";
    if (p.modulus > 0) {
      print_hash(p, out);
      continue;
    }
    for (const auto& m : p.moves) print_move(p, m, out, verbose);
  }
  out << plan.size() << " sharded table" << (plan.size() == 1 ? "" : "s") << ": " << moving
      << " with rows to move, " << refused << " refused\n";
}

}  // namespace pgshard::admin
