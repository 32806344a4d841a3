// Column values as PostgreSQL compares and computes them (see value.hpp).
#include "proxy/merge/value.hpp"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

namespace pgshard::merge {

namespace {

uint16_t be16(const char* p) {
  return static_cast<uint16_t>((static_cast<unsigned char>(p[0]) << 8) |
                               static_cast<unsigned char>(p[1]));
}
uint32_t be32(const char* p) {
  return (uint32_t{be16(p)} << 16) | be16(p + 2);
}
uint64_t be64(const char* p) {
  return (uint64_t{be32(p)} << 32) | be32(p + 4);
}
void put16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}
void put32(std::string& out, uint32_t v) {
  put16(out, static_cast<uint16_t>(v >> 16));
  put16(out, static_cast<uint16_t>(v & 0xffff));
}
void put64(std::string& out, uint64_t v) {
  put32(out, static_cast<uint32_t>(v >> 32));
  put32(out, static_cast<uint32_t>(v & 0xffffffffu));
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if ((a[i] | 0x20) != (b[i] | 0x20)) return false;
  return true;
}

template <typename T>
int cmp3(T a, T b) {
  return a < b ? -1 : (b < a ? 1 : 0);
}

std::optional<int64_t> parse_int(std::string_view s) {
  int64_t v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> parse_float(std::string_view s) {
  if (iequals(s, "NaN")) return std::numeric_limits<double>::quiet_NaN();
  if (iequals(s, "Infinity")) return std::numeric_limits<double>::infinity();
  if (iequals(s, "-Infinity")) return -std::numeric_limits<double>::infinity();
  double v = 0;
  auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// float8_cmp: NaN equals NaN and sorts above every other value.
int compare_doubles(double a, double b) {
  bool an = std::isnan(a), bn = std::isnan(b);
  if (an || bn) return an == bn ? 0 : (an ? 1 : -1);
  return cmp3(a, b);
}

// Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

constexpr int64_t kMicrosPerDay = 86'400'000'000;
// PostgreSQL's binary dates and timestamps count from 2000-01-01.
constexpr int64_t kPgEpochDays = 10957;

// Reads digits while they last; returns the value and advances `s`. False for fewer than
// `min_digits` digits, or more than a date or time field can have (no overflow).
bool read_number(std::string_view& s, int64_t& v, std::size_t min_digits = 1) {
  constexpr std::size_t kMaxDigits = 9;
  std::size_t n = 0;
  v = 0;
  while (n < s.size() && s[n] >= '0' && s[n] <= '9') {
    if (n == kMaxDigits) return false;
    v = v * 10 + (s[n++] - '0');
  }
  s.remove_prefix(n);
  return n >= min_digits;
}

// "HH:MM:SS[.ffffff]" → microseconds; advances `s`.
bool read_time(std::string_view& s, int64_t& micros) {
  int64_t h, m, sec;
  if (!read_number(s, h) || s.empty() || s[0] != ':') return false;
  s.remove_prefix(1);
  if (!read_number(s, m) || s.empty() || s[0] != ':') return false;
  s.remove_prefix(1);
  if (!read_number(s, sec)) return false;
  int64_t frac = 0;
  if (!s.empty() && s[0] == '.') {
    s.remove_prefix(1);
    int digits = 0;
    while (!s.empty() && s[0] >= '0' && s[0] <= '9') {
      if (digits < 6) frac = frac * 10 + (s[0] - '0');
      ++digits;
      s.remove_prefix(1);
    }
    for (; digits < 6; ++digits) frac *= 10;
  }
  micros = ((h * 60 + m) * 60 + sec) * 1'000'000 + frac;
  return true;
}

// "+HH[:MM[:SS]]" → seconds east of UTC; advances `s`.
bool read_offset(std::string_view& s, int64_t& seconds) {
  if (s.empty() || (s[0] != '+' && s[0] != '-')) return false;
  int sign = s[0] == '-' ? -1 : 1;
  s.remove_prefix(1);
  int64_t h, m = 0, sec = 0;
  if (!read_number(s, h)) return false;
  if (!s.empty() && s[0] == ':') {
    s.remove_prefix(1);
    if (!read_number(s, m)) return false;
    if (!s.empty() && s[0] == ':') {
      s.remove_prefix(1);
      if (!read_number(s, sec)) return false;
    }
  }
  seconds = sign * (h * 3600 + m * 60 + sec);
  return true;
}

// ISO-style date/time text (DateStyle ISO, PostgreSQL's default) → one comparable integer
// (microseconds; UTC for the time-zone types). Other DateStyles do not decode.
std::optional<int64_t> parse_datetime(int32_t type, std::string_view s) {
  if (s == "infinity") return std::numeric_limits<int64_t>::max();
  if (s == "-infinity") return std::numeric_limits<int64_t>::min();
  if (type == oid::kTime || type == oid::kTimetz) {
    int64_t t, off = 0;
    if (!read_time(s, t)) return std::nullopt;
    if (type == oid::kTimetz && !read_offset(s, off)) return std::nullopt;
    if (!s.empty()) return std::nullopt;
    return t - off * 1'000'000;
  }
  int64_t y, mo, d;
  if (!read_number(s, y, 4) || s.empty() || s[0] != '-') return std::nullopt;
  s.remove_prefix(1);
  if (!read_number(s, mo, 2) || s.empty() || s[0] != '-') return std::nullopt;
  s.remove_prefix(1);
  if (!read_number(s, d, 2) || mo < 1 || mo > 12 || d < 1 || d > 31) return std::nullopt;
  int64_t micros = 0, off = 0;
  if (type != oid::kDate) {
    if (s.empty() || s[0] != ' ') return std::nullopt;
    s.remove_prefix(1);
    if (!read_time(s, micros)) return std::nullopt;
    if (type == oid::kTimestamptz && !read_offset(s, off)) return std::nullopt;
  }
  if (s == " BC") {
    y = 1 - y;
    s = {};
  }
  if (!s.empty()) return std::nullopt;
  // Years past about 292,000 do not fit in microseconds: not compared, never overflowed.
  int64_t at = 0;
  if (__builtin_mul_overflow(
          days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)), kMicrosPerDay,
          &at) ||
      __builtin_add_overflow(at, micros - off * 1'000'000, &at))
    return std::nullopt;
  return at;
}

std::optional<int64_t> binary_datetime(int32_t type, std::string_view b) {
  switch (type) {
    case oid::kDate: {
      if (b.size() != 4) return std::nullopt;
      auto days = static_cast<int32_t>(be32(b.data()));
      if (days == std::numeric_limits<int32_t>::max()) return std::numeric_limits<int64_t>::max();
      if (days == std::numeric_limits<int32_t>::min()) return std::numeric_limits<int64_t>::min();
      // A shard never sends a date this far out; garbage must not overflow (found by fuzzing).
      int64_t micros = 0;
      if (__builtin_mul_overflow(int64_t{days} + kPgEpochDays, kMicrosPerDay, &micros))
        return std::nullopt;
      return micros;
    }
    case oid::kTime:
    case oid::kTimestamp:
    case oid::kTimestamptz:
      if (b.size() != 8) return std::nullopt;
      return static_cast<int64_t>(be64(b.data()));
    case oid::kTimetz:
      if (b.size() != 12) return std::nullopt;
      // Zone is stored in seconds west of UTC.
      return static_cast<int64_t>(be64(b.data())) +
             int64_t{static_cast<int32_t>(be32(b.data() + 8))} * 1'000'000;
    default:
      return std::nullopt;
  }
}

std::string_view strip_trailing_spaces(std::string_view s) {
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

int compare_bytes(std::string_view a, std::string_view b) {
  int c = std::memcmp(a.data(), b.data(), std::min(a.size(), b.size()));
  if (c != 0) return c < 0 ? -1 : 1;
  return cmp3(a.size(), b.size());
}

std::optional<double> float_value(int32_t type, int16_t format, std::string_view v) {
  if (format == 0) return parse_float(v);
  if (type == oid::kFloat4 && v.size() == 4) return std::bit_cast<float>(be32(v.data()));
  if (type == oid::kFloat8 && v.size() == 8) return std::bit_cast<double>(be64(v.data()));
  return std::nullopt;
}

std::optional<int64_t> int_value(int32_t type, int16_t format, std::string_view v) {
  if (format == 0) return parse_int(v);
  if (type == oid::kInt2 && v.size() == 2) return static_cast<int16_t>(be16(v.data()));
  if (type == oid::kInt4 && v.size() == 4) return static_cast<int32_t>(be32(v.data()));
  if (type == oid::kOid && v.size() == 4) return be32(v.data());
  if (type == oid::kInt8 && v.size() == 8) return static_cast<int64_t>(be64(v.data()));
  return std::nullopt;
}

std::optional<Decimal> numeric_value(int16_t format, std::string_view v) {
  return format == 0 ? Decimal::parse(v) : Decimal::from_binary(v);
}

// Decimal magnitude helpers on digit strings without leading zeros.
int compare_magnitude(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return a.size() < b.size() ? -1 : 1;
  int c = a.compare(b);
  return c < 0 ? -1 : (c > 0 ? 1 : 0);
}

std::string add_magnitude(const std::string& a, const std::string& b) {
  std::string r;
  int carry = 0;
  for (std::size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
    int s = carry;
    if (i < a.size()) s += a[a.size() - 1 - i] - '0';
    if (i < b.size()) s += b[b.size() - 1 - i] - '0';
    r.push_back(static_cast<char>('0' + s % 10));
    carry = s / 10;
  }
  std::reverse(r.begin(), r.end());
  return r;
}

// a - b with a >= b.
std::string sub_magnitude(const std::string& a, const std::string& b) {
  std::string r;
  int borrow = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    int s = (a[a.size() - 1 - i] - '0') - borrow - (i < b.size() ? b[b.size() - 1 - i] - '0' : 0);
    borrow = s < 0;
    r.push_back(static_cast<char>('0' + (s + 10) % 10));
  }
  std::reverse(r.begin(), r.end());
  return r;
}

int floor_div(int a, int b) {
  return a >= 0 ? a / b : -((-a + b - 1) / b);
}

}  // namespace

