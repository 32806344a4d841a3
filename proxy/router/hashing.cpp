// PostgreSQL's hash-partitioning maths (src/common/hashfn.c, utils/adt/hashfunc.c,
// partitioning/partbounds.c), reimplemented for little-endian hosts.
#include "proxy/router/hashing.hpp"

#include <charconv>
#include <cstring>

namespace pgshard::router {

namespace {

inline uint32_t rot(uint32_t x, int k) {
  return (x << k) | (x >> (32 - k));
}

inline void mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  a -= c;
  a ^= rot(c, 4);
  c += b;
  b -= a;
  b ^= rot(a, 6);
  a += c;
  c -= b;
  c ^= rot(b, 8);
  b += a;
  a -= c;
  a ^= rot(c, 16);
  c += b;
  b -= a;
  b ^= rot(a, 19);
  a += c;
  c -= b;
  c ^= rot(b, 4);
  b += a;
}

inline void final_mix(uint32_t& a, uint32_t& b, uint32_t& c) {
  c ^= b;
  c -= rot(b, 14);
  a ^= c;
  a -= rot(c, 11);
  b ^= a;
  b -= rot(a, 25);
  c ^= b;
  c -= rot(b, 16);
  a ^= c;
  a -= rot(c, 4);
  b ^= a;
  b -= rot(a, 14);
  c ^= b;
  c -= rot(b, 24);
}

}  // namespace

uint64_t hash_bytes_extended(const unsigned char* k, std::size_t keylen, uint64_t seed) {
  uint32_t len = static_cast<uint32_t>(keylen);
  uint32_t a, b, c;
  a = b = c = 0x9e3779b9 + len + 3923095;
  if (seed != 0) {
    a += static_cast<uint32_t>(seed >> 32);
    b += static_cast<uint32_t>(seed);
    mix(a, b, c);
  }
  // The byte-wise little-endian path; PostgreSQL's word-wise aligned path is equivalent.
  while (len >= 12) {
    a += k[0] + (uint32_t{k[1]} << 8) + (uint32_t{k[2]} << 16) + (uint32_t{k[3]} << 24);
    b += k[4] + (uint32_t{k[5]} << 8) + (uint32_t{k[6]} << 16) + (uint32_t{k[7]} << 24);
    c += k[8] + (uint32_t{k[9]} << 8) + (uint32_t{k[10]} << 16) + (uint32_t{k[11]} << 24);
    mix(a, b, c);
    k += 12;
    len -= 12;
  }
  switch (len) {
    case 11:
      c += uint32_t{k[10]} << 24;
      [[fallthrough]];
    case 10:
      c += uint32_t{k[9]} << 16;
      [[fallthrough]];
    case 9:
      c += uint32_t{k[8]} << 8;
      [[fallthrough]];
    case 8:
      b += uint32_t{k[7]} << 24;
      [[fallthrough]];
    case 7:
      b += uint32_t{k[6]} << 16;
      [[fallthrough]];
    case 6:
      b += uint32_t{k[5]} << 8;
      [[fallthrough]];
    case 5:
      b += k[4];
      [[fallthrough]];
    case 4:
      a += uint32_t{k[3]} << 24;
      [[fallthrough]];
    case 3:
      a += uint32_t{k[2]} << 16;
      [[fallthrough]];
    case 2:
      a += uint32_t{k[1]} << 8;
      [[fallthrough]];
    case 1:
      a += k[0];
      break;
    default:
      break;
  }
  final_mix(a, b, c);
  return (uint64_t{b} << 32) | c;
}

uint64_t hash_uint32_extended(uint32_t k, uint64_t seed) {
  uint32_t a, b, c;
  a = b = c = 0x9e3779b9 + static_cast<uint32_t>(sizeof(uint32_t)) + 3923095;
  if (seed != 0) {
    a += static_cast<uint32_t>(seed >> 32);
    b += static_cast<uint32_t>(seed);
    mix(a, b, c);
  }
  a += k;
  final_mix(a, b, c);
  return (uint64_t{b} << 32) | c;
}

