// Protocol-level prepared statements in transaction pooling. A client's statement may be
// bound on any server of the pool, so statement names are pgshard's own — one per distinct
// query text and parameter types, shared by every client — and a server that lacks one
// gets its Parse first, transparently. The replies pgshard causes are hidden (each message
// pushes what to do with its reply on the server's queue, pool::Replies); the client sees
// exactly what one PostgreSQL would send.
#include "proxy/session/statements.hpp"

#include <atomic>
#include <cctype>
#include <functional>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/runtime/params.hpp"

namespace pgshard::session {

namespace proto = protocol;
using Owner = pool::Replies::Owner;
using Action = pool::Replies::Action;

namespace {

// Server-side statements each server keeps at most; the least recently used go first.
constexpr std::size_t kPreparedPerServer = 500;
// A name no statement has: Close of it is answered CloseComplete and changes nothing.
constexpr std::string_view kNoStatement = "pgshard_none";

// The catalog generation is part of every server name prepared after DDL (see
// Statements::Statements).
std::string server_name(std::string_view sql, const std::vector<int32_t>& types,
                        uint64_t generation) {
  std::string key(sql);
  for (int32_t t : types) key += "," + std::to_string(t);
  char buf[96];
  if (generation == 0)
    std::snprintf(buf, sizeof(buf), "pgshard_%016zx_%zu", std::hash<std::string>{}(key),
                  sql.size());
  else
    std::snprintf(buf, sizeof(buf), "pgshard_%016zx_%zu_g%llu", std::hash<std::string>{}(key),
                  sql.size(), static_cast<unsigned long long>(generation));
  return buf;
}

// DISCARD ALL, DEALLOCATE [PREPARE] ALL: the statement alone, any case and spacing.
enum class DropAll { kNone, kDiscard, kDeallocate };
DropAll drop_all_kind(std::string_view sql) {
  std::string words;
  for (char c : sql) {
    if (c == ';') break;
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!words.empty() && words.back() != ' ') words.push_back(' ');
    } else {
      words.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    }
  }
  while (!words.empty() && words.back() == ' ') words.pop_back();
  if (words == "discard all") return DropAll::kDiscard;
  if (words == "deallocate all" || words == "deallocate prepare all") return DropAll::kDeallocate;
  return DropAll::kNone;
}

// Whether `sql` (DISCARD ALL, DEALLOCATE ALL) drops the statements of `conn` when it runs
// there now (`in_block`: in the client's transaction): neither runs in a failed
// transaction, and DISCARD ALL refuses to run in a transaction block. (Taken for done when it
// did not, pgshard would prepare again a name the server still has: 42P05 for whichever
// client came next.)
bool runs_drop_all(std::string_view sql, const pool::ServerConn& conn, bool in_block) {
  const DropAll kind = drop_all_kind(sql);
  if (kind == DropAll::kNone || conn.status == proto::txn_status::kFailed) return false;
  return kind == DropAll::kDeallocate || (!in_block && conn.status == proto::txn_status::kIdle);
}

// DEALLOCATE [PREPARE] name (alone, maybe with a trailing semicolon): the name as
// PostgreSQL resolves it (unquoted names fold to lower case). nullopt for anything else.
std::optional<std::string> deallocated_name(std::string_view sql) {
  std::size_t i = 0;
  auto skip_space = [&] {
    while (i < sql.size() && std::isspace(static_cast<unsigned char>(sql[i]))) ++i;
  };
  auto word = [&] {
    std::string w;
    while (i < sql.size() &&
           (std::isalnum(static_cast<unsigned char>(sql[i])) || sql[i] == '_' || sql[i] == '$'))
      w.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(sql[i++]))));
    return w;
  };
  skip_space();
  if (word() != "deallocate") return std::nullopt;
  skip_space();
  std::string name;
  if (i < sql.size() && sql[i] == '"') {
    for (++i;; ++i) {
      if (i >= sql.size()) return std::nullopt;
      if (sql[i] == '"') {
        if (i + 1 < sql.size() && sql[i + 1] == '"') {
          name.push_back('"');
          ++i;
          continue;
        }
        ++i;
        break;
      }
      name.push_back(sql[i]);
    }
  } else {
    name = word();
    if (name == "prepare") {
      skip_space();
      return deallocated_name("deallocate " + std::string(sql.substr(i)));
    }
  }
  skip_space();
  if (i < sql.size() && sql[i] == ';') ++i;
  skip_space();
  if (name.empty() || name == "all" || i != sql.size()) return std::nullopt;
  return name;
}

// DISCARD ALL and DEALLOCATE are checked by map(); other statements pass as they are.
bool may_drop_statements(std::string_view sql) {
  const auto start = sql.find_first_not_of(" \t\r\n\f\v");
  return start != std::string_view::npos && (sql[start] | 0x20) == 'd';
}

}  // namespace