// ---- Decimal ----

void Decimal::normalize() {
  auto nz = digits_.find_first_not_of('0');
  digits_ = nz == std::string::npos ? "0" : digits_.substr(nz);
  if (digits_ == "0") negative_ = false;
}

bool Decimal::is_zero() const {
  return kind_ == Kind::kFinite && digits_ == "0";
}

Decimal Decimal::from_int(int64_t v) {
  Decimal d;
  d.negative_ = v < 0;
  uint64_t mag = v < 0 ? ~static_cast<uint64_t>(v) + 1 : static_cast<uint64_t>(v);
  d.digits_ = std::to_string(mag);
  d.normalize();
  return d;
}

std::optional<Decimal> Decimal::parse(std::string_view s) {
  Decimal d;
  if (iequals(s, "NaN")) {
    d.kind_ = Kind::kNaN;
    return d;
  }
  if (iequals(s, "Infinity") || iequals(s, "+Infinity")) {
    d.kind_ = Kind::kPosInf;
    return d;
  }
  if (iequals(s, "-Infinity")) {
    d.kind_ = Kind::kNegInf;
    return d;
  }
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) {
    d.negative_ = s[0] == '-';
    s.remove_prefix(1);
  }
  std::string digits;
  int scale = 0;
  bool point = false, any = false;
  while (!s.empty() && ((s[0] >= '0' && s[0] <= '9') || (s[0] == '.' && !point))) {
    if (s[0] == '.') {
      point = true;
    } else {
      digits.push_back(s[0]);
      any = true;
      if (point) ++scale;
    }
    s.remove_prefix(1);
  }
  if (!any) return std::nullopt;
  if (!s.empty() && (s[0] == 'e' || s[0] == 'E')) {
    s.remove_prefix(1);
    auto exp = parse_int(s[0] == '+' ? s.substr(1) : s);
    if (!exp || *exp > 1000 || *exp < -1000) return std::nullopt;
    s = {};
    scale -= static_cast<int>(*exp);
    if (scale < 0) {
      digits.append(static_cast<std::size_t>(-scale), '0');
      scale = 0;
    }
  }
  if (!s.empty()) return std::nullopt;
  d.digits_ = std::move(digits);
  d.scale_ = scale;
  d.normalize();
  return d;
}