uint64_t hashint8extended(int64_t val, uint64_t seed) {
  // hashfunc.c: fold the high half into the low half so equal int2/4/8 values hash alike.
  uint32_t lohalf = static_cast<uint32_t>(val);
  uint32_t hihalf = static_cast<uint32_t>(static_cast<uint64_t>(val) >> 32);
  lohalf ^= (val >= 0) ? hihalf : ~hihalf;
  return hash_uint32_extended(lohalf, seed);
}

uint64_t hashint4extended(int32_t v, uint64_t seed) {
  return hash_uint32_extended(static_cast<uint32_t>(v), seed);
}

uint64_t hashtextextended(std::string_view v, uint64_t seed) {
  // Deterministic collations hash the raw bytes.
  return hash_bytes_extended(reinterpret_cast<const unsigned char*>(v.data()), v.size(), seed);
}

uint64_t uuid_hash_extended(const unsigned char (&uuid)[16], uint64_t seed) {
  return hash_bytes_extended(uuid, 16, seed);
}

std::optional<int64_t> parse_int(std::string_view t, int64_t lo, int64_t hi) {
  if (!t.empty() && t.size() <= 18) {
    // Plain digits (nearly every key: a Bind parameter as text): no overflow possible.
    int64_t v = 0;
    bool digits = true;
    for (char c : t) {
      if (c < '0' || c > '9') {
        digits = false;
        break;
      }
      v = v * 10 + (c - '0');
    }
    if (digits) return v < lo || v > hi ? std::nullopt : std::optional<int64_t>(v);
  }
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  int64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || p != t.data() + t.size() || v < lo || v > hi)
    return std::nullopt;
  return v;
}

bool parse_uuid(std::string_view t, unsigned char (&out)[16]) {
  // uuid_in accepts an optional {...} and hyphens after any group of four hex digits.
  if (!t.empty() && t.front() == '{') {
    if (t.back() != '}') return false;
    t = t.substr(1, t.size() - 2);
  }
  int n = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    char ch = t[i];
    if (ch == '-') {
      if (n == 0 || n % 4 != 0 || n == 32 || i + 1 == t.size() || t[i + 1] == '-') return false;
      continue;
    }
    int v;
    if (ch >= '0' && ch <= '9')
      v = ch - '0';
    else if (ch >= 'a' && ch <= 'f')
      v = ch - 'a' + 10;
    else if (ch >= 'A' && ch <= 'F')
      v = ch - 'A' + 10;
    else
      return false;
    if (n == 32) return false;
    if (n % 2 == 0)
      out[n / 2] = static_cast<unsigned char>(v << 4);
    else
      out[n / 2] |= static_cast<unsigned char>(v);
    ++n;
  }
  return n == 32;
}

std::optional<uint64_t> partition_hash(config::KeyType type, std::string_view text) {
  uint64_t h = 0;
  switch (type) {
    case config::KeyType::kInt2: {
      auto v = parse_int(text, INT16_MIN, INT16_MAX);
      if (!v) return std::nullopt;
      h = hashint4extended(static_cast<int32_t>(*v), kHashPartitionSeed);
      break;
    }
    case config::KeyType::kInt4: {
      auto v = parse_int(text, INT32_MIN, INT32_MAX);
      if (!v) return std::nullopt;
      h = hashint4extended(static_cast<int32_t>(*v), kHashPartitionSeed);
      break;
    }
    case config::KeyType::kInt8: {
      auto v = parse_int(text, INT64_MIN, INT64_MAX);
      if (!v) return std::nullopt;
      h = hashint8extended(*v, kHashPartitionSeed);
      break;
    }
    case config::KeyType::kText:
    case config::KeyType::kVarchar:
      h = hashtextextended(text, kHashPartitionSeed);
      break;
    case config::KeyType::kUuid: {
      unsigned char u[16];
      if (!parse_uuid(text, u)) return std::nullopt;
      h = uuid_hash_extended(u, kHashPartitionSeed);
      break;
    }
  }
  // compute_partition_hash_value(): rowHash = hash_combine64(0, hash) per key column.
  return hash_combine64(0, h);
}

}  // namespace pgshard::router
