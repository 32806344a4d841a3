// A read pgshard needs the answer of itself (the SELECT of an INSERT ... SELECT) run through
// the same multi-shard execution and merge a client's read gets, the answer kept instead of
// sent: the executor writes to a sink that keeps it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proxy/asio.hpp"
#include "proxy/executor/client.hpp"
#include "proxy/executor/reply_sink.hpp"
#include "proxy/router/router.hpp"

namespace pgshard::executor {

struct Captured {
  Captured(std::size_t max_rows, std::size_t max_bytes)
      : max_rows(max_rows), max_bytes(max_bytes) {}
  // A RowDescription's and a DataRow's body.
  void describe(std::string_view body);
  void add_row(std::string_view body);

  std::size_t max_rows, max_bytes;
  std::vector<uint32_t> types;  // the RowDescription's type OIDs
  std::vector<std::vector<std::optional<std::string>>> rows;
  std::size_t bytes = 0;
  bool too_big = false;  // more than the limits: the rest was dropped
  std::string error_code, error_message;
};

// Runs `sql` (a simple Query) as `route` says, over several shards, for `c`'s session (its
// transaction, its cancel key); notices go to `client`.
awaitable<void> capture_read(Client& c, ReplySink& client, const router::Route& route,
                             const std::string& sql, Captured& out);

}  // namespace pgshard::executor