std::optional<Decimal> Decimal::round(int precision, int scale) const {
  if (kind_ != Kind::kFinite) return *this;
  Decimal d = *this;
  if (d.scale_ <= scale) {
    d.digits_.append(static_cast<std::size_t>(scale - d.scale_), '0');
  } else {
    const auto drop = static_cast<std::size_t>(d.scale_ - scale);
    if (d.digits_.size() < drop + 1) d.digits_.insert(0, drop + 1 - d.digits_.size(), '0');
    const bool up = d.digits_[d.digits_.size() - drop] >= '5';
    d.digits_.resize(d.digits_.size() - drop);
    if (up) {
      int i = static_cast<int>(d.digits_.size()) - 1;
      for (; i >= 0 && d.digits_[static_cast<std::size_t>(i)] == '9'; --i)
        d.digits_[static_cast<std::size_t>(i)] = '0';
      if (i < 0)
        d.digits_.insert(0, 1, '1');
      else
        ++d.digits_[static_cast<std::size_t>(i)];
    }
  }
  d.scale_ = scale;
  d.normalize();
  const auto integer_digits =
      d.digits_.size() > static_cast<std::size_t>(scale) ? d.digits_.size() - scale : 0;
  if (d.digits_ != "0" && integer_digits > static_cast<std::size_t>(precision - scale))
    return std::nullopt;
  return d;
}

