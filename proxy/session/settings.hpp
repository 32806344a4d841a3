// The client's session settings in one place, in the spirit of PgBouncer's varcache: set
// (startup packet, the client's SET/RESET once they hold, ParameterStatus), tracked per
// server (what each ServerConn was last brought to), applied to a server (the prelude that
// brings it to the client's settings) and reported (ParameterStatus at login). No I/O: the
// session feeds it events and writes what it returns.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "proxy/pool/server_conn.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/runtime/params.hpp"
#include "proxy/runtime/shared.hpp"

namespace pgshard::session {

using runtime::Params;

// GUC names are case-insensitive: the spelling PostgreSQL reports ("datestyle" -> DateStyle).
std::string canonical_parameter(std::string_view name);
// Reported settings (ParameterStatus) that follow the client from server to server.
bool synced_reported(std::string_view name);

class Settings {
 public:
  // ---- set: at login ----
  // The settings a startup packet asks for (its synced parameters and `options -c`), by
  // PostgreSQL's names, the encoding as ParameterStatus names it. An error message for
  // options pgshard cannot honour.
  static std::optional<std::string> from_startup(
      const std::vector<std::pair<std::string_view, std::string_view>>& startup, Params& wanted);
  // The client's settings as it logs in: the servers' reported ones, then `wanted`, which
  // RESET returns to.
  void start(const Params& server, Params wanted);

  // ---- set: the client's statements ----
  // A routed request changes `changes` (SET, RESET, DISCARD ALL, set_config(…, false)) once
  // it succeeds; `ahead` client ReadyForQuery replies are still owed for requests before it
  // (an error of theirs is not its). `runs` is false for a request that only prepares
  // (Parse/Describe up to a Sync): the statement did not run, so nothing changes (before, a
  // SET prepared on one server and run on another left the first recorded as having it,
  // and the client's later statements there ran without it).
  void statement(const std::vector<router::SettingChange>& changes, int ahead, bool runs);
  // The request called user-defined functions that may change settings pgshard cannot see;
  // `trusted`: every one is known to leave them alone (only the role is checked).
  void functions_called(const std::vector<std::string>& names, bool trusted);
  // An error fails the settings of the statement (or transaction) it belongs to; one with
  // no settings pending must not fail a later SET.
  void failed() { failed_ |= !pending_.empty(); }
  // The server answered ROLLBACK (a ROLLBACK TO SAVEPOINT's tag too: that one undid only
  // what followed its savepoint, as the request's changes said).
  void rolled_back();
  // pgshard ended the transaction itself (COMMIT or ROLLBACK on several shards, or of one
  // no shard saw): its SETs hold when it `committed`, else none does.
  void transaction_ended(bool committed);
  // The server of the pipelined requests was lost: they get no ReadyForQuery from it.
  void drop_pipelined() { pipelined_.clear(); }
  // A reported setting's ParameterStatus after the client's statement on `conn`.
  void reported(pool::ServerConn& conn, std::string_view name, std::string_view value);

  // What the settings check of a request found (ready()).
  struct Checked {
    runtime::SettingsCheck outcome = runtime::SettingsCheck::kUnchanged;
    bool pins = false;                   // a function took another role: keep the servers
    bool full = false;                   // every setting was read (untrusted functions)
    std::vector<std::string> functions;  // called since the last check
  };
  // The client's request got its ReadyForQuery with `status` on `conn`: SETs take effect
  // once their statement (or transaction) succeeded, a failure or ROLLBACK drops them, as
  // PostgreSQL does; a settings check that ran is adopted.
  std::optional<Checked> ready(char status, pool::ServerConn& conn);

  // ---- in a transaction ----
  // A request is about to be written to `conn`: in a transaction (`in_transaction`), the
  // SET and SET LOCAL statements the transaction ran on other servers and `conn` has not
  // (SQL, "" when none): a shard that joins the transaction, or that it comes back to,
  // runs with the transaction's settings as PostgreSQL's one server would. `conn` is
  // recorded as having run them and the request's own; a session setting it ran is not
  // known on `conn` until the transaction's outcome, so the next lending compares it.
  std::string catch_up(pool::ServerConn& conn, bool in_transaction);
  // The client has no transaction and no request in flight: no SET is any transaction's.
  void no_transaction() { end_transaction(); }

