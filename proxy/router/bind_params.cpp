// Bind parameters as the shard key reads them: text or binary format, binary values read
// by the type the statement declared for them (as PostgreSQL's receive functions would).
#include <bit>
#include <cctype>
#include <cmath>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/router.hpp"

namespace pgshard::router {

namespace {

std::string uuid_text(std::string_view raw) {
  static const char* d = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    auto c = static_cast<unsigned char>(raw[i]);
    out.push_back(d[c >> 4]);
    out.push_back(d[c & 15]);
  }
  return out;
}

// A binary numeric (numeric_send: ndigits, weight, sign, dscale, base-10000 digits) that
// holds an integer, as text; nullopt for fractions, NaN, overflow or bad input.
std::optional<std::string> numeric_integer(std::string_view v) {
  if (v.size() < 8) return std::nullopt;
  const int ndigits = static_cast<int16_t>(protocol::load_be16(v.data()));
  const int weight = static_cast<int16_t>(protocol::load_be16(v.data() + 2));
  const uint16_t sign = protocol::load_be16(v.data() + 4);
  if (ndigits < 0 || v.size() != 8 + 2 * static_cast<std::size_t>(ndigits)) return std::nullopt;
  if (sign != 0x0000 && sign != 0x4000) return std::nullopt;
  auto digit = [&](int i) { return i < ndigits ? protocol::load_be16(v.data() + 8 + 2 * i) : 0; };
  for (int i = std::max(0, weight + 1); i < ndigits; ++i)
    if (digit(i) != 0) return std::nullopt;  // a fraction matches no integer key
  __int128 acc = 0;
  for (int i = 0; i <= weight; ++i) {
    acc = acc * 10000 + digit(i);
    if (acc > (static_cast<__int128>(INT64_MAX) + 1)) return std::nullopt;
  }
  if (sign == 0x4000) acc = -acc;
  if (acc > INT64_MAX || acc < INT64_MIN) return std::nullopt;
  return std::to_string(static_cast<int64_t>(acc));
}

}  // namespace

std::optional<std::string> binary_text(std::string_view v, config::KeyType type, int32_t declared) {
  const bool integer_key = type == config::KeyType::kInt2 || type == config::KeyType::kInt4 ||
                           type == config::KeyType::kInt8;
  switch (declared) {
    case 25:    // text
    case 1043:  // varchar
    case 19:    // name
    case 705:   // unknown
      // textsend: the characters themselves; the cast to the key type parses them.
      return std::string(v);
    case 1042:  // char(n): trailing spaces do not count when it becomes text
      return integer_key || type == config::KeyType::kUuid
                 ? std::string(v)
                 : std::string(v.substr(0, v.find_last_not_of(' ') + 1));
    case 21:
      if (v.size() != 2) return std::nullopt;
      return std::to_string(static_cast<int16_t>(protocol::load_be16(v.data())));
    case 23:
    case 26:  // oid: unsigned
      if (v.size() != 4) return std::nullopt;
      return declared == 26 ? std::to_string(protocol::load_be32(v.data()))
                            : std::to_string(static_cast<int32_t>(protocol::load_be32(v.data())));
    case 20: {
      if (v.size() != 8) return std::nullopt;
      uint64_t hi = protocol::load_be32(v.data()), lo = protocol::load_be32(v.data() + 4);
      return std::to_string(static_cast<int64_t>((hi << 32) | lo));
    }
    case 1700:
      return integer_key ? numeric_integer(v) : std::nullopt;
    case 700:
    case 701: {
      // A float key value equal to an integer names that integer's shard; a fraction is
      // left undecoded (the statement then goes where an unknown key goes).
      double d = 0;
      if (declared == 700 && v.size() == 4) {
        float f = std::bit_cast<float>(protocol::load_be32(v.data()));
        d = f;
      } else if (declared == 701 && v.size() == 8) {
        uint64_t hi = protocol::load_be32(v.data()), lo = protocol::load_be32(v.data() + 4);
        d = std::bit_cast<double>((hi << 32) | lo);
      } else {
        return std::nullopt;
      }
      if (!integer_key || !std::isfinite(d) || d != std::trunc(d) || std::fabs(d) > 9.2e18)
        return std::nullopt;
      return std::to_string(static_cast<int64_t>(d));
    }
    case 2950:
      if (v.size() != 16) return std::nullopt;
      return uuid_text(v);
    case 0:
      break;
    default:
      return std::nullopt;  // a type pgshard does not read: never guessed
  }
  switch (type) {
    case config::KeyType::kInt2:
    case config::KeyType::kInt4:
    case config::KeyType::kInt8:
      if (v.size() == 2) return std::to_string(static_cast<int16_t>(protocol::load_be16(v.data())));
      if (v.size() == 4) return std::to_string(static_cast<int32_t>(protocol::load_be32(v.data())));
      if (v.size() == 8) {
        uint64_t hi = protocol::load_be32(v.data()), lo = protocol::load_be32(v.data() + 4);
        return std::to_string(static_cast<int64_t>((hi << 32) | lo));
      }
      return numeric_integer(v);
    case config::KeyType::kUuid:
      if (v.size() != 16) return std::nullopt;
      return uuid_text(v);
    case config::KeyType::kText:
    case config::KeyType::kVarchar:
      return std::string(v);
  }
  return std::nullopt;
}