std::string Decimal::to_text() const {
  switch (kind_) {
    case Kind::kNaN:
      return "NaN";
    case Kind::kPosInf:
      return "Infinity";
    case Kind::kNegInf:
      return "-Infinity";
    case Kind::kFinite:
      break;
  }
  std::string d = digits_;
  if (d.size() <= static_cast<std::size_t>(scale_))
    d.insert(0, static_cast<std::size_t>(scale_) + 1 - d.size(), '0');
  if (scale_ > 0) d.insert(d.size() - static_cast<std::size_t>(scale_), 1, '.');
  return negative_ ? "-" + d : d;
}

std::optional<Decimal> Decimal::from_binary(std::string_view b) {
  if (b.size() < 8) return std::nullopt;
  const int ndigits = static_cast<int16_t>(be16(b.data()));
  const int weight = static_cast<int16_t>(be16(b.data() + 2));
  const uint16_t sign = be16(b.data() + 4);
  const int dscale = be16(b.data() + 6);
  if (ndigits < 0 || b.size() != 8 + 2 * static_cast<std::size_t>(ndigits)) return std::nullopt;
  Decimal d;
  if (sign == 0xC000) d.kind_ = Kind::kNaN;
  if (sign == 0xD000) d.kind_ = Kind::kPosInf;
  if (sign == 0xF000) d.kind_ = Kind::kNegInf;
  if (d.kind_ != Kind::kFinite) return d;
  if (sign != 0 && sign != 0x4000) return std::nullopt;
  d.negative_ = sign == 0x4000;
  // value = sum of group[i] * 10000^(weight - i): the groups as one integer, whole zero
  // groups appended up to the decimal point, scaled by the fractional groups.
  std::string digits;
  for (int i = 0; i < ndigits; ++i) {
    char buf[8];
    std::snprintf(buf, sizeof(buf), "%04u", be16(b.data() + 8 + 2 * i));
    digits += buf;
  }
  for (int w = weight - ndigits + 1; w > 0; --w) digits += "0000";
  if (digits.empty()) digits = "0";
  d.digits_ = std::move(digits);
  d.scale_ = 4 * std::max(0, ndigits - 1 - weight);
  // Bring the scale to dscale: drop (zero) digits or append zeros.
  while (d.scale_ > dscale && d.digits_.size() > 1) {
    d.digits_.pop_back();
    --d.scale_;
  }
  if (d.scale_ > dscale) d.scale_ = dscale;
  while (d.scale_ < dscale) {
    d.digits_.push_back('0');
    ++d.scale_;
  }
  d.normalize();
  return d;
}

