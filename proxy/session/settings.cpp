// The client's session settings: see settings.hpp.
#include "proxy/session/settings.hpp"

#include <algorithm>
#include <cctype>

#include "protocol/messages.hpp"

namespace pgshard::session {

namespace proto = protocol;

std::string canonical_parameter(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "datestyle") return "DateStyle";
  if (lower == "timezone") return "TimeZone";
  if (lower == "intervalstyle") return "IntervalStyle";
  return lower;
}

bool synced_reported(std::string_view name) {
  // (default_transaction_read_only too: before, a client's SET of it stayed on its server,
  // for the next client there, and was never carried to its own next server.)
  return name == "application_name" || name == "client_encoding" || name == "DateStyle" ||
         name == "IntervalStyle" || name == "TimeZone" || name == "standard_conforming_strings" ||
         name == "default_transaction_read_only";
}

std::optional<std::string> Settings::from_startup(
    const std::vector<std::pair<std::string_view, std::string_view>>& startup, Params& wanted) {
  for (const auto& [k, v] : startup) {
    auto name = canonical_parameter(k);
    if (name == "options") {
      if (auto err = runtime::parse_options(v, wanted)) return err;
    } else if (runtime::is_synced_startup_parameter(name)) {
      wanted[name] = v;
    }
  }
  // ParameterStatus reports the encoding as PostgreSQL names it.
  if (auto it = wanted.find("client_encoding"); it != wanted.end())
    it->second = runtime::canonical_encoding(it->second);
  return std::nullopt;
}

void Settings::start(const Params& server, Params wanted) {
  for (const auto& [k, v] : server)
    if (synced_reported(k)) client_[k] = v;
  Params canonical;
  for (auto& [k, v] : wanted) canonical[canonical_parameter(k)] = v;
  for (const auto& [k, v] : canonical) client_[k] = v;
  changed();
  startup_ = client_;
  sent_ = std::move(canonical);
}

using Kind = router::SettingChange::Kind;

namespace {

// What pgshard records for a session setting whose value on a server is not known (a SET
// run in a transaction whose outcome is not known yet): it matches no client's value, so
// the server is brought to its next client's settings.
constexpr std::string_view kUnknownValue = "\x01unknown";

}  // namespace

void Settings::statement(const std::vector<router::SettingChange>& changes, int ahead, bool runs) {
  request_from_ = txn_changes_.size();
  request_changes_.clear();
  if (!runs) {
    finish_sql_.clear();
    return;
  }
  for (const auto& c : changes) {
    if (c.setting()) request_changes_.push_back(c);
    if (c.kind == Kind::kRollbackTo) ++rollbacks_to_;
  }
  if (ahead > 0 && !changes.empty())
    pipelined_.push_back({ahead, changes});
  else
    take_pending(changes);
  if (changes.empty())
    finish_sql_.clear();  // (most statements: nothing to restore)
  else
    finish_sql_ = restore_startup_sql(changes);
}

void Settings::take_pending(const std::vector<router::SettingChange>& changes) {
  // Where savepoint `name` (the latest of that name) is in pending_; its size if none is.
  auto savepoint = [&](const std::string& name) {
    for (std::size_t i = pending_.size(); i-- > 0;)
      if (pending_[i].kind == Kind::kSavepoint && pending_[i].name == name) return i;
    return pending_.size();
  };
  for (const auto& c : changes) {
    if (c.kind == Kind::kSession || c.kind == Kind::kSavepoint) {
      pending_.push_back(c);
    } else if (c.kind == Kind::kRelease) {
      // RELEASE keeps the changes made since, and forgets the savepoints from it on.
      const std::size_t from = savepoint(c.name);
      for (std::size_t i = pending_.size(); i-- > from;)
        if (pending_[i].kind == Kind::kSavepoint)
          pending_.erase(pending_.begin() + static_cast<std::ptrdiff_t>(i));
    } else if (c.kind == Kind::kRollbackTo) {
      // Undoes what followed the savepoint, which stays; an error after it is undone too.
      const std::size_t at = savepoint(c.name);
      if (at == pending_.size()) continue;
      pending_.resize(at + 1);
      failed_ = false;
    }
  }
}

void Settings::rolled_back() {
  if (rollbacks_to_ > 0) {
    --rollbacks_to_;  // (take_pending undid what followed its savepoint)
    return;
  }
  pending_.clear();
  failed_ = false;
}

void Settings::transaction_ended(bool committed) {
  if (committed && !failed_) apply(nullptr);
  pending_.clear();
  failed_ = false;
  end_transaction();
}

void Settings::end_transaction() {
  txn_changes_.clear();
  request_changes_.clear();
  request_from_ = 0;
  caught_up_.clear();
  rollbacks_to_ = 0;
}