std::string key_identity(config::KeyType type, std::string_view text) {
  unsigned char raw[16];
  if (type == config::KeyType::kUuid && parse_uuid(text, raw))
    return std::string(reinterpret_cast<const char*>(raw), sizeof raw);
  return config::canonical_key(type, text);
}

std::optional<std::string> param_text(const protocol::Bind& bind, int n, config::KeyType type,
                                      int32_t declared) {
  if (n < 1 || static_cast<std::size_t>(n) > bind.params.size()) return std::nullopt;
  const auto& v = bind.params[static_cast<std::size_t>(n - 1)];
  if (!v) return std::nullopt;
  if (bind.format_of(static_cast<std::size_t>(n - 1)) == 1) return binary_text(*v, type, declared);
  return std::string(*v);
}

std::optional<std::vector<std::string>> array_param(const protocol::Bind& bind, int n,
                                                    config::KeyType type) {
  if (n < 1 || static_cast<std::size_t>(n) > bind.params.size()) return std::nullopt;
  const auto& v = bind.params[static_cast<std::size_t>(n - 1)];
  if (!v) return std::nullopt;
  std::vector<std::string> out;
  if (bind.format_of(static_cast<std::size_t>(n - 1)) == 1) {
    // Binary array: ndim, has-nulls flag, element type, then (size, lower bound) per
    // dimension, then length-prefixed elements (array_send).
    protocol::BodyReader r(*v);
    int32_t ndim = r.i32();
    r.i32();
    const int32_t element = r.i32();  // the elements' type OID: how each one reads
    if (ndim == 0) return out;
    if (ndim != 1) return std::nullopt;
    int32_t count = r.i32();
    r.i32();
    for (int32_t i = 0; i < count && !r.failed(); ++i) {
      int32_t len = r.i32();
      if (len < 0) continue;
      auto t = binary_text(r.bytes(static_cast<std::size_t>(len)), type, element);
      if (!t) return std::nullopt;
      out.push_back(*t);
    }
    if (r.failed()) return std::nullopt;
    return out;
  }
  // Text array: {a,b,"c d"} with optional quotes; NULL elements match nothing.
  std::string_view t = *v;
  if (t.size() < 2 || t.front() != '{' || t.back() != '}') return std::nullopt;
  t = t.substr(1, t.size() - 2);
  std::string cur;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i <= t.size(); ++i) {
    char c = i < t.size() ? t[i] : ',';
    if (quoted) {
      if (c == '\\' && i + 1 < t.size())
        cur.push_back(t[++i]);
      else if (c == '"')
        quoted = false;
      else
        cur.push_back(c);
    } else if (c == '"') {
      quoted = was_quoted = true;
    } else if (c == ',') {
      if (!(cur == "NULL" && !was_quoted) && !(cur.empty() && !was_quoted && t.empty()))
        out.push_back(cur);
      cur.clear();
      was_quoted = false;
    } else if (!std::isspace(static_cast<unsigned char>(c))) {
      cur.push_back(c);
    }
  }
  return out;
}

}  // namespace pgshard::router
