// The Session side of the client's settings (settings.hpp keeps them): what the relay and
// routes tell it, the prelude written to a server, and pinning when the role changes.
#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

std::string Session::sync_prelude(pool::ServerConn& conn) {
  std::string out;
  const std::string sync = settings_.prelude(conn);
  if (sync.empty()) return out;
  spdlog::debug("{}: S-{}: applying settings: {}", prefix(), conn.id(), sync);
  proto::Query{sync}.write(out);
  conn.replies.expect_ready(pool::Replies::Owner::kOwn);
  return out;
}

std::string Session::catch_up_settings(pool::ServerConn& conn, bool in_transaction) {
  std::string out;
  const std::string sql = settings_.catch_up(conn, in_transaction);
  if (sql.empty()) return out;
  spdlog::debug("{}: S-{}: the transaction's settings: {}", prefix(), conn.id(), sql);
  proto::Query{sql}.write(out);
  conn.replies.expect_ready(pool::Replies::Owner::kOwn);
  return out;
}

void Session::reported(pool::ServerConn& conn, std::string_view name, std::string_view value) {
  if (name == "session_authorization" && user_ && value != user_->name && !pinned_) {
    // The server now acts as another user (SET SESSION AUTHORIZATION, maybe in a function):
    // the client keeps its servers, and they are reset before anyone else gets them.
    pinned_ = true;
    spdlog::debug("{}: pinned to its servers: session authorization {}", prefix(), log_safe(value));
  }
  settings_.reported(conn, name, value);
}

void Session::own_statement_failed(pool::ServerConn& conn) {
  // (A settings check after the client's statement failed its transaction fails too.)
  if (conn.replies.error_code == sqlstate::kInFailedSqlTransaction) return;
  spdlog::warn("{}: shard {} rejected pgshard's statement: {}", prefix(), conn.target().shard_name,
               conn.replies.error);
}

bool Session::client_ready(pool::ServerConn& conn) {
  phase_.ready();
  if (std::exchange(ddl_running_, false)) schema_changed();
  const char status = conn.status;
  // Snapshots taken by the request were taken before now (txn::Snapshots).
  if (!txn_.snapshots.empty()) txn_.snapshots.replied(worker_.shared().visibility.last_begun());
  if (auto checked = settings_.ready(status, conn)) {
    // A role taken inside a function pins the client.
    if (checked->pins && !pinned_)
      spdlog::debug("{}: pinned: a function changed its role", prefix());
    pinned_ |= checked->pins;
    if (checked->full) worker_.functions_checked(checked->functions, checked->outcome);
  }
  txn_.server_ready(status);
  if (status != proto::txn_status::kIdle) return true;
  if (txn_.state() == txn::State::kIdle) hints_.local = {};
  return !txn_.deferred() && !txn_.failed();
}

// DDL: what was learned of the catalog is learned again (column positions, collations,
// functions' effects on settings), and statements prepared from now on get new names.
void Session::schema_changed() {
  worker_.shared().catalog_generation.fetch_add(1);
}

}  // namespace pgshard::session
