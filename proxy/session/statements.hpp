// The client's protocol-level prepared statements: their texts and parameter types (for
// routing their Binds and re-preparing them elsewhere), and in transaction pooling their
// mapping onto pgshard's statement names on whichever server the client gets.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "protocol/messages.hpp"
#include "proxy/pool/server_conn.hpp"

namespace pgshard::session {

class Statements {
 public:
  // Text and parameter types of statement `name` ("" is the unnamed one; "" if unknown).
  std::string_view text(std::string_view name) const;
  const std::vector<int32_t>& types(std::string_view name) const;
  const std::string& unnamed() const { return unnamed_; }
  // A Parse the client sent, and a Close of a statement.
  void parsed(std::string_view name, std::string_view query,
              const std::vector<int32_t>& param_types);
  void closed(std::string_view name);
  // pgshard's own unnamed Parse, put ahead of a client's Bind of a statement whose INSERT
  // gets generated keys (the rewritten text with the keys in): its ParseComplete is hidden
  // and it does not replace the client's unnamed statement. Holds for one request.
  void set_injected(std::string sql) { injected_ = std::move(sql); }
  bool injected(std::string_view query) const { return !injected_.empty() && query == injected_; }
  void clear_injected() { injected_.clear(); }
  // Session pooling (no map()): the completion of each Parse and Close of `batch` expected
  // on `conn`, pgshard's own Parse's hidden. Only needed when the batch holds one.
  void expect_injected(std::string_view batch, pool::ServerConn& conn) const;
  bool has_injected() const { return !injected_.empty(); }

  // Transaction pooling: rewrites `batch` so the client's named statements use pgshard's
  // names on `conn`, re-preparing what that server lacks; the replies pgshard causes are
  // expected (hidden or replaced) on the server's queue.
  // `in_block`: the batch runs inside a transaction block (the client's).
  void map(std::string& batch, pool::ServerConn& conn, bool in_block = false);
  // The next map() shows the client its own statements in pg_prepared_statements (its
  // Query or unnamed Parse reads the view).
  void show_own_statements() { own_view_ = true; }
  // pgshard's own messages map() needs sent ahead of the batch, after the batch's replies
  // were pushed (their replies are already expected, first).
  std::string take_prefix() { return std::exchange(prefix_, {}); }

  // `generation` (runtime::Shared::catalog_generation) moves on when DDL ran through
  // pgshard, or a server said a statement's result type changed under it (DDL that
  // bypassed pgshard): statements prepared from then on get new server names, so
  // a client that prepares again gets a fresh plan on every server, as on its own
  // PostgreSQL session (before: another client's statement of the same text, planned
  // against the dropped type, failed with "cache lookup failed for type" or "cached plan
  // must not change result type"); a client's statements prepared before keep their
  // plans, as PostgreSQL keeps them.
  explicit Statements(const std::atomic<uint64_t>& generation) : generation_(&generation) {}
  Statements() : Statements(kNoSchemaChanges) {}

 private:
  static inline const std::atomic<uint64_t> kNoSchemaChanges{0};  // (tests)
  const std::atomic<uint64_t>* generation_;
  // True when `batch` names no statement and needs nothing re-prepared.
  bool plain(std::string_view batch) const;
  void ensure(std::string& out, pool::ServerConn& conn, const std::string& name,
              const std::string& client_name);
  // SQL DEALLOCATE of the client's protocol-level statement `name`: the SQL that frees it on
  // `conn` with PostgreSQL's reply (the server's statement prepared ahead when it lacks
  // it); nullopt when `name` is not one (the statement goes as sent).
  std::optional<std::string> deallocate(pool::ServerConn& conn, const std::string& name);
  // Writes a Parse of the client's unnamed statement; false when it has none.
  bool reparse_unnamed(std::string& out, pool::ServerConn& conn) const;
  void map_parse(std::string& out, pool::ServerConn& conn, std::string_view raw,
                 const std::optional<protocol::Parse>& p);
  // map()'s steps, one per message it rewrites, and what it carries from one message of the
  // batch to the next.
  struct Mapping {
    pool::ServerConn& conn;
    const bool in_block;
    const bool own_view;
    std::string out;              // the batch as it goes to the server
    bool parsed_unnamed = false;  // this batch parses the unnamed statement itself
    bool injected_bind = false;   // the next Bind is the one pgshard's own Parse is for
  };
  void map_parse_message(Mapping& m, std::string_view raw, std::string_view body);
  void map_bind(Mapping& m, std::string_view raw, std::string_view body);
  void map_describe(Mapping& m, std::string_view raw, std::string_view body);
  void map_close(Mapping& m, std::string_view raw, std::string_view body);
  // `last`: the Query ends the batch.
  void map_query(Mapping& m, std::string_view raw, std::string_view body, bool last);

  std::unordered_map<std::string, std::string> texts_;
  std::unordered_map<std::string, std::vector<int32_t>> types_;
  std::unordered_map<std::string, std::string> server_names_;  // client name -> pgshard's
  // The client's view of pg_prepared_statements on `conn`: its named statements under its
  // own names (prepared there first when missing) and its SQL PREPAREd ones.
  std::string own_view_sql(std::string& out, pool::ServerConn& conn);
  // Rewrites `sql` to read own_view_sql() instead of the server's view.
  std::string with_own_view(std::string_view sql, std::string& out, pool::ServerConn& conn);

  std::string unnamed_;
  std::string injected_;
  std::string prefix_;
  bool own_view_ = false;
};

}  // namespace pgshard::session
