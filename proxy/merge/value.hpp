// Column values as PostgreSQL compares and computes them: decoding text- and binary-format
// values by type OID, ordering them with PostgreSQL's rules (NULLs, NaN, collations), and
// the exact decimal arithmetic the aggregate merge needs (numeric sums and avg's division).
#pragma once

#include <locale.h>

#include <clocale>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>

namespace pgshard::merge {

// Type OIDs from pg_type.dat (PostgreSQL 15).
namespace oid {
inline constexpr int32_t kBool = 16, kBytea = 17, kChar = 18, kName = 19, kInt8 = 20, kInt2 = 21,
                         kInt4 = 23, kText = 25, kOid = 26, kFloat4 = 700, kFloat8 = 701,
                         kBpchar = 1042, kVarchar = 1043, kDate = 1082, kTime = 1083,
                         kTimestamp = 1114, kTimestamptz = 1184, kInterval = 1186, kTimetz = 1266,
                         kNumeric = 1700, kUuid = 2950;
}

// An exact decimal: sign, digits and scale (value = digits × 10^-scale), or NaN/±Infinity.
// Mirrors PostgreSQL's numeric closely enough that sums and avg come out digit for digit.
class Decimal {
 public:
  enum class Kind { kFinite, kNaN, kPosInf, kNegInf };

  static std::optional<Decimal> parse(std::string_view text);
  static std::optional<Decimal> from_binary(std::string_view bytes);
  static Decimal from_int(int64_t v);

  std::string to_text() const;
  std::string to_binary() const;
  int compare(const Decimal& other) const;  // value order; NaN above everything
  Decimal add(const Decimal& other) const;
  // This / count rounded as PostgreSQL's numeric_div rounds it (select_div_scale).
  Decimal divide(int64_t count) const;
  int scale() const { return scale_; }
  // Rounded (half away from zero) or padded to `scale` digits after the point, as a cast
  // to numeric(p, scale) does; nullopt when more than precision - scale integer digits
  // remain (PostgreSQL: "numeric field overflow").
  std::optional<Decimal> round(int precision, int scale) const;
  bool is_zero() const;

 private:
  Kind kind_ = Kind::kFinite;
  bool negative_ = false;
  std::string digits_ = "0";  // no leading zeros except "0" itself
  int scale_ = 0;             // digits after the decimal point (PostgreSQL's dscale)
  void normalize();
};

// How text values compare: the shard database's collation (LC_COLLATE), or "C".
class Collation {
 public:
  Collation() = default;
  // nullopt when the proxy host lacks the locale.
  static std::optional<Collation> open(const std::string& name);
  Collation(const Collation&) = delete;
  Collation& operator=(const Collation&) = delete;
  Collation(Collation&& o) noexcept : locale_(o.locale_), name_(std::move(o.name_)) {
    o.locale_ = nullptr;
  }
  Collation& operator=(Collation&& o) noexcept;
  ~Collation();
  int compare(std::string_view a, std::string_view b) const;
  const std::string& name() const { return name_; }

 private:
  locale_t locale_ = nullptr;  // null: byte order ("C")
  std::string name_ = "C";
};

// The collations of one shard's table columns that are not the database's, from its
// catalog: ORDER BY and min/max across shards compare a column's values with its own
// collation, as PostgreSQL does. Keyed by (table OID, column number) as RowDescription
// names a column.
struct ColumnCollations {
  struct Entry {
    std::string name;                       // pg_collation.collname
    std::shared_ptr<const Collation> libc;  // a libc collation pgshard opened (null: none)
    std::string problem;                    // why pgshard cannot compare with it ("" when it can)
    bool deterministic = true;              // false: values equal under it may differ in bytes
  };
  std::map<std::pair<uint32_t, int16_t>, Entry> columns;
  std::set<std::string> relations;  // names of the tables and views those columns are in
};

// What pgshard makes of a column collation from a shard's pg_collation (collname,
// collprovider, collisdeterministic, collcollate): nullopt when it orders exactly as the
// database's collation `database` (the same locale, or both byte order), else an entry
// with the libc collation to compare with, or the problem that stops a merge (ICU,
// nondeterministic, a locale the pgshard host lacks).
std::optional<ColumnCollations::Entry> collation_entry(const std::string& name,
                                                       const std::string& provider,
                                                       bool deterministic,
                                                       const std::string& locale,
                                                       const Collation& database);

// Whether values of `type` can be ordered by pgshard (text or binary format).
bool orderable(int32_t type);

// Compares two non-NULL values of one column. Returns <0, 0, >0; nullopt when a value does
// not decode (pgshard then refuses instead of guessing).
std::optional<int> compare_values(int32_t type, int16_t format, std::string_view a,
                                  std::string_view b, const Collation& collation);

// True when two group-key values are the same group (numeric 1.0 and 1.00 are one group).
bool same_group_value(int32_t type, int16_t format, std::string_view a, std::string_view b);
// A non-NULL value as a GROUP BY / DISTINCT key: equal keys exactly when PostgreSQL's
// equality says the values are equal (numeric 1.5 = 1.50, float -0 = 0, NaN = NaN, char(n)
// ignoring trailing spaces); other types compare by their bytes.
std::string group_key(int32_t type, int16_t format, std::string_view v);
// Whether pgshard reproduces PostgreSQL's equality of values of `type` sent in `format`,
// so that GROUP BY / DISTINCT keys from different shards meet exactly when PostgreSQL
// would put them in one group (the list is in value.cpp and README).
bool exact_group_equality(int32_t type, int16_t format);
// The group key of a value of such a type (interval: its span); nullopt when the type is
// not one or the value does not decode (an interval in another IntervalStyle).
std::optional<std::string> exact_group_key(int32_t type, int16_t format, std::string_view v);

// PostgreSQL's float8out / float4out with extra_float_digits = 1 (shortest exact).
std::string format_float8(double v);
std::string format_float4(float v);

// Decoding by type and format (0 text, 1 binary); nullopt when the value does not decode.
std::optional<int64_t> decode_int(int32_t type, int16_t format, std::string_view v);
std::optional<double> decode_float(int32_t type, int16_t format, std::string_view v);
std::optional<Decimal> decode_numeric(int16_t format, std::string_view v);
// Encoding computed results in the column's format.
std::string encode_int8(int64_t v, int16_t format);
std::string encode_float(int32_t type, double v, int16_t format);  // float4 or float8
std::string encode_numeric(const Decimal& v, int16_t format);

// Text value of a computed aggregate result in binary format for types pgshard computes
// (int8, numeric, float4, float8, bool). nullopt for other types.
std::optional<std::string> text_to_binary(int32_t type, std::string_view text);
// And back: binary value of those types (and of text, bytea and uuid) to text.
std::optional<std::string> binary_to_text(int32_t type, std::string_view bytes);

}  // namespace pgshard::merge
