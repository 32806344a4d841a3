// The moving rows of a reshard as SQL row filters: hash remainders, ring arcs, key ranges and
// lists of keys, each an expression PostgreSQL 15 accepts in a publication's WHERE clause.
#include "proxy/admin/reshard_filter.hpp"

#include <cinttypes>
#include <cstdio>

namespace pgshard::admin {

namespace {

// partition.h: HASH_PARTITION_SEED (0x7A5B22367996DCFD), as the bigint the SQL functions take.
constexpr const char* kSeed = "8816678312871386365";
// 2^64 + 0x49a0f4dd15e5a8e3: hash_combine64(0, h) is h + 0x49a0f4dd15e5a8e3 modulo 2^64, and
// adding 2^64 first keeps the sum positive for every signed bigint h.
constexpr const char* kCombineOffset = "23752253665144318179";
constexpr const char* kTwoTo64 = "18446744073709551616";
constexpr int kVerifyGroups = 1024;

// The key type's extended hash function (its default hash operator class's support 2).
const char* hash_function(config::KeyType type) {
  switch (type) {
    case config::KeyType::kInt2:
      return "hashint2extended";
    case config::KeyType::kInt4:
      return "hashint4extended";
    case config::KeyType::kInt8:
      return "hashint8extended";
    case config::KeyType::kText:
    case config::KeyType::kVarchar:
      return "hashtextextended";
    case config::KeyType::kUuid:
      return "uuid_hash_extended";
  }
  return "hashint8extended";
}

std::string unsigned_text(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%" PRIu64, v);
  return buf;
}

// An array literal of `items` ('{"a","b"}') cast to `type`[].
std::string array_sql(const std::vector<std::string>& items, const std::string& type) {
  std::string a = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    a += i ? ",\"" : "\"";
    for (char ch : items[i]) {
      if (ch == '"' || ch == '\\') a += '\\';
      a += ch;
    }
    a += '"';
  }
  return sql_literal(a + "}") + "::" + type + "[]";
}

std::string any_of(const std::string& col, const std::vector<std::string>& keys,
                   config::KeyType type) {
  return col + " = any (" + array_sql(keys, config::to_string(type)) + ")";
}

std::string hash_filter(const TablePlan& p, const Move& m, const std::string& col) {
  std::vector<std::string> r;
  for (int v : m.remainders) r.push_back(std::to_string(v));
  return hash_remainder_sql(p.from->type, col, p.modulus) + " = any (" + array_sql(r, "int4") + ")";
}

// Ring arcs (lo, hi] of the unsigned row hash; an arc with lo >= hi wraps past 2^64.
std::string ring_filter(const TablePlan& p, const Move& m, const std::string& col) {
  const std::string h = row_hash_sql(p.from->type, col);
  std::string out;
  for (const auto& [lo, hi] : m.arcs) {
    const std::string join = lo < hi ? " and " : " or ";
    out += (out.empty() ? "(" : " or (") + h + " > " + unsigned_text(lo) + join + h +
           " <= " + unsigned_text(hi) + ")";
  }
  return out.empty() ? "false" : out;
}

std::string range_filter(const Move& m, const std::string& col) {
  std::string out;
  for (const auto& [lo, hi] : m.ranges) {
    std::string one;
    if (lo) one += col + " >= " + std::to_string(*lo);
    if (hi) one += (one.empty() ? "" : " and ") + col + " < " + std::to_string(*hi);
    out += (out.empty() ? "(" : " or (") + (one.empty() ? col + " is not null" : one) + ")";
  }
  return out.empty() ? "false" : out;
}

std::string list_filter(const TablePlan& p, const Move& m, const std::string& col) {
  const auto type = p.from->type;
  if (!m.unlisted) return m.keys.empty() ? "false" : any_of(col, m.keys, type);
  // Every key neither map lists (the default changed), and keys the old default held that
  // the new map lists for the same new shard.
  std::string out = "(" + col + " is not null and not coalesce(" +
                    (m.listed.empty() ? "false" : any_of(col, m.listed, type)) + ", false))";
  if (!m.keys.empty()) out = "(" + out + " or " + any_of(col, m.keys, type) + ")";
  return out;
}

}  // namespace

std::string sql_literal(std::string_view text) {
  std::string out = "'";
  for (char ch : text) {
    if (ch == '\'') out += '\'';
    out += ch;
  }
  return out + "'";
}

std::string sql_ident(std::string_view name) {
  std::string out = "\"";
  for (char ch : name) {
    if (ch == '"') out += '"';
    out += ch;
  }
  return out + "\"";
}

std::string table_sql(const config::ShardedTable& t) {
  return t.schema.empty() ? sql_ident(t.table) : sql_ident(t.schema) + "." + sql_ident(t.table);
}

std::string row_hash_sql(config::KeyType type, const std::string& column) {
  return "mod(" + std::string(hash_function(type)) + "(" + column + ", " + kSeed + ")::numeric + " +
         kCombineOffset + ", " + kTwoTo64 + ")";
}

std::string hash_remainder_sql(config::KeyType type, const std::string& column, int modulus) {
  return "mod(" + row_hash_sql(type, column) + ", " + std::to_string(modulus) + ")::int4";
}

std::string move_filter_sql(const TablePlan& p, const Move& m) {
  const std::string col = sql_ident(p.from->column);
  if (p.modulus > 0) return hash_filter(p, m, col);
  if (!m.arcs.empty()) return ring_filter(p, m, col);
  if (!m.ranges.empty()) return range_filter(m, col);
  return list_filter(p, m, col);
}

std::string verify_group_sql(const TablePlan& p) {
  const int n = p.modulus > 0 ? p.modulus : kVerifyGroups;
  return hash_remainder_sql(p.from->type, sql_ident(p.from->column), n);
}

}  // namespace pgshard::admin
