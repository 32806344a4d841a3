// A client's own two-phase commit: PREPARE TRANSACTION, COMMIT PREPARED and ROLLBACK
// PREPARED sent by the client (XA transaction managers such as pgJDBC's XA data source).
//
// PostgreSQL prepares the whole transaction under the client's identifier. pgshard does so
// when the transaction lives on one shard: PREPARE TRANSACTION reaches that shard as sent,
// and COMMIT/ROLLBACK PREPARED later reach the shard that holds the identifier, wherever
// the client's next server is. A transaction on several shards is refused with 0A000
// before anything is prepared (its parts would otherwise be prepared, committed or rolled
// back apart); the refusal fails the transaction, so its COMMIT rolls every part back.
// Identifiers beginning with "pgshard_" are pgshard's own participants: a client can
// neither take such a name nor finish one.
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::string_view kReservedName = "42939";
constexpr std::string_view kDuplicateObject = "42710";

bool reserved(const std::string& gid) {
  return gid.starts_with("pgshard_");
}

}  // namespace

awaitable<int> Session::shard_with_prepared(const std::string& gid, int skip) {
  const std::string sql =
      "SELECT 1 FROM pg_catalog.pg_prepared_xacts WHERE gid = " + quote_literal(gid) +
      " AND database = pg_catalog.current_database()";
  for (int shard = 0; shard < static_cast<int>(config_.shards.size()); ++shard) {
    if (shard == skip) continue;
    bool found = false;
    std::string code;
    const std::string err = co_await executor::run_on_shard(
        *this, shard, sql, [&](std::string_view) { found = true; }, {}, code);
    if (err.empty() && found) co_return shard;
  }
  co_return -1;
}

awaitable<bool> Session::client_two_phase(router::Route& route, const Request& req) {
  const bool prepare = route.txn == router::TxnControl::kPrepare;
  if (reserved(route.gid)) {
    const auto e =
        prepare ? proto::error(kReservedName,
                               "transaction identifiers beginning with \"pgshard_\" are reserved "
                               "for pgshard's own two-phase commit")
                : proto::error(sqlstate::kInsufficientPrivilege,
                               "prepared transaction \"" + route.gid +
                                   "\" belongs to pgshard's two-phase commit",
                               {}, "pgshard finishes its own prepared transactions");
    co_await fail(Failure::kRefused, e, req.boundary);
    co_return true;
  }
  if (!prepare) {
    // Outside a transaction block it runs where the identifier is (no shard has it: the
    // routed shard answers 42704 itself); inside one, the server refuses it (25001).
    if (transaction_status() != proto::txn_status::kIdle || txn_.state() != txn::State::kIdle)
      co_return false;
    if (const int shard = co_await shard_with_prepared(route.gid, -1); shard >= 0) {
      route.shard = shard;
      route.shards.clear();
    }
    co_return false;
  }
  if (txn_.failed()) {  // rolled back, as PostgreSQL does
    route.txn = router::TxnControl::kRollback;
    co_return false;
  }
  if (backends_.participant_count() > 0) {
    co_await fail(Failure::kRefused,
                  proto::error(sqlstate::kFeatureNotSupported,
                               "PREPARE TRANSACTION in a transaction that uses several shards is "
                               "not supported",
                               {}, "keep a transaction a client prepares itself on one shard"),
                  req.boundary);
    co_return true;
  }
  // The identifier must be unique across the shards, as it is in one PostgreSQL.
  const int home = backends_.active ? backends_.active->shard : -1;
  if (co_await shard_with_prepared(route.gid, home) >= 0) {
    co_await fail(Failure::kRefused,
                  proto::error(kDuplicateObject,
                               "transaction identifier \"" + route.gid + "\" is already in use"),
                  req.boundary);
    co_return true;
  }
  co_return false;
}

awaitable<bool> Session::refuse_split_control(const router::Route& route, const Request& req) {
  // "UPDATE ...; COMMIT" (or PREPARE TRANSACTION, ROLLBACK) sent as one Query would end
  // the transaction only on the shard the Query reaches, while its other shards' parts
  // stayed open, to be committed or lost apart (found from outside): refused before
  // anything runs, failing the transaction as any refusal does.
  const bool one_shard = route.kind == router::RouteKind::kShard && route.shards.size() <= 1;
  if (!backends_.in_transaction_besides(one_shard ? route.shard : -1)) co_return false;
  co_await fail(Failure::kRefused,
                proto::error(sqlstate::kFeatureNotSupported,
                             "a Query of several statements that controls a transaction must "
                             "go to the only shard the transaction uses",
                             {}, "send COMMIT, ROLLBACK or PREPARE TRANSACTION on its own"),
                req.boundary);
  co_return true;
}

}  // namespace pgshard::session