bool Statements::plain(std::string_view batch) const {
  // Nothing named and nothing to re-parse (most traffic): the batch can go as it is, with
  // no entries (replies to unnamed Parse/Close are relayed because the request's
  // ReadyForQuery entry, not one of theirs, is at the front of the queue).
  bool parsed = false;
  for (const auto m : proto::frames(batch)) {
    const auto& f = m.frame;
    // Each message body starts with its first name (Bind: portal then statement).
    switch (f.type) {
      case proto::msg::kParse:
        parsed = true;
        if (f.body.empty() || f.body[0] != '\0' || may_drop_statements(f.body.substr(1)))
          return false;
        break;
      case proto::msg::kBind: {
        auto nul = f.body.find('\0');
        if (nul == std::string_view::npos || nul + 1 >= f.body.size() || f.body[nul + 1] != '\0' ||
            (!parsed && !unnamed_.empty()))
          return false;
        break;
      }
      case proto::msg::kDescribe:
        if (f.body.size() >= 2 && f.body[0] == 'S' &&
            (f.body[1] != '\0' || (!parsed && !unnamed_.empty())))
          return false;
        break;
      case proto::msg::kClose:
        if (f.body.size() >= 2 && f.body[0] == 'S' && f.body[1] != '\0') return false;
        break;
      case proto::msg::kQuery:
        if (may_drop_statements(f.body)) return false;
        break;
      default:
        break;
    }
  }
  return true;
}

void Statements::ensure(std::string& out, pool::ServerConn& conn, const std::string& name,
                        const std::string& client_name) {
  // Prepares `name` on this server when it lacks it; the ParseComplete is hidden.
  if (conn.prepared.has(name) || !texts_.contains(client_name)) return;
  if (auto evicted = conn.prepared.add(name, kPreparedPerServer)) {
    proto::Close{'S', *evicted}.write(out);
    conn.replies.expect_close(Owner::kClient, Action::kHide);
  }
  proto::Parse{name, text(client_name), types(client_name)}.write(out);
  conn.replies.expect_parse(Owner::kClient, Action::kHide, name);
}

void Statements::map_parse(std::string& out, pool::ServerConn& conn, std::string_view raw,
                           const std::optional<proto::Parse>& p) {
  if (!p || p->name.empty()) {
    out.append(raw);
    conn.replies.expect_parse(Owner::kClient, Action::kForward);
    return;
  }
  std::string name =
      server_name(p->query, p->param_types, generation_->load(std::memory_order_relaxed));
  server_names_[std::string(p->name)] = name;
  if (conn.prepared.has(name)) {
    // Already prepared here: the client still gets its ParseComplete.
    proto::Close{'S', kNoStatement}.write(out);
    conn.replies.expect_close(Owner::kClient, Action::kAsParseComplete);
    return;
  }
  if (auto evicted = conn.prepared.add(name, kPreparedPerServer)) {
    proto::Close{'S', *evicted}.write(out);
    conn.replies.expect_close(Owner::kClient, Action::kHide);
  }
  proto::Parse{name, p->query, p->param_types}.write(out);
  conn.replies.expect_parse(Owner::kClient, Action::kForward, name);
}

std::optional<std::string> Statements::deallocate(pool::ServerConn& conn, const std::string& name) {
  // SQL DEALLOCATE of the client's protocol-level statement: the client's name goes, and so
  // does pgshard's statement on this server (other clients prepare it again when they need
  // it), so the client gets PostgreSQL's DEALLOCATE reply.
  auto it = server_names_.find(name);
  if (it == server_names_.end()) return std::nullopt;  // SQL PREPAREd or unknown
  const std::string server = it->second;
  server_names_.erase(it);
  if (!conn.prepared.has(server)) {
    // Prepared here first (its own Sync, ahead of the client's batch) so DEALLOCATE finds it.
    proto::Parse{server, text(name), types(name)}.write(prefix_);
    conn.replies.expect_parse(Owner::kOwn, Action::kHide);
    proto::write_empty(prefix_, proto::msg::kSync);
    conn.replies.expect_ready(Owner::kOwn);
  }
  conn.prepared.erase(server);
  texts_.erase(name);
  types_.erase(name);
  return "DEALLOCATE " + server;
}

bool Statements::reparse_unnamed(std::string& out, pool::ServerConn& conn) const {
  // The client's unnamed statement may have been parsed on another server (or replaced by
  // another client's on this one): parse it again, hiding the ParseComplete.
  if (unnamed_.empty()) return false;
  proto::Parse{"", unnamed_, types("")}.write(out);
  conn.replies.expect_parse(Owner::kClient, Action::kHide);
  return true;
}

