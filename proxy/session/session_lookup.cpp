// Routes that need something first: the Lookup action (directory entries and catalog
// columns read into the worker's caches) and the rewrites (session_rewrite.cpp), each
// completed and the request routed again.
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<void> Session::resolve_lookups(Request& req, router::Route& route) {
  for (int attempt = 0; router::routes_again(route); ++attempt) {
    // (No co_await inside ?: — GCC 12 mishandles temporaries there.)
    std::string err = "directory entries expire faster than they are read";
    std::string code(sqlstate::kSqlclientUnableToEstablish);
    if (attempt < 4) err = co_await complete_statement(route, code);
    if (!err.empty()) {
      route = router::Route{};
      route.action = router::Refuse{proto::error(code, err)};
      route.hints = hints_;
      break;
    }
    route = route_batch(&req.simple);
  }
}

awaitable<std::string> Session::complete_statement(const router::Route& route, std::string& code) {
  if (const auto* lookup = std::get_if<router::Lookup>(&route.action))
    co_return co_await look_up(*lookup);
  if (std::holds_alternative<router::InsertSelect>(route.action))
    co_return co_await insert_select(code);
  code = sqlstate::kFeatureNotSupported;
  if (const auto* generate = std::get_if<router::GenerateKeys>(&route.action))
    co_return co_await generate_keys(*generate);
  co_return co_await put_unique_ids();  // (UniqueIds)
}

awaitable<std::string> Session::look_up(const router::Lookup& lookup) {
  if (!lookup.columns.empty()) co_return co_await executor::resolve_columns(*this, lookup.columns);
  co_return co_await executor::resolve_directory(*this, lookup.keys);
}

}  // namespace pgshard::session
