// libpq helpers of the `pgshard reshard` commands (control plane: plain blocking libpq).
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pgshard::admin {

using PgConnection = std::unique_ptr<PGconn, void (*)(PGconn*)>;
using PgRows = std::vector<std::vector<std::string>>;

struct PgResult {
  PgRows rows;
  std::string error;  // empty: the statement succeeded
  bool ok() const { return error.empty(); }
};

// Runs one statement with text parameters; rows as text ("" for NULL).
PgResult pg_query(PGconn* c, const std::string& sql, const std::vector<std::string>& params = {});

// A connection to `shard` of `cfg` as pgshard's maintenance login, notices dropped; `error`
// is set (and the connection null) when it fails.
PgConnection pg_connect(const config::Config& cfg, const config::Shard& shard,
                        const std::string& application_name, std::string* error);

}  // namespace pgshard::admin