std::string Decimal::to_binary() const {
  std::string out;
  if (kind_ != Kind::kFinite) {
    put16(out, 0);
    put16(out, 0);
    put16(out, kind_ == Kind::kNaN ? 0xC000 : (kind_ == Kind::kPosInf ? 0xD000 : 0xF000));
    put16(out, 0);
    return out;
  }
  // Pad the fraction to whole base-10000 groups and the integer part to whole groups.
  const int s4 = (scale_ + 3) / 4 * 4;
  std::string d = digits_ + std::string(static_cast<std::size_t>(s4 - scale_), '0');
  const std::size_t pad = (4 - d.size() % 4) % 4;
  d.insert(0, pad, '0');
  std::vector<uint16_t> groups;
  for (std::size_t i = 0; i < d.size(); i += 4)
    groups.push_back(static_cast<uint16_t>(std::stoi(d.substr(i, 4))));
  int weight = static_cast<int>(groups.size()) - s4 / 4 - 1;
  std::size_t first = 0, last = groups.size();
  while (first < last && groups[first] == 0) {
    ++first;
    --weight;
  }
  while (last > first && groups[last - 1] == 0) --last;
  if (first == last) weight = 0;
  put16(out, static_cast<uint16_t>(last - first));
  put16(out, static_cast<uint16_t>(static_cast<int16_t>(weight)));
  put16(out, negative_ ? 0x4000 : 0);
  put16(out, static_cast<uint16_t>(scale_));
  for (std::size_t i = first; i < last; ++i) put16(out, groups[i]);
  return out;
}

int Decimal::compare(const Decimal& o) const {
  auto rank = [](Kind k) {
    return k == Kind::kNegInf ? 0 : k == Kind::kFinite ? 1 : k == Kind::kPosInf ? 2 : 3;
  };
  if (kind_ != Kind::kFinite || o.kind_ != Kind::kFinite) return cmp3(rank(kind_), rank(o.kind_));
  if (negative_ != o.negative_) return negative_ ? -1 : 1;
  const int scale = std::max(scale_, o.scale_);
  std::string a = digits_ + std::string(static_cast<std::size_t>(scale - scale_), '0');
  std::string b = o.digits_ + std::string(static_cast<std::size_t>(scale - o.scale_), '0');
  if (a != "0") a.erase(0, std::min(a.find_first_not_of('0'), a.size() - 1));
  if (b != "0") b.erase(0, std::min(b.find_first_not_of('0'), b.size() - 1));
  int c = compare_magnitude(a, b);
  return negative_ ? -c : c;
}

Decimal Decimal::add(const Decimal& o) const {
  Decimal r;
  if (kind_ == Kind::kNaN || o.kind_ == Kind::kNaN ||
      (kind_ == Kind::kPosInf && o.kind_ == Kind::kNegInf) ||
      (kind_ == Kind::kNegInf && o.kind_ == Kind::kPosInf)) {
    r.kind_ = Kind::kNaN;
    return r;
  }
  if (kind_ != Kind::kFinite) return *this;
  if (o.kind_ != Kind::kFinite) return o;
  r.scale_ = std::max(scale_, o.scale_);
  std::string a = digits_ + std::string(static_cast<std::size_t>(r.scale_ - scale_), '0');
  std::string b = o.digits_ + std::string(static_cast<std::size_t>(r.scale_ - o.scale_), '0');
  a.erase(0, std::min(a.find_first_not_of('0'), a.size() - 1));
  b.erase(0, std::min(b.find_first_not_of('0'), b.size() - 1));
  if (negative_ == o.negative_) {
    r.digits_ = add_magnitude(a, b);
    r.negative_ = negative_;
  } else if (compare_magnitude(a, b) >= 0) {
    r.digits_ = sub_magnitude(a, b);
    r.negative_ = negative_;
  } else {
    r.digits_ = sub_magnitude(b, a);
    r.negative_ = o.negative_;
  }
  r.normalize();
  return r;
}

