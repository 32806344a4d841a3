// The actions that run a statement on several shards: FanOut (replies combined), Ddl (shard
// by shard) and CopyIn (rows split by key), handed to the executor.
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace {

// Parse/Describe alone (a driver preparing) is answered alike by every shard: one does.
bool prepares_only(bool simple, std::string_view pending) {
  return !simple && !binds_or_runs(pending);
}

}  // namespace

awaitable<void> Session::run_fan_out(const Request& req, const router::Route& route) {
  if (prepares_only(req.simple, pending_)) {
    co_await run_forward(req, route, router::shards_of(route).front());
    co_return;
  }
  co_await executor::fan_out(*this, *this, route, {pending_, req.simple, req.boundary});
  pending_.clear();
}

awaitable<void> Session::run_schema_change(const Request& req, const router::Route& route) {
  if (prepares_only(req.simple, pending_)) {
    co_await run_forward(req, route, router::shards_of(route).front());
    co_return;
  }
  // On every shard in order (executor::run_ddl), or in the client's transaction on each.
  co_await executor::fan_out(*this, *this, route, {pending_, req.simple, req.boundary});
  schema_changed();  // (again once it has run)
  pending_.clear();
}

awaitable<void> Session::run_copy_in(const Request& req, const router::Route& route,
                                     const router::CopyIn& copy) {
  if (req.simple) {
    co_await executor::copy_in_split(*this, *this, copy);
    pending_.clear();
    co_return;
  }
  // Over the extended protocol the rows cannot be split: the fan-out refuses it, unless the
  // driver only prepares the statement.
  co_await run_fan_out(req, route);
}

}  // namespace pgshard::session
