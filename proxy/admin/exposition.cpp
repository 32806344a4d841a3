// Prometheus text exposition (see exposition.hpp).
#include "proxy/admin/exposition.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace pgshard::admin {

std::string escaped(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

std::string number(double v) {
  char buf[40];
  if (v == static_cast<double>(static_cast<int64_t>(v)) && std::abs(v) < 9.0e15)
    std::snprintf(buf, sizeof buf, "%lld", static_cast<long long>(v));
  else
    std::snprintf(buf, sizeof buf, "%.6g", v);
  return buf;
}

void Exposition::family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += help;
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void Exposition::sample(std::string_view name, std::span<const Label> labels, double value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      out_ += escaped(v);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += number(value);
  out_ += '\n';
}

void Exposition::histogram(std::string_view name, std::span<const Label> labels,
                           const pool::Histogram& h) {
  const std::string bucket = std::string(name) + "_bucket";
  std::vector<Label> with_le(labels.begin(), labels.end());
  with_le.emplace_back("le", "");
  uint64_t cumulative = 0;
  for (std::size_t i = 0; i < pool::Histogram::kBounds.size(); ++i) {
    cumulative += h.buckets[i];
    const std::string le = number(static_cast<double>(pool::Histogram::kBounds[i]) / 1e6);
    with_le.back().second = le;
    sample(bucket, with_le, static_cast<double>(cumulative));
  }
  with_le.back().second = "+Inf";
  sample(bucket, with_le, static_cast<double>(h.count));
  sample(std::string(name) + "_sum", labels, static_cast<double>(h.sum_us) / 1e6);
  sample(std::string(name) + "_count", labels, static_cast<double>(h.count));
}

}  // namespace pgshard::admin