Decimal Decimal::divide(int64_t count) const {
  if (kind_ != Kind::kFinite || count <= 0) {
    Decimal r = *this;
    if (count <= 0) r.kind_ = Kind::kNaN;
    return r;
  }
  // select_div_scale (numeric.c): at least 16 significant digits, never fewer than the
  // dividend's display scale. Weights and first digits are in base 10000.
  int weight1 = 0, first1 = 0;
  if (!is_zero()) {
    const int exp10 = static_cast<int>(digits_.size()) - 1 - scale_;
    weight1 = floor_div(exp10, 4);
    for (int j = 3; j >= 0; --j) {
      const int pos = static_cast<int>(digits_.size()) - 1 - (4 * weight1 + j + scale_);
      first1 = first1 * 10 + (pos >= 0 && pos < static_cast<int>(digits_.size())
                                  ? digits_[static_cast<std::size_t>(pos)] - '0'
                                  : 0);
    }
  }
  const std::string n = std::to_string(count);
  const int weight2 = static_cast<int>(n.size() - 1) / 4;
  int64_t first2 = count;
  for (int w = 0; w < weight2; ++w) first2 /= 10000;
  int qweight = weight1 - weight2;
  if (first1 <= first2) --qweight;
  int rscale = 16 - qweight * 4;
  rscale = std::clamp(std::max(rscale, scale_), 0, 1000);
  // Quotient with one extra digit, then round half away from zero.
  std::string dividend = digits_ + std::string(static_cast<std::size_t>(rscale - scale_ + 1), '0');
  std::string q;
  unsigned __int128 rem = 0;
  for (char c : dividend) {
    rem = rem * 10 + static_cast<unsigned>(c - '0');
    q.push_back(static_cast<char>('0' + static_cast<int>(rem / static_cast<uint64_t>(count))));
    rem %= static_cast<uint64_t>(count);
  }
  const bool up = q.back() >= '5';
  q.pop_back();
  if (q.empty()) q = "0";
  if (up) q = add_magnitude(q, "1");
  Decimal r;
  r.negative_ = negative_;
  r.digits_ = std::move(q);
  r.scale_ = rscale;
  r.normalize();
  return r;
}

// ---- Collation ----

std::optional<Collation> Collation::open(const std::string& name) {
  Collation c;
  c.name_ = name;
  if (name == "C" || name == "POSIX") return c;
  c.locale_ = newlocale(LC_COLLATE_MASK, name.c_str(), nullptr);
  if (!c.locale_) return std::nullopt;
  return c;
}

namespace {
// Locales whose strcoll is byte order for UTF-8 text.
bool byte_order(const std::string& locale) {
  return locale == "C" || locale == "POSIX" || locale == "C.UTF-8" || locale == "C.utf8";
}
}  // namespace

std::optional<ColumnCollations::Entry> collation_entry(const std::string& name,
                                                       const std::string& provider,
                                                       bool deterministic,
                                                       const std::string& locale,
                                                       const Collation& database) {
  ColumnCollations::Entry e;
  e.name = name;
  e.deterministic = deterministic;
  if (!deterministic) {
    e.problem = "ordering across shards by the nondeterministic collation \"" + name + "\"";
  } else if (provider == "i") {
    e.problem = "ordering across shards by the ICU collation \"" + name + "\"";
  } else if (byte_order(locale) || name == "C" || name == "POSIX") {
    if (byte_order(database.name())) return std::nullopt;
  } else if (locale == database.name()) {
    return std::nullopt;
  } else if (auto opened = Collation::open(locale)) {
    e.libc = std::make_shared<const Collation>(std::move(*opened));
  } else {
    e.problem = "the collation \"" + name + "\" (locale " + locale +
                ") is not available on the pgshard host";
  }
  return e;
}

Collation& Collation::operator=(Collation&& o) noexcept {
  if (this != &o) {
    if (locale_) freelocale(locale_);
    locale_ = std::exchange(o.locale_, nullptr);
    name_ = std::move(o.name_);
  }
  return *this;
}

Collation::~Collation() {
  if (locale_) freelocale(locale_);
}

int Collation::compare(std::string_view a, std::string_view b) const {
  // varstr_cmp: strcoll_l, and for a tie under a deterministic collation, byte order.
  if (locale_) {
    thread_local std::string x, y;
    x.assign(a);
    y.assign(b);
    int c = strcoll_l(x.c_str(), y.c_str(), locale_);
    if (c != 0) return c < 0 ? -1 : 1;
  }
  return compare_bytes(a, b);
}

