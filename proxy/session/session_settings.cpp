// The client's settings: SET/RESET tracked to their outcome, synced to each server it gets,
// and settings a function changed adopted after a check.
#include <spdlog/spdlog.h>

#include "protocol/messages.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"
#include "proxy/session/session_internal.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

void Session::take_startup_params(const Params& server, Params wanted) {
  for (const auto& [k, v] : server)
    if (synced_reported(k)) client_params_[k] = v;
  for (auto& [k, v] : wanted) client_params_[canonical_parameter(k)] = v;
  {
    Params canonical;
    for (auto& [k, v] : wanted) canonical[canonical_parameter(k)] = v;
    wanted = std::move(canonical);
  }
  params_fingerprint_ = fingerprint(client_params_);
  startup_params_ = client_params_;
  sent_params_ = std::move(wanted);
}

std::string Session::restore_startup_sql(const std::vector<router::SettingChange>& changes) const {
  // The server resets a reported setting to its own default and says so with
  // ParameterStatus; PostgreSQL resets to the value the session started with. Only where
  // the RESET took effect (the setting is at the server's reset value) is it put back.
  std::string sql;
  auto restore = [&](const std::string& name, const std::string& value) {
    sql += "SELECT pg_catalog.set_config(name, " + quote_literal(value) +
           ", false) FROM pg_catalog.pg_settings WHERE name = " + quote_literal(name) +
           " AND setting IS NOT DISTINCT FROM reset_val;";
  };
  for (const auto& c : changes) {
    for (const auto& [name, value] : sent_params_) {
      if (!synced_reported(name) || c.value) continue;
      if (c.reset_all || canonical_parameter(c.name) == name) restore(name, value);
    }
  }
  return sql;
}

std::string Session::sync_prelude(pool::ServerConn& conn) {
  // Most clients share their settings, so a server last synced for an identical set needs
  // no comparison at all.
  std::string out;
  if (conn.synced_fingerprint == params_fingerprint_) return out;
  conn.synced_fingerprint = params_fingerprint_;
  const auto sync = sync_statements(client_params_, conn.params);
  if (sync.empty()) return out;
  spdlog::debug("{}: S-{}: applying settings: {}", prefix(), conn.id(), sync);
  for (const auto& [k, v] : client_params_) conn.params[k] = v;
  std::erase_if(conn.params, [&](const auto& kv) {
    return !client_params_.contains(kv.first) && !pool::is_reported_parameter(kv.first);
  });
  proto::Query{sync}.write(out);
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
  if (!synced_reported(name)) return;
  client_params_[std::string(name)] = std::string(value);
  params_fingerprint_ = fingerprint(client_params_);
  conn.synced_fingerprint = params_fingerprint_;
}

void Session::own_statement_failed(pool::ServerConn& conn) {
  // (A settings check after the client's statement failed its transaction fails too.)
  if (conn.replies.error_code == sqlstate::kInFailedSqlTransaction) return;
  spdlog::warn("{}: shard {} rejected pgshard's statement: {}", prefix(), conn.target().shard_name,
               conn.replies.error);
}

bool Session::client_ready(pool::ServerConn& conn) {
  copy_in_ = false;
  if (std::exchange(ddl_running_, false)) schema_changed();
  const char status = conn.status;
  // Snapshots taken by the request were taken before now (txn::Snapshots).
  if (!txn_.snapshots.empty()) txn_.snapshots.replied(worker_.shared().visibility.last_begun());
  // Settings the client changed take effect once its statement (or transaction) has
  // succeeded; a failure or ROLLBACK drops them, as PostgreSQL does.
  if (!pending_settings_.empty() && status == proto::txn_status::kFailed) settings_failed_ = true;
  if (status == proto::txn_status::kIdle) {
    if (!pending_settings_.empty() && !settings_failed_) apply_settings(conn);
    pending_settings_.clear();
    settings_failed_ = false;
  }
  if (std::exchange(checking_settings_, false) && status == proto::txn_status::kIdle) {
    const auto outcome = adopt_checked_settings(conn);
    if (full_check_) worker_.functions_checked(checked_functions_, outcome);
    checked_functions_.clear();
    settings_unknown_ = false;
    full_check_ = false;
  }
  // The requests pipelined behind this one: their SETs are judged from now on.
  for (auto& p : pipelined_settings_) --p.ahead;
  while (!pipelined_settings_.empty() && pipelined_settings_.front().ahead <= 0) {
    auto& s = pipelined_settings_.front().settings;
    pending_settings_.insert(pending_settings_.end(), s.begin(), s.end());
    pipelined_settings_.pop_front();
  }
  txn_.server_ready(status);
  if (status != proto::txn_status::kIdle) return true;
  if (txn_.state() == txn::State::kIdle) hints_.local = {};
  return !txn_.deferred();
}

