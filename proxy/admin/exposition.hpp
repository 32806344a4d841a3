// Prometheus text exposition (format 0.0.4) for /metrics: each family declared once (HELP,
// TYPE), then its samples; and the escaping /api/status's JSON shares with it.
#pragma once

#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "proxy/pool/counters.hpp"

namespace pgshard::admin {

// A Prometheus label value or JSON string body: backslash, quote and newline escaped.
std::string escaped(std::string_view v);
// Counts and byte sizes whole (exact up to 2^53), fractions with 6 digits.
std::string number(double v);

using Label = std::pair<std::string_view, std::string_view>;

// Writes metric families: one HELP/TYPE header per name, then its samples.
class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help);
  void sample(std::string_view name, std::initializer_list<Label> labels, double value) {
    sample(name, std::span<const Label>(labels.begin(), labels.size()), value);
  }
  void sample(std::string_view name, std::span<const Label> labels, double value);
  // A latency histogram in seconds: cumulative buckets (`le`), then _sum and _count.
  void histogram(std::string_view name, std::span<const Label> labels, const pool::Histogram& h);
  void histogram(std::string_view name, std::string_view shard, const pool::Histogram& h) {
    const Label label{"shard", shard};
    histogram(name, std::span<const Label>(&label, 1), h);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace pgshard::admin