// ---- comparisons ----

bool orderable(int32_t type) {
  switch (type) {
    case oid::kBool:
    case oid::kBytea:
    case oid::kChar:
    case oid::kName:
    case oid::kInt8:
    case oid::kInt2:
    case oid::kInt4:
    case oid::kText:
    case oid::kOid:
    case oid::kFloat4:
    case oid::kFloat8:
    case oid::kBpchar:
    case oid::kVarchar:
    case oid::kDate:
    case oid::kTime:
    case oid::kTimestamp:
    case oid::kTimestamptz:
    case oid::kTimetz:
    case oid::kNumeric:
    case oid::kUuid:
      return true;
    default:
      return false;
  }
}

std::optional<int> compare_values(int32_t type, int16_t format, std::string_view a,
                                  std::string_view b, const Collation& collation) {
  switch (type) {
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid: {
      auto x = int_value(type, format, a), y = int_value(type, format, b);
      if (!x || !y) return std::nullopt;
      return cmp3(*x, *y);
    }
    case oid::kFloat4:
    case oid::kFloat8: {
      auto x = float_value(type, format, a), y = float_value(type, format, b);
      if (!x || !y) return std::nullopt;
      return compare_doubles(*x, *y);
    }
    case oid::kNumeric: {
      auto x = numeric_value(format, a), y = numeric_value(format, b);
      if (!x || !y) return std::nullopt;
      return x->compare(*y);
    }
    case oid::kBool:
      // Text 't'/'f', binary 1/0: both order false before true bytewise.
      return compare_bytes(a, b);
    case oid::kDate:
    case oid::kTime:
    case oid::kTimestamp:
    case oid::kTimestamptz:
    case oid::kTimetz: {
      auto x = format == 0 ? parse_datetime(type, a) : binary_datetime(type, a);
      auto y = format == 0 ? parse_datetime(type, b) : binary_datetime(type, b);
      if (!x || !y) return std::nullopt;
      return cmp3(*x, *y);
    }
    case oid::kUuid:
      return compare_bytes(a, b);  // canonical lower-case hex orders as the bytes do
    case oid::kBytea:
      if (format == 0 && !(a.starts_with("\\x") && b.starts_with("\\x"))) return std::nullopt;
      return compare_bytes(a, b);  // hex digits order as the bytes they encode
    case oid::kName:
    case oid::kChar:
      return compare_bytes(a, b);  // "name" uses the C collation
    case oid::kBpchar:
      return collation.compare(strip_trailing_spaces(a), strip_trailing_spaces(b));
    case oid::kText:
    case oid::kVarchar:
      return collation.compare(a, b);
    default:
      return std::nullopt;
  }
}

// ---- float output ----