void Session::finishing_row(pool::ServerConn&, std::string_view body) {
  if (!checking_settings_) return;
  auto row = proto::DataRow::parse(body);
  if (row && row->values.size() == 2 && row->values[0] && row->values[1])
    checked_settings_.emplace_back(*row->values[0], *row->values[1]);
}

runtime::SettingsCheck Session::adopt_checked_settings(pool::ServerConn& conn) {
  // The server's session settings after a function ran: what differs from the client's
  // becomes the client's (it follows it, and no other client gets it: the server is synced
  // to its next client's settings). A role taken inside a function pins the client.
  auto outcome = runtime::SettingsCheck::kUnchanged;
  bool changed = false;
  for (const auto& [name, value] : checked_settings_) {
    if (pool::is_reported_parameter(name)) continue;  // ParameterStatus told already
    if (name == "role" || name == "session_authorization") {
      if (!pinned_) spdlog::debug("{}: pinned: a function changed {}", prefix(), name);
      pinned_ = true;
      outcome = runtime::SettingsCheck::kChanged;
      continue;
    }
    auto it = client_params_.find(name);
    if (it != client_params_.end() && it->second == value) {
      // The same value a function set earlier: this call may have set it again.
      if (function_settings_.contains(name) && outcome == runtime::SettingsCheck::kUnchanged)
        outcome = runtime::SettingsCheck::kUnknown;
      continue;
    }
    client_params_[name] = value;
    conn.params[name] = value;
    function_settings_.insert(name);
    changed = true;
    outcome = runtime::SettingsCheck::kChanged;
  }
  checked_settings_.clear();
  if (changed) {
    params_fingerprint_ = fingerprint(client_params_);
    conn.synced_fingerprint = 0;
  }
  return outcome;
}

void Session::apply_settings(pool::ServerConn& conn) {
  // Reported settings (TimeZone, DateStyle...) follow ParameterStatus; the rest are kept
  // here and set on whichever server the client gets next.
  auto set = [&](const std::string& name, const std::optional<std::string>& value) {
    if (pool::is_reported_parameter(name)) return;
    if (value) {
      client_params_[name] = *value;
      conn.params[name] = *value;
      return;
    }
    // RESET goes back to the value the client connected with, else the server default.
    conn.params.erase(name);
    if (auto it = startup_params_.find(name); it != startup_params_.end())
      client_params_[name] = it->second;
    else
      client_params_.erase(name);
  };
  for (const auto& c : pending_settings_) {
    if (c.reset_all) {
      std::vector<std::string> names;
      for (const auto& [k, v] : client_params_) names.push_back(k);
      for (const auto& k : names) set(k, std::nullopt);
    } else {
      set(canonical_parameter(c.name), c.value);
    }
  }
  params_fingerprint_ = fingerprint(client_params_);
  conn.synced_fingerprint = 0;  // compare settings on the next use
}

// DDL: what was learned of the catalog is learned again (column positions, collations,
// functions' effects on settings), and statements prepared from now on get new names.
void Session::schema_changed() {
  worker_.shared().catalog_generation.fetch_add(1);
}

}  // namespace pgshard::session
