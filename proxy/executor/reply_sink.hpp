// Where the replies of a statement pgshard runs go: to the client (its session), or kept by
// pgshard (the SELECT of an INSERT ... SELECT). Executors write only here; which replies a
// server's own bytes owe the client is the server's reply queue's business (pool::Replies).
#pragma once

#include <string>
#include <string_view>

#include "proxy/asio.hpp"

namespace pgshard::executor {

class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // Sends whole messages of the reply; false when nobody reads them any more (the client
  // left).
  virtual awaitable<bool> write(std::string_view bytes) = 0;
  // Appends to `out` the ReadyForQuery (status `status`) that ends the request's reply, when
  // its reader is owed one: a part of a pipeline pgshard runs in parts gets its one
  // ReadyForQuery at the pipeline's Sync, a read pgshard keeps gets none.
  virtual void end_request(std::string& out, char status) = 0;
};

}  // namespace pgshard::executor
