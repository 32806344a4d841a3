// How the shard map's loaders check YAML: every problem collected with its file:line, so a user
// fixes the file in one pass. Shared by the loaders of config/ (config.cpp, replication.cpp,
// buckets.cpp).
#pragma once

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <charconv>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pgshard::config::detail {

// Collects every problem with its position so a user fixes the file in one pass.
class Checker {
 public:
  explicit Checker(std::string file) : file_(std::move(file)) {}

  void fail(const YAML::Node& at, const std::string& message) {
    int line = at.Mark().line >= 0 ? at.Mark().line + 1 : 0;
    errors_.push_back(file_ + ":" + std::to_string(line) + ": " + message);
  }

  // Rejects keys outside `allowed`; returns false if `node` is not a mapping.
  bool mapping(const YAML::Node& node, const std::string& what,
               std::initializer_list<std::string_view> allowed) {
    if (!node.IsMap()) {
      fail(node, what + " must be a mapping");
      return false;
    }
    for (const auto& kv : node) {
      auto key = kv.first.as<std::string>();
      if (std::find(allowed.begin(), allowed.end(), key) == allowed.end())
        fail(kv.first, "unknown key '" + key + "' in " + what);
    }
    return true;
  }

  std::optional<std::string> string(const YAML::Node& n, const std::string& what) {
    if (!n.IsScalar()) {
      fail(n, what + " must be a string");
      return std::nullopt;
    }
    return n.Scalar();
  }

  template <typename T>
  std::optional<T> integer(const YAML::Node& n, const std::string& what, T lo, T hi) {
    if (!n.IsScalar()) {
      fail(n, what + " must be a number");
      return std::nullopt;
    }
    const auto& s = n.Scalar();
    long long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || v < static_cast<long long>(lo) ||
        v > static_cast<long long>(hi)) {
      fail(n, what + " must be an integer between " + std::to_string(lo) + " and " +
                  std::to_string(hi) + ", got '" + s + "'");
      return std::nullopt;
    }
    return static_cast<T>(v);
  }

  template <typename E>
  std::optional<E> choice(const YAML::Node& n, const std::string& what,
                          std::initializer_list<std::pair<std::string_view, E>> options) {
    auto s = string(n, what);
    if (!s) return std::nullopt;
    std::string names;
    for (const auto& [name, value] : options) {
      if (*s == name) return value;
      names += (names.empty() ? "" : ", ") + std::string(name);
    }
    fail(n, what + " must be one of " + names + ", got '" + *s + "'");
    return std::nullopt;
  }

  void throw_if_failed() const {
    if (errors_.empty()) return;
    std::string all;
    for (const auto& e : errors_) all += (all.empty() ? "" : "\n") + e;
    throw ConfigError(all);
  }

 private:
  std::string file_;
  std::vector<std::string> errors_;
};

// A duration under `key` of `n` ("5s", "200ms"), from `lo` to `hi`; nullopt (and a
// problem noted) when present but bad, nullopt when absent.
inline std::optional<Millis> duration(Checker& c, const YAML::Node& n, const std::string& what,
                                      Millis lo, Millis hi) {
  if (!n) return std::nullopt;
  const auto text = c.string(n, what).value_or("");
  const auto d = parse_duration(text);
  if (!d || *d < lo || *d > hi) {
    c.fail(n, what + " must be a duration from " + std::to_string(lo.count()) + "ms to " +
                  std::to_string(hi.count()) + "ms (5s, 200ms, 2min), got '" + text + "'");
    return std::nullopt;
  }
  return d;
}

// read_from's values (primary, replicas, prefer_replicas).
std::optional<ReadFrom> load_read_from(Checker& c, const YAML::Node& n, const std::string& what);
// A hash table's `buckets` and `bucket_shards` (buckets.cpp); needs the shard list.
void load_buckets(Checker& c, const YAML::Node& n, ShardedTable& t, const Config& cfg);
// The map's top-level replica settings (config.hpp, Replication).
void load_replication(Checker& c, const YAML::Node& root, Replication& r);

}  // namespace pgshard::config::detail