std::string Statements::own_view_sql(std::string& out, pool::ServerConn& conn) {
  // SQL PREPAREd statements pin the client's server: those on it are the client's. The
  // protocol-level ones are pgshard's, shared by clients: only the client's, by its names.
  std::string values;
  for (const auto& [client, server] : server_names_) {
    ensure(out, conn, server, client);
    values += (values.empty() ? "(" : ", (") + protocol::quote_literal(server) + ", " +
              protocol::quote_literal(client) + ")";
  }
  std::string sql = "SELECT * FROM pg_catalog.pg_prepared_statements WHERE from_sql";
  if (!values.empty())
    sql =
        "SELECT m.name, p.statement, p.prepare_time, p.parameter_types, p.from_sql, "
        "p.generic_plans, p.custom_plans FROM pg_catalog.pg_prepared_statements p JOIN "
        "(VALUES " +
        values + ") m(server_name, name) ON p.name = m.server_name UNION ALL " + sql;
  return sql;
}

std::string Statements::with_own_view(std::string_view sql, std::string& out,
                                      pool::ServerConn& conn) {
  const std::string view = own_view_sql(out, conn);
  auto rewritten = router::with_own_prepared_statements(sql, view);
  return rewritten ? *rewritten : std::string(sql);
}

void Statements::map(std::string& batch, pool::ServerConn& conn, bool in_block) {
  const bool own_view = std::exchange(own_view_, false);
  if (!own_view && injected_.empty() && plain(batch)) return;
  Mapping m{conn, in_block, own_view, {}};
  m.out.reserve(batch.size() + 64);
  for (std::string_view rest = batch; !rest.empty();) {
    auto d = proto::decode_frame(rest);
    if (d.status != proto::DecodeStatus::kFrame) {
      m.out.append(rest);
      break;
    }
    const std::string_view raw = rest.substr(0, d.consumed);
    rest.remove_prefix(d.consumed);
    const std::string_view body = d.frame.body;
    switch (d.frame.type) {
      case proto::msg::kParse:
        map_parse_message(m, raw, body);
        break;
      case proto::msg::kBind:
        map_bind(m, raw, body);
        break;
      case proto::msg::kDescribe:
        map_describe(m, raw, body);
        break;
      case proto::msg::kClose:
        map_close(m, raw, body);
        break;
      case proto::msg::kQuery:
        map_query(m, raw, body, rest.empty());
        break;
      default:
        m.out.append(raw);
    }
  }
  batch = std::move(m.out);
}

void Statements::map_parse_message(Mapping& m, std::string_view raw, std::string_view body) {
  auto& out = m.out;
  auto& conn = m.conn;
  auto p = proto::Parse::parse(body);
  if (p && p->name.empty() && injected(p->query)) {
    // pgshard's Parse for the Bind after it; a later Bind of the client's unnamed
    // statement parses that again.
    out.append(raw);
    conn.replies.expect_parse(Owner::kClient, Action::kHide);
    m.parsed_unnamed = true;
    m.injected_bind = true;
    return;
  }
  if (p && p->name.empty()) m.parsed_unnamed = true;
  // DEALLOCATE / DISCARD ALL as an unnamed statement (psycopg sends its maintenance
  // this way): the statements go when its Bind runs it (below), on that server — in
  // transaction pooling maybe not this one, which keeps its statements.
  const bool drops_all = p && p->name.empty() && drop_all_kind(p->query) != DropAll::kNone;
  if (auto name = p && p->name.empty() && !drops_all ? deallocated_name(p->query) : std::nullopt;
      name && out.empty()) {
    if (auto sql = deallocate(conn, *name)) {
      proto::Parse{"", *sql, p->param_types}.write(out);
      conn.replies.expect_parse(Owner::kClient, Action::kForward);
      return;
    }
  }
  if (m.own_view && p) {
    // A statement reading pg_prepared_statements sees the client's names.
    const std::string sql = with_own_view(p->query, out, conn);
    const proto::Parse own{p->name, sql, p->param_types};
    if (!p->name.empty()) {
      map_parse(out, conn, raw, own);
      return;
    }
    own.write(out);
    conn.replies.expect_parse(Owner::kClient, Action::kForward);
    return;
  }
  map_parse(out, conn, raw, p);
}