  // ---- apply ----
  // The SET/RESET statements bringing `conn` to the client's settings ("" when it has
  // them); `conn` is recorded as having them.
  std::string prelude(pool::ServerConn& conn);
  // pgshard's statement finishing the request (its ReadyForQuery is the client's): RESET
  // of a reported setting back to its startup value, and the settings check when
  // `may_check` (the request runs something, ends at a ReadyForQuery, no servers pinned).
  // "" when none.
  std::string take_finishing_sql(bool may_check);
  // A row of that statement (a setting's name and value, from the check).
  void finishing_row(std::string_view body);
  // `conn` ran DISCARD ALL: it has its defaults again (the reported settings it says).
  static void server_discarded(pool::ServerConn& conn);

  // ---- report ----
  // The ParameterStatus settings the client gets at login: the server's, with the client's
  // reported settings and `user` as session_authorization (each name once).
  Params welcome(const Params& server, const std::string& user) const;
  // The client's settings now.
  const Params& client() const { return client_; }
  std::string_view value(const std::string& name) const {
    auto it = client_.find(name);
    return it == client_.end() ? std::string_view() : std::string_view(it->second);
  }
  uint64_t fingerprint() const { return fingerprint_; }

 private:
  // Takes on the settings of pending_ (their statement succeeded on `conn`, or on the
  // servers of a transaction pgshard committed: null).
  void apply(pool::ServerConn* conn);
  // Adds a request's session changes to pending_: savepoints kept in order, ROLLBACK TO
  // dropping what followed its savepoint, RELEASE forgetting it; SET LOCAL left out.
  void take_pending(const std::vector<router::SettingChange>& changes);
  // The statement running `c` again on another server of the transaction.
  std::string replay_sql(const router::SettingChange& c) const;
  // `conn` ran (or runs) the session change `c`: its value there is unknown until the
  // transaction's outcome is.
  void unknown_on(pool::ServerConn& conn, const router::SettingChange& c) const;
  void end_transaction();
  std::optional<Checked> adopt_check(pool::ServerConn& conn);
  std::string restore_startup_sql(const std::vector<router::SettingChange>& changes) const;
  void changed() { fingerprint_ = runtime::fingerprint(client_); }

  Params client_;
  Params startup_;  // as the client connected: what RESET returns to
  Params sent_;     // the settings the client's startup packet named itself
  uint64_t fingerprint_ = runtime::fingerprint({});
  std::string finish_sql_;
  std::vector<router::SettingChange> pending_;  // SETs awaiting their outcome
  // SETs of requests pipelined behind others still running: they join pending_ once the
  // requests ahead have their ReadyForQuery.
  struct Pipelined {
    int ahead;  // client ReadyForQuery replies still owed for requests before it
    std::vector<router::SettingChange> settings;
  };
  std::deque<Pipelined> pipelined_;
  bool failed_ = false;
  int rollbacks_to_ = 0;  // ROLLBACK TO SAVEPOINT sent, its "ROLLBACK" tag not seen yet
  // The transaction's SET and SET LOCAL, in order, the request being sent's from
  // request_from_ on, and how many of them each of its servers ran (catch_up).
  std::vector<router::SettingChange> txn_changes_;
  std::vector<router::SettingChange> request_changes_;  // the request's, until it is sent
  std::size_t request_from_ = 0;
  std::map<const pool::ServerConn*, std::size_t> caught_up_;
  // Transaction pooling: a statement called a user-defined function, so its server's
  // settings are checked when the request ends (until a check sees the server idle).
  bool unknown_ = false;
  bool checking_ = false;
  bool full_check_ = false;  // one of the functions is not trusted yet
  std::vector<std::pair<std::string, std::string>> checked_;
  std::vector<std::string> checked_functions_;  // called since the last check
  std::set<std::string> from_functions_;        // settings the client got from functions
};

}  // namespace pgshard::session
