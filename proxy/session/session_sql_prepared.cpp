// SQL-level prepared statements on sharded (or, with several shards, reference) tables (PREPARE
// name AS ..., EXECUTE name(args), DEALLOCATE): the session keeps their text, answers PREPARE and
// DEALLOCATE itself and runs each EXECUTE as the statement with its arguments put in, routed like
// any statement, so the key may be an argument and a read may go to a replica. No server holds
// them.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "protocol/messages.hpp"
#include "proxy/session/batch_route.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

using Op = router::Analysis::SqlPrepareOp;

// The text of the request's Query (a simple-protocol request is one Query).
std::optional<std::string> query_text(std::string_view batch) {
  for (const auto m : proto::frames(batch))
    if (m.frame.type == proto::msg::kQuery)
      if (auto q = proto::Query::parse(m.frame.body)) return std::string(q->sql);
  return std::nullopt;
}

const char* op_name(Op op) {
  switch (op) {
    case Op::kPrepare:
      return "PREPARE";
    case Op::kExecute:
      return "EXECUTE";
    case Op::kDeallocate:
      return "DEALLOCATE";
    case Op::kNone:
      break;
  }
  return "";
}

void answer(router::Route& r, std::string_view tag) {
  std::string& text = r.action.emplace<router::Answer>().text;
  proto::CommandComplete{tag}.write(text);
  r.pins = false;
}

void refuse(router::Route& r, proto::ErrorInfo e) {
  r.action = router::Refuse{std::move(e)};
  r.pins = false;
}

}  // namespace

bool Session::follow_sql_prepared(router::Route& r, bool simple) {
  if (r.sql_prepare == Op::kNone || router::refusal(r)) return false;
  if (r.sql_prepare == Op::kDeallocate && r.sql_prepared.empty()) {
    // DEALLOCATE ALL; DISCARD ALL, which PostgreSQL refuses inside a transaction block
    // (neither runs in a failed one).
    const bool discard = std::any_of(r.settings.begin(), r.settings.end(),
                                     [](const auto& s) { return s.reset_all; });
    const char status = transaction_status();
    if (discard ? status == proto::txn_status::kIdle : status != proto::txn_status::kFailed)
      sql_prepared_.clear();
    return false;
  }
  const auto kept = sql_prepared_.find(r.sql_prepared);
  const std::string name = "prepared statement \"" + r.sql_prepared + "\"";
  if (r.sql_prepare == Op::kPrepare && kept != sql_prepared_.end()) {
    refuse(r, proto::error(sqlstate::kDuplicatePreparedStatement, name + " already exists"));
    return false;
  }
  if (r.sql_prepare == Op::kPrepare ? !r.sql_prepare_held : kept == sql_prepared_.end())
    return false;  // a server's statement: it goes where routed
  if (!simple || !r.sql_prepare_alone) {
    refuse(r, proto::error(sqlstate::kFeatureNotSupported,
                           std::string(op_name(r.sql_prepare)) + " of " + name +
                               " (kept by pgshard) must be a simple Query of its own",
                           {}, "send it alone, not in EXPLAIN or with other statements"));
    return false;
  }
  if (transaction_status() == proto::txn_status::kFailed && r.sql_prepare != Op::kExecute) {
    refuse(r, proto::error(sqlstate::kInFailedSqlTransaction,
                           "current transaction is aborted, commands ignored until end of "
                           "transaction block"));
    return false;
  }
  const auto text = query_text(pending_);
  if (!text) return false;
  switch (r.sql_prepare) {
    case Op::kPrepare:
      sql_prepared_.emplace(r.sql_prepared, *text);
      answer(r, "PREPARE");
      return false;
    case Op::kDeallocate:
      sql_prepared_.erase(kept);
      answer(r, "DEALLOCATE");
      return false;
    default:
      break;
  }
  proto::ErrorInfo error;
  const auto sql = router::sql_executed(kept->second, *text, error);
  if (!sql || !rewrite_statement(pending_, statements_,
                                 [&](std::string_view, const proto::Bind*) { return sql; })) {
    refuse(r, std::move(error));
    return false;
  }
  spdlog::debug("{}: EXECUTE {} as its statement", prefix(), r.sql_prepared);
  return true;
}

}  // namespace pgshard::session
