// A three-shard map for socket-free router tests and benchmarks; `rest` adds tables etc.
#pragma once

#include <memory>
#include <string>

#include "config/config.hpp"

namespace pgshard::testing {

inline std::shared_ptr<const config::Config> three_shards(const std::string& rest) {
  return config::load_string(R"(users: [{name: app, password: x}]
shards:
  - { name: s0, primary: "postgres://h:1/app" }
  - { name: s1, primary: "postgres://h:2/app" }
  - { name: s2, primary: "postgres://h:3/app" }
)" + rest,
                             "test.yaml");
}

}  // namespace pgshard::testing