namespace {

// Shortest round-trip digits, placed as float8out/float4out place them: fixed notation for
// decimal exponents in [-4, limit), otherwise d.ddde±XX.
template <typename F>
std::string format_shortest(F v, int limit) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
  if (v == 0) return std::signbit(v) ? "-0" : "0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<std::size_t>(r.ptr - buf));
  std::string out;
  if (sci[0] == '-') {
    out.push_back('-');
    sci.remove_prefix(1);
  }
  auto e = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e))
    if (c != '.') digits.push_back(c);
  int exp = std::stoi(std::string(sci.substr(e + 1)));
  if (exp >= -4 && exp < limit) {
    if (exp < 0) {
      out += "0.";
      out.append(static_cast<std::size_t>(-exp - 1), '0');
      out += digits;
    } else if (static_cast<int>(digits.size()) <= exp + 1) {
      out += digits;
      out.append(static_cast<std::size_t>(exp + 1) - digits.size(), '0');
    } else {
      out += digits.substr(0, static_cast<std::size_t>(exp) + 1);
      out += '.';
      out += digits.substr(static_cast<std::size_t>(exp) + 1);
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  char eb[16];
  std::snprintf(eb, sizeof(eb), "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
  return out + eb;
}

}  // namespace

std::string format_float8(double v) {
  return format_shortest(v, 15);
}
std::string format_float4(float v) {
  return format_shortest(v, 6);
}

std::optional<std::string> text_to_binary(int32_t type, std::string_view text) {
  std::string out;
  switch (type) {
    case oid::kInt8: {
      auto v = parse_int(text);
      if (!v) return std::nullopt;
      put64(out, static_cast<uint64_t>(*v));
      return out;
    }
    case oid::kInt4: {
      auto v = parse_int(text);
      if (!v) return std::nullopt;
      put32(out, static_cast<uint32_t>(static_cast<int32_t>(*v)));
      return out;
    }
    case oid::kNumeric: {
      auto d = Decimal::parse(text);
      if (!d) return std::nullopt;
      return d->to_binary();
    }
    case oid::kFloat8: {
      auto v = parse_float(text);
      if (!v) return std::nullopt;
      put64(out, std::bit_cast<uint64_t>(*v));
      return out;
    }
    case oid::kFloat4: {
      auto v = parse_float(text);
      if (!v) return std::nullopt;
      put32(out, std::bit_cast<uint32_t>(static_cast<float>(*v)));
      return out;
    }
    case oid::kBool:
      if (text != "t" && text != "f") return std::nullopt;
      out.push_back(text == "t" ? 1 : 0);
      return out;
    default:
      return std::nullopt;
  }
}

std::optional<std::string> binary_to_text(int32_t type, std::string_view b) {
  switch (type) {
    case oid::kInt2:
    case oid::kInt4:
    case oid::kInt8:
    case oid::kOid: {
      auto v = int_value(type, 1, b);
      if (!v) return std::nullopt;
      return std::to_string(*v);
    }
    case oid::kNumeric: {
      auto d = Decimal::from_binary(b);
      if (!d) return std::nullopt;
      return d->to_text();
    }
    case oid::kFloat8: {
      auto v = float_value(type, 1, b);
      if (!v) return std::nullopt;
      return format_float8(*v);
    }
    case oid::kFloat4: {
      auto v = float_value(type, 1, b);
      if (!v) return std::nullopt;
      return format_float4(static_cast<float>(*v));
    }
    case oid::kBool:
      if (b.size() != 1) return std::nullopt;
      return std::string(b[0] ? "t" : "f");
    case oid::kText:
    case oid::kVarchar:
    case oid::kBpchar:
    case oid::kName:
      return std::string(b);  // the characters themselves
    case oid::kBytea: {
      static const char* hex = "0123456789abcdef";
      std::string out = "\\x";
      for (unsigned char c : b) {
        out += hex[c >> 4];
        out += hex[c & 15];
      }
      return out;
    }
    case oid::kUuid: {
      if (b.size() != 16) return std::nullopt;
      static const char* hex = "0123456789abcdef";
      std::string out;
      for (std::size_t i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out += '-';
        out += hex[static_cast<unsigned char>(b[i]) >> 4];
        out += hex[static_cast<unsigned char>(b[i]) & 15];
      }
      return out;
    }
    default:
      return std::nullopt;
  }
}

std::optional<int64_t> decode_int(int32_t type, int16_t format, std::string_view v) {
  return int_value(type, format, v);
}
std::optional<double> decode_float(int32_t type, int16_t format, std::string_view v) {
  return float_value(type, format, v);
}
std::optional<Decimal> decode_numeric(int16_t format, std::string_view v) {
  return numeric_value(format, v);
}

std::string encode_int8(int64_t v, int16_t format) {
  if (format == 0) return std::to_string(v);
  std::string out;
  put64(out, static_cast<uint64_t>(v));
  return out;
}

std::string encode_float(int32_t type, double v, int16_t format) {
  std::string out;
  if (type == oid::kFloat4) {
    auto f = static_cast<float>(v);
    if (format == 0) return format_float4(f);
    put32(out, std::bit_cast<uint32_t>(f));
    return out;
  }
  if (format == 0) return format_float8(v);
  put64(out, std::bit_cast<uint64_t>(v));
  return out;
}

std::string encode_numeric(const Decimal& v, int16_t format) {
  return format == 0 ? v.to_text() : v.to_binary();
}

}  // namespace pgshard::merge