void Statements::map_bind(Mapping& m, std::string_view raw, std::string_view body) {
  auto& out = m.out;
  auto& conn = m.conn;
  auto b = proto::Bind::parse(body);
  if (b && b->statement.empty() && !m.parsed_unnamed) m.parsed_unnamed = reparse_unnamed(out, conn);
  if (b && b->statement.empty() && runs_drop_all(unnamed_, conn, m.in_block)) {
    conn.prepared.clear();
    server_names_.clear();
  }
  if (std::exchange(m.injected_bind, false)) {
    out.append(raw);
    m.parsed_unnamed = false;
    return;
  }
  auto known = b ? server_names_.find(std::string(b->statement)) : server_names_.end();
  if (!b || b->statement.empty() || known == server_names_.end()) {
    out.append(raw);  // unknown names reach PostgreSQL, which reports them
    return;
  }
  ensure(out, conn, known->second, known->first);
  b->statement = known->second;
  b->write(out);
}

void Statements::map_describe(Mapping& m, std::string_view raw, std::string_view body) {
  auto& out = m.out;
  auto& conn = m.conn;
  auto dsc = proto::Describe::parse(body);
  if (dsc && dsc->kind == 'S' && dsc->name.empty() && !m.parsed_unnamed)
    m.parsed_unnamed = reparse_unnamed(out, conn);  // psql's \gdesc
  auto known =
      dsc && dsc->kind == 'S' ? server_names_.find(std::string(dsc->name)) : server_names_.end();
  if (known == server_names_.end() || dsc->name.empty()) {
    out.append(raw);
    return;
  }
  ensure(out, conn, known->second, known->first);
  proto::Describe{'S', known->second}.write(out);
}

void Statements::map_close(Mapping& m, std::string_view raw, std::string_view body) {
  auto& out = m.out;
  auto& conn = m.conn;
  auto c = proto::Close::parse(body);
  if (c && c->kind == 'S' && !c->name.empty()) {
    // Other clients may use the server's statement: only the client's name goes.
    server_names_.erase(std::string(c->name));
    proto::Close{'S', kNoStatement}.write(out);
  } else {
    out.append(raw);
  }
  conn.replies.expect_close(Owner::kClient, Action::kForward);
}

void Statements::map_query(Mapping& m, std::string_view raw, std::string_view body, bool last) {
  auto& out = m.out;
  auto& conn = m.conn;
  if (auto q = proto::Query::parse(body); q && m.own_view) {
    // Statements the server lacks are prepared ahead, with their own Sync.
    std::string parses;
    proto::Query{with_own_view(q->sql, parses, conn)}.write(out);
    if (!parses.empty()) {
      proto::write_empty(parses, proto::msg::kSync);
      conn.replies.expect_ready(Owner::kOwn);
      prefix_ += parses;
    }
    return;
  }
  // DISCARD ALL / DEALLOCATE ALL drop every statement of the server, ours too.
  if (auto q = proto::Query::parse(body); q && runs_drop_all(q->sql, conn, m.in_block)) {
    conn.prepared.clear();
    server_names_.clear();
  } else if (auto name = q ? deallocated_name(q->sql) : std::nullopt) {
    // (Alone in its batch: pgshard's prefix goes ahead of it.)
    if (out.empty() && last) {
      if (auto sql = deallocate(conn, *name)) {
        proto::Query{*sql}.write(out);
        return;
      }
    }
  }
  out.append(raw);
}

std::string_view Statements::text(std::string_view name) const {
  if (name.empty()) return unnamed_;
  auto it = texts_.find(std::string(name));
  return it == texts_.end() ? std::string_view() : std::string_view(it->second);
}

const std::vector<int32_t>& Statements::types(std::string_view name) const {
  static const std::vector<int32_t> kNone;
  auto it = types_.find(std::string(name));
  return it == types_.end() ? kNone : it->second;
}

void Statements::expect_injected(std::string_view batch, pool::ServerConn& conn) const {
  for (const auto m : proto::frames(batch)) {
    if (m.frame.type == proto::msg::kParse) {
      auto p = proto::Parse::parse(m.frame.body);
      conn.replies.expect_parse(Owner::kClient, p && p->name.empty() && injected(p->query)
                                                    ? Action::kHide
                                                    : Action::kForward);
    } else if (m.frame.type == proto::msg::kClose) {
      conn.replies.expect_close(Owner::kClient, Action::kForward);
    }
  }
}

void Statements::parsed(std::string_view name, std::string_view query,
                        const std::vector<int32_t>& param_types) {
  // The unnamed statement is re-parsed by most drivers for every query: keep it without a
  // map insert (assign reuses the buffer).
  if (name.empty()) {
    if (injected(query)) return;
    unnamed_.assign(query);
    if (!param_types.empty() || types_.contains("")) types_[""] = param_types;
    return;
  }
  texts_[std::string(name)] = std::string(query);
  types_[std::string(name)] = param_types;
}

void Statements::closed(std::string_view name) {
  texts_.erase(std::string(name));
  types_.erase(std::string(name));
}

}  // namespace pgshard::session
