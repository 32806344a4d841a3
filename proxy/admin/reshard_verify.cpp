// `pgshard reshard verify`: compares each move's rows on source and target, per bucket (a
// count and an md5 of the rows in key order), rechecking the buckets that differ after the
// target has caught up with the source; then names the rows that differ inside a bucket that
// still differs, by primary key.
#include <chrono>
#include <map>
#include <set>
#include <thread>

#include "proxy/admin/reshard_filter.hpp"
#include "proxy/admin/reshard_move.hpp"

namespace pgshard::admin {

namespace {

// Rounds of checksums before a bucket that keeps differing is reported (writes going on
// during a round make a bucket differ for that round only).
constexpr int kRounds = 5;
constexpr std::size_t kRowsShown = 20;

using Sums = std::map<std::string, std::string>;  // group -> "count md5"

// How one table's rows are read on both sides: the source's column order and primary key.
struct Shape {
  std::string table, filter, group, row, key;
};

std::optional<Shape> shape_of(PGconn* src, const MovingTable& t, std::ostream& out) {
  const auto& table = *t.plan->from;
  const auto r = pg_query(
      src,
      "select (select string_agg(quote_ident(attname), ', ' order by attnum) from pg_attribute "
      "where attrelid = c.oid and attnum > 0 and not attisdropped), (select "
      "string_agg(quote_ident(a.attname), ', ' order by array_position(i.indkey, a.attnum)) "
      "from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum = any "
      "(i.indkey) where i.indrelid = c.oid and i.indisprimary) from pg_class c where c.oid = "
      "to_regclass($1)",
      {table_sql(table)});
  if (!r.ok() || r.rows.empty()) {
    out << "  ERROR: cannot read the columns of " << t.plan->name << ": " << r.error << "\n";
    return std::nullopt;
  }
  Shape s{table_sql(table), move_filter_sql(*t.plan, *t.move), verify_group_sql(*t.plan),
          "row(" + r.rows[0][0] + ")::text", r.rows[0][1]};
  // Without a primary key a row is known by all of its columns.
  s.key = s.key.empty() ? s.row
                        : (s.key.find(',') == std::string::npos ? s.key + "::text"
                                                                : "row(" + s.key + ")::text");
  return s;
}

std::string only_groups(const Shape& s, const std::set<std::string>& groups) {
  if (groups.empty()) return "";
  std::string list;
  for (const auto& g : groups) list += (list.empty() ? "" : ",") + g;
  return " and " + s.group + " = any ('{" + list + "}'::int4[])";
}

std::optional<Sums> checksums(PGconn* c, const Shape& s, const std::set<std::string>& groups) {
  const auto r =
      pg_query(c, "select " + s.group + "::text, count(*)::text || ' ' || md5(" + "string_agg(" +
                      s.row + ", ',' order by " + s.key + ")) from " + s.table + " where (" +
                      s.filter + ")" + only_groups(s, groups) + " group by 1");
  if (!r.ok()) return std::nullopt;
  Sums out;
  for (const auto& row : r.rows) out[row[0]] = row[1];
  return out;
}

std::set<std::string> differing(const Sums& a, const Sums& b) {
  std::set<std::string> out;
  for (const auto& [g, v] : a)
    if (auto it = b.find(g); it == b.end() || it->second != v) out.insert(g);
  for (const auto& [g, v] : b)
    if (!a.count(g)) out.insert(g);
  return out;
}

// key -> md5 of the row, for the rows of `groups`.
std::map<std::string, std::string> rows_of(PGconn* c, const Shape& s,
                                           const std::set<std::string>& groups) {
  std::map<std::string, std::string> out;
  const auto r = pg_query(c, "select " + s.key + ", md5(" + s.row + ") from " + s.table +
                                 " where (" + s.filter + ")" + only_groups(s, groups));
  for (const auto& row : r.rows) out[row[0]] = row[1];
  return out;
}

// Names the rows that differ in `groups`; returns how many.
std::size_t name_rows(PGconn* src, PGconn* dst, const Shape& s, const std::set<std::string>& groups,
                      std::ostream& out) {
  const auto a = rows_of(src, s, groups), b = rows_of(dst, s, groups);
  std::size_t n = 0;
  auto say = [&](const char* what, const std::string& key) {
    if (n++ < kRowsShown) out << "    " << what << ": " << key << "\n";
  };
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end())
      say("missing on the target", k);
    else if (it->second != v)
      say("different on the target", k);
  }
  for (const auto& [k, v] : b)
    if (!a.count(k)) say("extra on the target", k);
  if (n > kRowsShown) out << "    and " << n - kRowsShown << " more\n";
  return n;
}

