// Group keys: values PostgreSQL's equality calls equal get equal keys, so GROUP BY and
// DISTINCT merge exactly across shards (numeric scale, float -0 and NaN, char(n) padding,
// interval spans), and the list of types for which pgshard vouches for that.
#include <charconv>
#include <cmath>
#include <string>

#include "proxy/merge/value.hpp"

namespace pgshard::merge {

bool same_group_value(int32_t type, int16_t format, std::string_view a, std::string_view b) {
  if (a == b) return true;
  if (type == oid::kNumeric || type == oid::kFloat4 || type == oid::kFloat8 ||
      type == oid::kTimestamptz || type == oid::kTimetz || type == oid::kBpchar) {
    Collation c;
    auto r = compare_values(type, format, a, b, c);
    return r && *r == 0;
  }
  return false;
}

namespace {

// Element types whose arrays compare as their text (or array_send bytes) do: array equality
// is element equality plus equal dimensions and bounds, all of which those spell out.
bool byte_exact_array(int32_t type) {
  switch (type) {
    case 1000:  // bool[]
    case 1001:  // bytea[]
    case 1002:  // "char"[]
    case 1003:  // name[]
    case 1005:  // int2[]
    case 1007:  // int4[]
    case 1009:  // text[]
    case 1015:  // varchar[]
    case 1016:  // int8[]
    case 1028:  // oid[]
    case 1115:  // timestamp[]
    case 1182:  // date[]
    case 1183:  // time[]
    case 1185:  // timestamptz[]
    case 2951:  // uuid[]
      return true;
    default:
      return false;
  }
}

// An interval's span as interval_cmp_value computes it (a month is 30 days, a day 24
// hours, in microseconds): intervals are equal exactly when their spans are ('1 mon' =
// '30 days' = '720:00:00'). Text in IntervalStyle postgres (the default), or binary;
// nullopt for other styles.
std::optional<__int128> interval_span(int16_t format, std::string_view v) {
  constexpr __int128 kDay = 86400LL * 1000000LL;
  if (format == 1) {
    if (v.size() != 16) return std::nullopt;
    uint64_t t = 0;
    for (int i = 0; i < 8; ++i) t = (t << 8) | static_cast<unsigned char>(v[i]);
    uint32_t d = 0, m = 0;
    for (int i = 8; i < 12; ++i) d = (d << 8) | static_cast<unsigned char>(v[i]);
    for (int i = 12; i < 16; ++i) m = (m << 8) | static_cast<unsigned char>(v[i]);
    return static_cast<__int128>(static_cast<int64_t>(t)) +
           (static_cast<__int128>(static_cast<int32_t>(d)) +
            static_cast<__int128>(static_cast<int32_t>(m)) * 30) *
               kDay;
  }
  // "1 year 2 mons -3 days +04:05:06.789", "00:00:00", "-00:00:01", "720:00:00".
  __int128 span = 0;
  std::size_t i = 0;
  auto word = [&]() {
    while (i < v.size() && v[i] == ' ') ++i;
    const std::size_t start = i;
    while (i < v.size() && v[i] != ' ') ++i;
    return v.substr(start, i - start);
  };
  auto number = [](std::string_view t, int64_t& out) {
    if (!t.empty() && t.front() == '+') t.remove_prefix(1);
    auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), out);
    return !t.empty() && ec == std::errc() && p == t.data() + t.size();
  };
  bool any = false;
  for (std::string_view w = word(); !w.empty(); w = word()) {
    any = true;
    if (w.find(':') != std::string_view::npos) {
      bool negative = w.front() == '-';
      if (w.front() == '-' || w.front() == '+') w.remove_prefix(1);
      const auto c1 = w.find(':'), c2 = w.find(':', c1 + 1);
      if (c2 == std::string_view::npos) return std::nullopt;
      int64_t h = 0, m = 0, sec = 0, frac = 0;
      std::string_view secs = w.substr(c2 + 1), fraction;
      if (auto dot = secs.find('.'); dot != std::string_view::npos) {
        fraction = secs.substr(dot + 1);
        secs = secs.substr(0, dot);
        if (fraction.empty() || fraction.size() > 6) return std::nullopt;
      }
      if (!number(w.substr(0, c1), h) || !number(w.substr(c1 + 1, c2 - c1 - 1), m) ||
          !number(secs, sec) || (!fraction.empty() && !number(fraction, frac)) || h < 0 || m < 0 ||
          sec < 0 || frac < 0)
        return std::nullopt;
      for (std::size_t k = fraction.size(); k < 6; ++k) frac *= 10;
      __int128 t = ((static_cast<__int128>(h) * 60 + m) * 60 + sec) * 1000000 + frac;
      span += negative ? -t : t;
      continue;
    }
    int64_t n = 0;
    if (!number(w, n)) return std::nullopt;
    const std::string_view unit = word();
    if (unit == "year" || unit == "years")
      span += static_cast<__int128>(n) * 360 * kDay;
    else if (unit == "mon" || unit == "mons")
      span += static_cast<__int128>(n) * 30 * kDay;
    else if (unit == "day" || unit == "days")
      span += static_cast<__int128>(n) * kDay;
    else
      return std::nullopt;
  }
  if (!any) return std::nullopt;
  return span;
}

