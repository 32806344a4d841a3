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
#include <spdlog/spdlog.h>

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

// Who prepared a transaction through pgshard: before its PREPARE TRANSACTION it takes a
// shared transaction-level advisory lock (kOwnerClass, the user's key), which the prepared
// transaction keeps holding; COMMIT/ROLLBACK PREPARED read it back from pg_locks. (Every
// pgshard user may share one server role, so pg_prepared_xacts.owner cannot tell them.)
constexpr uint32_t kOwnerClass = 1885827940;  // "pgsd"

uint32_t owner_key(const std::string& user) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (const unsigned char c : user) h = (h ^ c) * 16777619u;
  return h & 0x7fffffff;
}

}  // namespace

awaitable<int> Session::shard_with_prepared(const std::string& gid, int skip, bool* others) {
  // With whether pgshard marked owners (owner_key) and none of them is this user.
  const std::string sql =
      "SELECT (SELECT pg_catalog.count(*) > 0 AND pg_catalog.bool_and(a.objid <> " +
      std::to_string(owner_key(user_->name)) +
      ") FROM pg_catalog.pg_locks a JOIN pg_catalog.pg_locks t ON t.virtualtransaction = "
      "a.virtualtransaction AND t.locktype = 'transactionid' WHERE a.locktype = 'advisory' AND "
      "a.objsubid = 2 AND a.classid = " +
      std::to_string(kOwnerClass) +
      " AND t.transactionid = p.transaction) FROM pg_catalog.pg_prepared_xacts p WHERE gid = " +
      quote_literal(gid) + " AND database = pg_catalog.current_database()";
  for (int shard = 0; shard < static_cast<int>(config_.shards.size()); ++shard) {
    if (shard == skip) continue;
    std::optional<bool> not_mine;  // set when the shard holds gid
    std::string code;
    const std::string err = co_await executor::run_on_shard(
        *this, shard, sql,
        [&](std::string_view body) {
          auto row = proto::DataRow::parse(body);
          not_mine = row && !row->values.empty() && row->values[0] == "t";
        },
        {}, code);
    if (!err.empty() || !not_mine) continue;
    if (others) *others = *not_mine;
    co_return shard;
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
    bool others = false;
    if (const int shard = co_await shard_with_prepared(route.gid, -1, &others); shard >= 0) {
      if (others) {
        co_await fail(Failure::kRefused,
                      proto::error(sqlstate::kInsufficientPrivilege,
                                   "permission denied to finish prepared transaction",
                                   "Another pgshard user prepared it.",
                                   "Must be the user that prepared the transaction."),
                      req.boundary);
        co_return true;
      }
      route.action = router::Forward{shard};
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
  if (co_await shard_with_prepared(route.gid, home, nullptr) >= 0) {
    co_await fail(Failure::kRefused,
                  proto::error(kDuplicateObject,
                               "transaction identifier \"" + route.gid + "\" is already in use"),
                  req.boundary);
    co_return true;
  }
  if (home >= 0 && backends_.active->lease &&
      backends_.active->lease->status == proto::txn_status::kInBlock) {
    // Marked as this user's (see owner_key) inside the transaction it prepares.
    std::string code;
    const std::string err = co_await executor::run_on_shard(
        *this, home,
        "SELECT pg_catalog.pg_advisory_xact_lock_shared(" + std::to_string(kOwnerClass) + ", " +
            std::to_string(owner_key(user_->name)) + ")",
        [](std::string_view) {}, {}, code);
    if (!err.empty())
      spdlog::warn("{}: marking prepared transaction {} as the user's failed: {}", prefix(),
                   route.gid, err);
  }
  co_return false;
}

awaitable<bool> Session::refuse_split_control(const router::Route& route, const Request& req) {
  // "UPDATE ...; COMMIT" (or PREPARE TRANSACTION, ROLLBACK) sent as one Query would end
  // the transaction only on the shard the Query reaches, while its other shards' parts
  // stayed open, to be committed or lost apart (found from outside): refused before
  // anything runs, failing the transaction as any refusal does.
  const auto* one_shard = std::get_if<router::Forward>(&route.action);
  if (!backends_.in_transaction_besides(one_shard ? one_shard->shard : -1)) co_return false;
  co_await fail(Failure::kRefused,
                proto::error(sqlstate::kFeatureNotSupported,
                             "a Query of several statements that controls a transaction must "
                             "go to the only shard the transaction uses",
                             {}, "send COMMIT, ROLLBACK or PREPARE TRANSACTION on its own"),
                req.boundary);
  co_return true;
}

}  // namespace pgshard::session