std::string Settings::catch_up(pool::ServerConn& conn, bool in_transaction) {
  if (!request_changes_.empty()) {
    txn_changes_.insert(txn_changes_.end(), request_changes_.begin(), request_changes_.end());
    request_changes_.clear();
  }
  if (!in_transaction) {
    // (Not a server of the transaction: it runs only the request's own changes.)
    for (std::size_t i = request_from_; i < txn_changes_.size(); ++i)
      unknown_on(conn, txn_changes_[i]);
    return {};
  }
  auto& done = caught_up_[&conn];
  std::string sql;
  for (std::size_t i = done; i < request_from_; ++i) {
    sql += replay_sql(txn_changes_[i]);
    unknown_on(conn, txn_changes_[i]);
  }
  for (std::size_t i = std::max(done, request_from_); i < txn_changes_.size(); ++i)
    unknown_on(conn, txn_changes_[i]);
  done = txn_changes_.size();
  return sql;
}

std::string Settings::replay_sql(const router::SettingChange& c) const {
  const bool local = c.kind == Kind::kLocal;
  auto set = [&](const std::string& name, const std::string& value) {
    return "SELECT pg_catalog.set_config(" + proto::quote_literal(name) + ", " +
           proto::quote_literal(value) + (local ? ", true);" : ", false);");
  };
  if (c.reset_all) {
    std::string sql = "RESET ALL;";
    for (const auto& [name, value] : sent_) sql += set(name, value);
    return sql;
  }
  const std::string name = canonical_parameter(c.name);
  if (c.value) return set(name, *c.value);
  // RESET goes back to the value the client connected with, else the server's default.
  if (auto it = startup_.find(name); it != startup_.end()) return set(name, it->second);
  return (local ? "SET LOCAL " : "RESET ") + proto::quote_ident(name) +
         (local ? " TO DEFAULT;" : ";");
}

void Settings::unknown_on(pool::ServerConn& conn, const router::SettingChange& c) const {
  if (c.kind != Kind::kSession) return;
  conn.synced_fingerprint = 0;
  if (!c.reset_all) {
    conn.params[canonical_parameter(c.name)] = kUnknownValue;
    return;
  }
  for (auto& [name, value] : conn.params) value = kUnknownValue;
  for (const auto& [name, value] : client_) conn.params[name] = kUnknownValue;
}

void Settings::functions_called(const std::vector<std::string>& names, bool trusted) {
  // The role is always checked (cheap); all settings while a function is not yet known to
  // leave them alone (reading pg_settings costs the server far more than the call).
  unknown_ = true;
  if (trusted) return;
  full_check_ = true;
  checked_functions_.insert(checked_functions_.end(), names.begin(), names.end());
}

std::string Settings::restore_startup_sql(const std::vector<router::SettingChange>& changes) const {
  // The server resets a reported setting to its own default and says so with
  // ParameterStatus; PostgreSQL resets to the value the session started with. Only where
  // the RESET took effect (the setting is at the server's reset value) is it put back.
  std::string sql;
  auto restore = [&](const std::string& name, const std::string& value) {
    sql += "SELECT pg_catalog.set_config(name, " + proto::quote_literal(value) +
           ", false) FROM pg_catalog.pg_settings WHERE name = " + proto::quote_literal(name) +
           " AND setting IS NOT DISTINCT FROM reset_val;";
  };
  for (const auto& c : changes) {
    if (c.kind != Kind::kSession) continue;
    for (const auto& [name, value] : sent_) {
      if (!synced_reported(name) || c.value) continue;
      if (c.reset_all || canonical_parameter(c.name) == name) restore(name, value);
    }
  }
  return sql;
}

void Settings::reported(pool::ServerConn& conn, std::string_view name, std::string_view value) {
  if (!synced_reported(name)) return;
  client_[std::string(name)] = std::string(value);
  changed();
  conn.synced_fingerprint = fingerprint_;
}

std::optional<Settings::Checked> Settings::ready(char status, pool::ServerConn& conn) {
  if (!pending_.empty() && status == proto::txn_status::kFailed) failed_ = true;
  if (status == proto::txn_status::kIdle) {
    if (!pending_.empty() && !failed_) apply(&conn);
    pending_.clear();
    failed_ = false;
    end_transaction();
  }
  std::optional<Checked> checked;
  if (std::exchange(checking_, false) && status == proto::txn_status::kIdle)
    checked = adopt_check(conn);
  // The requests pipelined behind this one: their SETs are judged from now on.
  for (auto& p : pipelined_) --p.ahead;
  while (!pipelined_.empty() && pipelined_.front().ahead <= 0) {
    take_pending(pipelined_.front().settings);
    pipelined_.pop_front();
  }
  return checked;
}

