// Shared by the router and merger fuzz targets: the three-shard map they route against.
#pragma once

#include <memory>

#include "config/config.hpp"

inline const pgshard::config::Config& fuzz_config() {
  static const auto cfg = pgshard::config::load_string(R"(
listen: { host: 127.0.0.1, port: 6432 }
users:
  - { name: app, password: secret }
shards:
  - { name: s0, primary: "postgres://app:secret@127.0.0.1:5432/app" }
  - { name: s1, primary: "postgres://app:secret@127.0.0.1:5433/app" }
  - { name: s2, primary: "postgres://app:secret@127.0.0.1:5434/app" }
sharded_tables:
  - { table: users, column: id, type: bigint }
  - { table: orders, column: user_id, type: bigint }
  - { table: events, column: key, type: text }
  - { table: devices, column: id, type: uuid, function: ring }
reference_tables: [countries]
unsharded: { shard: s0 }
)",
                                                       "fuzz");
  return *cfg;
}