std::string int128_text(__int128 v) {
  if (v == 0) return "0";
  const bool negative = v < 0;
  unsigned __int128 u = negative ? -static_cast<unsigned __int128>(v) : v;
  std::string out;
  while (u) {
    out.push_back(static_cast<char>('0' + static_cast<int>(u % 10)));
    u /= 10;
  }
  if (negative) out.push_back('-');
  return {out.rbegin(), out.rend()};
}

}  // namespace

// The types whose equality the merge reproduces exactly (keep README "Statements that
// touch several shards" in step): int2, int4, int8, oid, bool, text, varchar, name,
// "char" and char(n) (trailing spaces ignored) under deterministic collations, numeric
// (1.0 = 1.00, NaN = NaN), float4 and float8 (-0 = 0, NaN = NaN), date, time, timetz,
// timestamp, timestamptz, interval (as a span: '1 day' = '24:00:00', '1 mon' = '30 days';
// text in IntervalStyle postgres, or binary), uuid, bytea; also arrays of
// bool, bytea, "char", name, int2, int4, int8, oid, text, varchar, date, time, timestamp,
// timestamptz and uuid (binary too). Domains arrive as their base type. Everything
// else (jsonb, json, records, enums and other user types, citext, inet, money, arrays of
// numeric or float, ...) is not grouped across shards.
bool exact_group_equality(int32_t type, int16_t /*format: every listed type, either*/) {
  switch (type) {
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid:
    case oid::kBool:
    case oid::kText:
    case oid::kVarchar:
    case oid::kName:
    case oid::kChar:
    case oid::kBpchar:
    case oid::kNumeric:
    case oid::kFloat4:
    case oid::kFloat8:
    case oid::kDate:
    case oid::kTime:
    case oid::kTimetz:
    case oid::kTimestamp:
    case oid::kTimestamptz:
    case oid::kInterval:
    case oid::kUuid:
    case oid::kBytea:
      return true;
    default:
      return byte_exact_array(type);
  }
}

std::optional<std::string> exact_group_key(int32_t type, int16_t format, std::string_view v) {
  switch (type) {
    case oid::kNumeric:
    case oid::kFloat4:
    case oid::kFloat8:
      if (type == oid::kNumeric ? !decode_numeric(format, v) : !decode_float(type, format, v))
        return std::nullopt;
      return group_key(type, format, v);
    case oid::kBpchar:
      return std::string(v.substr(0, v.find_last_not_of(' ') + 1));
    case oid::kInterval:
      if (auto span = interval_span(format, v)) return int128_text(*span);
      return std::nullopt;
    default:
      if (format == 1 && byte_exact_array(type)) {
        // array_send: ndim, has-null-bitmap flag, element type, dimensions and bounds,
        // elements. The flag says how the array is stored, not what it holds: left out.
        if (v.size() < 12) return std::nullopt;
        std::string key(v);
        key.replace(4, 4, 4, '\0');
        return key;
      }
      if (!exact_group_equality(type, format)) return std::nullopt;
      return std::string(v);
  }
}

std::string group_key(int32_t type, int16_t format, std::string_view v) {
  switch (type) {
    case oid::kNumeric:
      if (auto d = decode_numeric(format, v)) {
        std::string canon = d->add(Decimal::from_int(0)).to_text();
        if (canon.find('.') != std::string::npos) {
          canon.erase(canon.find_last_not_of('0') + 1);
          if (canon.back() == '.') canon.pop_back();
        }
        return canon;
      }
      break;
    case oid::kFloat4:
    case oid::kFloat8:
      if (auto d = decode_float(type, format, v)) {
        if (std::isnan(*d)) return "NaN";
        return format_float8(*d == 0 ? 0.0 : *d);  // -0 = 0
      }
      break;
    case oid::kBpchar:
      if (format == 0) return std::string(v.substr(0, v.find_last_not_of(' ') + 1));
      break;
    default:
      break;
  }
  return std::string(v);
}

}  // namespace pgshard::merge