void Settings::apply(pool::ServerConn* conn) {
  // Reported settings (TimeZone, DateStyle...) follow ParameterStatus; the rest are kept
  // here and set on whichever server the client gets next.
  auto set = [&](const std::string& name, const std::optional<std::string>& value) {
    if (pool::is_reported_parameter(name)) return;
    if (value) {
      client_[name] = *value;
      if (conn) conn->params[name] = *value;
      return;
    }
    // RESET goes back to the value the client connected with, else the server default.
    if (conn) conn->params.erase(name);
    if (auto it = startup_.find(name); it != startup_.end())
      client_[name] = it->second;
    else
      client_.erase(name);
  };
  for (const auto& c : pending_) {
    if (c.kind != Kind::kSession) continue;  // (a savepoint)
    if (c.reset_all) {
      std::vector<std::string> names;
      for (const auto& [k, v] : client_) names.push_back(k);
      for (const auto& k : names) set(k, std::nullopt);
    } else {
      set(canonical_parameter(c.name), c.value);
    }
  }
  changed();
  if (conn) conn->synced_fingerprint = 0;  // compare settings on the next use
}

std::optional<Settings::Checked> Settings::adopt_check(pool::ServerConn& conn) {
  // The server's session settings after a function ran: what differs from the client's
  // becomes the client's (it follows it, and no other client gets it: the server is synced
  // to its next client's settings). A role taken inside a function pins the client.
  Checked out;
  bool differs = false;
  for (const auto& [name, value] : checked_) {
    if (pool::is_reported_parameter(name)) continue;  // ParameterStatus told already
    if (name == "role" || name == "session_authorization") {
      out.pins = true;
      out.outcome = runtime::SettingsCheck::kChanged;
      continue;
    }
    auto it = client_.find(name);
    if (it != client_.end() && it->second == value) {
      // The same value a function set earlier: this call may have set it again.
      if (from_functions_.contains(name) && out.outcome == runtime::SettingsCheck::kUnchanged)
        out.outcome = runtime::SettingsCheck::kUnknown;
      continue;
    }
    client_[name] = value;
    conn.params[name] = value;
    from_functions_.insert(name);
    differs = true;
    out.outcome = runtime::SettingsCheck::kChanged;
  }
  checked_.clear();
  if (differs) {
    changed();
    conn.synced_fingerprint = 0;
  }
  out.full = full_check_;
  out.functions = std::move(checked_functions_);
  checked_functions_.clear();
  unknown_ = false;
  full_check_ = false;
  return out;
}

std::string Settings::prelude(pool::ServerConn& conn) {
  // A server of the client's transaction has its settings, and the transaction's: bringing
  // it to the client's again would undo the transaction's SETs there (a statement on several
  // shards syncs each).
  if (caught_up_.contains(&conn)) return {};
  // Most clients share their settings, so a server last synced for an identical set needs
  // no comparison at all.
  if (conn.synced_fingerprint == fingerprint_) return {};
  conn.synced_fingerprint = fingerprint_;
  std::string sync = runtime::sync_statements(client_, conn.params);
  if (sync.empty()) return sync;
  for (const auto& [k, v] : client_) conn.params[k] = v;
  std::erase_if(conn.params, [&](const auto& kv) {
    return !client_.contains(kv.first) && !pool::is_reported_parameter(kv.first);
  });
  return sync;
}

std::string Settings::take_finishing_sql(bool may_check) {
  if (unknown_ && may_check) {
    // What a function set with set_config(…, false) or SET inside it: the server's
    // session settings, read after the client's statement.
    // (role is not in pg_settings: a role taken shows as current_user.)
    if (full_check_)
      finish_sql_ +=
          "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings "
          "WHERE source = 'session' UNION ALL ";
    finish_sql_ += "SELECT 'role', current_user::text WHERE current_user <> session_user;";
    checking_ = true;
    checked_.clear();
  }
  return std::exchange(finish_sql_, {});
}

void Settings::finishing_row(std::string_view body) {
  if (!checking_) return;
  auto row = proto::DataRow::parse(body);
  if (row && row->values.size() == 2 && row->values[0] && row->values[1])
    checked_.emplace_back(*row->values[0], *row->values[1]);
}

void Settings::server_discarded(pool::ServerConn& conn) {
  std::erase_if(conn.params, [](const auto& kv) { return !pool::is_reported_parameter(kv.first); });
  conn.synced_fingerprint = 0;
}

Params Settings::welcome(const Params& server, const std::string& user) const {
  Params announced = server;
  for (const auto& [k, v] : client_)
    if (pool::is_reported_parameter(k)) announced[k] = v;
  announced["session_authorization"] = user;
  return announced;
}

}  // namespace pgshard::session