// One table of one move; returns the number of rows that differ (-1: could not compare).
// `timeout_ms` < 0: nothing streams any more (cleanup after dropping the subscriptions), so
// one round, without waiting for the target.
long verify_table(ReshardSession& s, const ReshardMove& m, const MovingTable& t, int timeout_ms) {
  auto& out = s.out();
  PGconn* src = s.source(m.from);
  PGconn* dst = s.target(m.to);
  const auto shape = shape_of(src, t, out);
  if (!shape) return -1;
  std::set<std::string> suspect;
  std::size_t groups = 0;
  const bool streaming = timeout_ms >= 0;
  for (int round = 0; round < (streaming ? kRounds : 1); ++round) {
    const auto a = checksums(src, *shape, suspect);
    if (streaming && !wait_caught_up(s, m, timeout_ms)) {
      out << "  " << t.plan->name << " " << m.from << " -> " << m.to
          << ": the target did not catch up within " << timeout_ms << " ms\n";
      return -1;
    }
    const auto b = checksums(dst, *shape, suspect);
    if (!a || !b) {
      out << "  ERROR: cannot compute checksums of " << t.plan->name << "\n";
      return -1;
    }
    if (round == 0) groups = a->size();
    suspect = differing(*a, *b);
    if (suspect.empty()) {
      out << "  " << t.plan->name << " " << m.from << " -> " << m.to << ": equal (" << groups
          << " buckets hold rows)\n";
      return 0;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  out << "  " << t.plan->name << " " << m.from << " -> " << m.to << ": DIFFERENT in "
      << suspect.size() << " of the buckets\n";
  const auto n = name_rows(src, dst, *shape, suspect, out);
  return static_cast<long>(n == 0 ? 1 : n);  // (a difference that vanished while listing)
}

// Waits until every table of the move's subscription is synchronized.
bool wait_synchronized(ReshardSession& s, const ReshardMove& m, int timeout_ms) {
  PGconn* dst = s.target(m.to);
  if (!dst) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto r = pg_query(dst,
                            "select count(*) > 0 and bool_and(sr.srsubstate = 'r') from "
                            "pg_subscription s join pg_subscription_rel sr on sr.srsubid = "
                            "s.oid where s.subname = $1",
                            {m.name});
    if (r.ok() && !r.rows.empty() && r.rows[0][0] == "t") return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace

long compare_moves(ReshardSession& s, const ReshardState& state, int timeout_ms) {
  auto& out = s.out();
  long differences = 0;
  bool failed = false;
  for (const auto& m : state.moves) {
    if (!s.source(m.from) || !s.target(m.to) ||
        (timeout_ms >= 0 && !wait_synchronized(s, m, timeout_ms))) {
      out << "  " << m.from << " -> " << m.to << ": the initial copy has not finished within "
          << timeout_ms << " ms (pgshard reshard status)\n";
      failed = true;
      continue;
    }
    for (const auto& t : s.tables(m.from, m.to)) {
      const long n = verify_table(s, m, t, timeout_ms);
      failed |= n < 0;
      differences += n > 0 ? n : 0;
    }
  }
  return failed ? -1 : differences;
}

int reshard_verify(const std::string& to_map, int timeout_ms, std::ostream& out,
                   std::ostream& err) {
  return with_reshard(to_map, out, err, [&](ReshardSession& s, ReshardState& state) {
    const long differences = compare_moves(s, state, timeout_ms);
    if (differences < 0) {
      out << "verify: INCOMPLETE\n";
      return 2;
    }
    out << "verify: " << (differences == 0 ? "OK, " : "FAILED, ") << differences
        << " rows differ\n";
    return differences == 0 ? 0 : 1;
  });
}

}  // namespace pgshard::admin
