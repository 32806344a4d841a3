// Multi-shard work besides fan-out (fan_out.cpp): COPY FROM STDIN split by key or copied to
// every shard, and directory lookups.
#include <spdlog/spdlog.h>

#include <functional>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/copy_split.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/pool/server_fate.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/runtime/params.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;
using protocol::quote_literal;

namespace {

struct CopyOutcome {
  bool client_ok = true;
  std::optional<char> stray;  // a non-COPY message arrived mid-COPY
  std::optional<protocol::ErrorInfo> error;
};

}  // namespace

// Writes a COPY frame to a shard still in the COPY; false (and the server discarded) when
// the write failed.
static awaitable<bool> copy_write(pool::Lease& lease, std::string_view frame);
// Streams the client's rows to their shards (`table` null: every row to every shard).
static awaitable<CopyOutcome> copy_stream(Client& c, std::vector<pool::Lease>& leases,
                                          const router::CopySplit& spec,
                                          const config::ShardedTable* table, int key_index);
// Commits pgshard's own transaction on every lease (shard `shards[i]`), all or none; the
// error when it did not commit.
static awaitable<std::optional<protocol::ErrorInfo>> commit_everywhere(
    Client& c, std::vector<pool::Lease>& leases, const std::vector<int>& shards);

namespace {

// COPY FROM STDIN on several shards: every shard opens the same COPY inside a transaction,
// rows are sent to the shard their key names (a sharded table) or to every shard (a
// reference table, or one outside the map under `unsharded: all`), and all shards commit
// (two-phase) only if every one of them accepted its rows.
class CopyIn {
 public:
  CopyIn(Client& c, ReplySink& reply, const router::CopyIn& copy)
      : c_(c),
        reply_(reply),
        spec_(copy.split),
        table_(copy.table >= 0 ? &c.config().sharded_tables[static_cast<std::size_t>(copy.table)]
                               : nullptr),
        shards_(copy.shards),
        max_message_(c.config().listen.max_message_size) {}
  awaitable<void> run();

 private:
  awaitable<void> fail(const proto::ErrorInfo& e);
  // The key's position in each row: from the column list, else the table's definition.
  awaitable<int> key_index();
  // Opens the COPY on every shard; the first shard's CopyInResponse goes to the client.
  awaitable<std::string> open();
  // Collects each shard's outcome, then commits everywhere or nowhere; the rows copied.
  awaitable<uint64_t> finish();
  void note(std::string_view error_body);

  Client& c_;
  ReplySink& reply_;
  const router::CopySplit& spec_;
  const config::ShardedTable* table_;  // null: every row goes to every shard
  const std::vector<int>& shards_;
  const std::size_t max_message_;
  std::vector<pool::Lease> leases_;
  std::optional<proto::ErrorInfo> error_;
  std::string out_;
};

void CopyIn::note(std::string_view body) {
  if (error_) return;
  auto e = proto::ErrorFields::parse(body);
  error_ = proto::error(e ? e->code() : sqlstate::kInternalError,
                        e ? std::string(e->message()) : "malformed error");
}

awaitable<void> CopyIn::fail(const proto::ErrorInfo& e) {
  proto::write_error(out_, e);
  reply_.end_request(out_, c_.transaction_status());
  co_await reply_.write(out_);
}

awaitable<void> CopyIn::run() {
  if (c_.transaction_status() != proto::txn_status::kIdle) {
    c_.fail_transaction();
    co_await fail(proto::error(
        sqlstate::kFeatureNotSupported,
        std::string("COPY into a ") + (table_ ? "sharded table" : "table copied on every shard") +
            " inside a transaction block is not supported yet",
        {}, "run the COPY outside the transaction block: it commits on every shard or on none"));
    co_return;
  }
  if (c_.backends().active && !c_.session_pooled()) c_.release(c_.backends().active);
  for (int shard : shards_) {
    auto got = co_await c_.wait_for_server(shard);
    if (auto* err = std::get_if<proto::ErrorInfo>(&got)) {
      co_await fail(*err);
      co_return;
    }
    leases_.push_back(std::move(std::get<pool::Lease>(got)));
  }
  int key = -1;
  if (table_) key = co_await key_index();
  if (table_ && key < 0) {
    co_await fail(
        proto::error(sqlstate::kUndefinedObject,
                     "cannot find column \"" + table_->column + "\" of table " + spec_.table));
    co_return;
  }
  const std::string copy_in_response = co_await open();
  CopyOutcome outcome;
  if (!error_) {
    // Stream the client's rows to their shards.
    co_await reply_.write(copy_in_response);
    outcome = co_await copy_stream(c_, leases_, spec_, table_, key);
    if (outcome.error && !error_) error_ = outcome.error;
  }
  const uint64_t total = co_await finish();
  if (outcome.stray) {
    co_await c_.copy_violation(*outcome.stray);  // a non-COPY message mid-COPY
    co_return;
  }
  if (!outcome.client_ok) {
    c_.mark_gone();
    co_return;
  }
  if (error_) {
    co_await fail(*error_);
    co_return;
  }
  proto::CommandComplete{"COPY " + std::to_string(total)}.write(out_);
  reply_.end_request(out_, proto::txn_status::kIdle);
  co_await reply_.write(out_);
}

awaitable<int> CopyIn::key_index() {
  if (spec_.key_column >= 0) co_return spec_.key_column;
  int key = -1;
  int index = 0;
  co_await leases_[0]->run_own(
      "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(" +
          quote_literal(spec_.table) + ") AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
      max_message_, [&](std::string_view body) {
        auto row = proto::DataRow::parse(body);
        if (row && !row->values.empty() && row->values[0] == table_->column) key = index;
        ++index;
      });
  co_return key;
}

awaitable<std::string> CopyIn::open() {
  std::string copy_in_response;
  for (auto& lease : leases_) {
    auto& replies = lease->replies;
    std::string batch = c_.sync_prelude(*lease);
    proto::Query{"BEGIN"}.write(batch);
    replies.expect_ready(pool::Replies::Owner::kOwn);
    batch += c_.request();
    replies.expect_ready(pool::Replies::Owner::kClient);
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    lease->count_sent(n);
    const bool ok = co_await lease->read_replies(
        max_message_,
        [&](const proto::Frame& f, std::string_view raw, pool::Replies::Verdict verdict) {
          if (verdict == pool::Replies::Verdict::kHide) return false;
          if (f.type == proto::msg::kReadyForQuery) return true;  // the COPY failed
          if (f.type == proto::msg::kErrorResponse) note(f.body);
          if (f.type == proto::msg::kCopyInResponse) {
            if (copy_in_response.empty()) copy_in_response.assign(raw);
            return true;
          }
          return false;
        });
    if (!ok) {
      pool::report(*lease, pool::ServerFailure::kIoError);
      if (!error_)
        error_ = proto::error(sqlstate::kConnectionFailure, "lost a shard while starting COPY");
    }
  }
  co_return copy_in_response;
}

awaitable<uint64_t> CopyIn::finish() {
  // Split rows: the shards' counts add up. Copied rows: every shard took the same rows, so
  // one count is the stream's.
  uint64_t total = 0;
  bool counted = false;
  for (auto& lease : leases_) {
    if (lease->status != proto::txn_status::kInBlock || lease->broken) continue;
    const bool ok = co_await lease->read_replies(
        max_message_, [&](const proto::Frame& f, std::string_view, pool::Replies::Verdict) {
          if (f.type == proto::msg::kErrorResponse) note(f.body);
          if (f.type == proto::msg::kCommandComplete) {
            auto cc = proto::CommandComplete::parse(f.body);
            if (cc && cc->tag.starts_with("COPY ") && (table_ || !counted))
              total += std::strtoull(std::string(cc->tag.substr(5)).c_str(), nullptr, 10);
            counted = true;
          }
          return f.type == proto::msg::kReadyForQuery;
        });
    if (!ok) {
      pool::report(*lease, pool::ServerFailure::kIoError);
      if (!error_) error_ = proto::error(sqlstate::kConnectionFailure, "lost a shard during COPY");
    }
  }
  for (auto& lease : leases_)
    if (!lease->broken && lease->status == proto::txn_status::kFailed && !error_)
      error_ = proto::error(sqlstate::kInFailedSqlTransaction, "a shard failed the COPY");
  if (!error_) {
    error_ = co_await commit_everywhere(c_, leases_, shards_);
    co_return total;
  }
  for (auto& lease : leases_) {
    if (lease->broken || lease->status == proto::txn_status::kIdle) continue;
    const bool ok = co_await lease->run_own("ROLLBACK", max_message_);
    if (!ok || lease->replies.tag != "ROLLBACK")
      pool::report(*lease, pool::ServerFailure::kInTransaction);
  }
  co_return total;
}

}  // namespace

awaitable<void> copy_in_split(Client& c, ReplySink& out, const router::CopyIn& payload) {
  if (!co_await c.drain()) co_return;
  Waiting waiting(c, "shards (COPY)");
  CopyIn copy(c, out, payload);
  co_await copy.run();
}

static awaitable<bool> copy_write(pool::Lease& lease, std::string_view frame) {
  if (lease->broken || lease->status != proto::txn_status::kInBlock) co_return true;
  auto [ec, n] = co_await asio::async_write(lease->socket(),
                                            asio::buffer(frame.data(), frame.size()), use_nothrow);
  lease->count_sent(n);
  if (!ec) co_return true;
  pool::report(*lease, pool::ServerFailure::kIoError);
  co_return false;
}

namespace {

// copy_stream's state: the rows gathered per shard until a frame's worth, and why the COPY
// ends early (the CopyFail text the shards get, its terminator included).
class CopyStream {
 public:
  CopyStream(Client& c, std::vector<pool::Lease>& leases, const router::CopySplit& spec,
             const config::ShardedTable* table, int key_index)
      : c_(c),
        leases_(leases),
        table_(table),
        shards_(static_cast<int>(c.config().shards.size())),
        splitter_(spec, key_index),
        client_encoding_(spec.client_encoding),
        bufs_(static_cast<std::size_t>(shards_)) {}

  // Rows go to the shard their key names, in CopyData frames of up to 64 kB per shard. A
  // shard that cannot be written to ends the COPY at once for every shard (its locks are
  // not held while the client keeps sending); the client's remaining COPY messages are
  // then ignored by client_loop, as PostgreSQL ignores them after a failed COPY.
  awaitable<CopyOutcome> run() {
    while (!outcome_.error) {
      auto d = proto::decode_frame(c_.input().view(), c_.config().listen.max_message_size);
      if (d.status == proto::DecodeStatus::kNeedMore) {
        if (!co_await c_.read_client()) {
          outcome_.client_ok = false;
          fail_reason_ = std::string_view("client went away\0", 17);
          break;
        }
        continue;
      }
      if (d.status == proto::DecodeStatus::kError) {
        outcome_.client_ok = false;
        fail_reason_ = std::string_view("protocol violation\0", 19);
        break;
      }
      const char type = d.frame.type;
      std::string body(d.frame.body);
      c_.input().consume(d.consumed);
      const auto next = take(type, body);
      if (next == Next::kIgnore) continue;
      if (next == Next::kFail) break;
      co_await send_full(next == Next::kEnd ? 0 : kFrameBytes);
      if (next == Next::kEnd) {
        if (!outcome_.error) co_await send_copy_done();
        break;
      }
    }
    if (outcome_.error && fail_reason_.empty()) fail_reason_ = std::string_view("shard lost\0", 11);
    if (!fail_reason_.empty()) {
      std::string frame;
      proto::MessageWriter(frame).begin(proto::msg::kCopyFail).bytes(fail_reason_).finish();
      for (auto& lease : leases_) co_await copy_write(lease, frame);
    }
    co_return outcome_;
  }

 private:
  static constexpr std::size_t kFrameBytes = 64 * 1024;
  enum class Next { kRows, kEnd, kFail, kIgnore };

  // One client message of the COPY: rows to route, its end, or its failure.
  Next take(char type, const std::string& body) {
    auto route = [this](std::string_view row, const std::optional<std::string>& key, bool header) {
      route_row(row, key, header);
    };
    switch (type) {
      case proto::msg::kCopyData:
        if (table_)
          splitter_.feed(body, route);
        else
          // Copied to every shard: the client's bytes as they are (any format, the header
          // too: each shard reads the stream one PostgreSQL would).
          for (auto& b : bufs_) b.append(body);
        return Next::kRows;
      case proto::msg::kCopyDone:
        if (table_) splitter_.finish(route);
        return Next::kEnd;
      case proto::msg::kCopyFail:
        // The client's message, terminator included; a CopyFail without one still fails
        // the COPY (before: it ended the COPY as CopyDone would, rows unsent).
        fail_reason_ = body.empty() ? std::string(1, '\0') : body;
        return Next::kFail;
      case proto::msg::kFlush:
      case proto::msg::kSync:
        return Next::kIgnore;  // ignored during COPY, as PostgreSQL does
      default:
        outcome_.stray = type;
        fail_reason_ = std::string_view("unexpected message\0", 19);
        return Next::kFail;
    }
  }

  void route_row(std::string_view row, const std::optional<std::string>& key, bool header) {
    if (header) {
      for (auto& b : bufs_) b.append(row);
      return;
    }
    if (outcome_.error) return;
    if (key && !router::key_bytes_as_stored(client_encoding_, *key)) {
      // Its shard is not known from the client's bytes: the whole COPY fails, as a
      // statement by such a key is refused.
      const auto message = router::foreign_key_message(client_encoding_);
      outcome_.error =
          proto::error(sqlstate::kFeatureNotSupported, message, {}, "use client_encoding UTF8");
      fail_reason_ = message + '\0';
      return;
    }
    int shard = 0;  // NULL or invalid keys: shard 0 reports PostgreSQL's own error
    if (key) shard = router::place_key(*table_, *key, shards_).shard.value_or(0);
    bufs_[static_cast<std::size_t>(shard)].append(row);
  }

  // Sends each shard's gathered rows once there are more than `threshold` bytes of them.
  awaitable<void> send_full(std::size_t threshold) {
    std::string frame;
    for (std::size_t i = 0; i < bufs_.size() && !outcome_.error; ++i) {
      if (bufs_[i].empty() || bufs_[i].size() <= threshold) continue;
      frame.clear();
      proto::CopyData{bufs_[i]}.write(frame);
      bufs_[i].clear();
      if (!co_await copy_write(leases_[i], frame)) lost(i);
    }
  }

  awaitable<void> send_copy_done() {
    std::string frame;
    proto::write_empty(frame, proto::msg::kCopyDone);
    for (std::size_t i = 0; i < leases_.size() && !outcome_.error; ++i)
      if (!co_await copy_write(leases_[i], frame)) lost(i);
  }

  void lost(std::size_t i) {
    outcome_.error =
        proto::error(sqlstate::kConnectionFailure, "lost shard " + leases_[i]->target().shard_name +
                                                       " during COPY; nothing was copied");
  }

  Client& c_;
  std::vector<pool::Lease>& leases_;
  const config::ShardedTable* table_;  // null: every row to every shard
  const int shards_;
  CopyRowSplitter splitter_;
  const std::string client_encoding_;
  std::vector<std::string> bufs_;  // per shard: rows not yet sent
  CopyOutcome outcome_;
  std::string fail_reason_;
};

}  // namespace

static awaitable<CopyOutcome> copy_stream(Client& c, std::vector<pool::Lease>& leases,
                                          const router::CopySplit& spec,
                                          const config::ShardedTable* table, int key_index) {
  CopyStream stream(c, leases, spec, table, key_index);
  co_return co_await stream.run();
}

// Ends pgshard's own transaction on a lease with `sql`; a lease that cannot is broken.
static awaitable<void> roll_back(pool::Lease& lease, const std::string& sql, std::size_t max) {
  if (lease->broken) co_return;
  if (!co_await lease->run_own(sql, max)) pool::report(*lease, pool::ServerFailure::kIoError);
}

// Without two-phase commit: COMMIT on one shard after the other; the first that fails
// rolls back those after it when none committed yet.
static awaitable<std::optional<proto::ErrorInfo>> commit_one_by_one(
    Client& c, std::vector<pool::Lease>& leases) {
  const auto max = c.config().listen.max_message_size;
  auto name = [&](std::size_t i) { return leases[i]->target().shard_name; };
  std::string committed;
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (co_await leases[i]->run_own("COMMIT", max) && leases[i]->replies.tag == "COMMIT") {
      committed += (committed.empty() ? "" : ", ") + name(i);
      continue;
    }
    pool::report(*leases[i], pool::ServerFailure::kInTransaction);
    if (committed.empty())
      for (std::size_t j = i + 1; j < leases.size(); ++j)
        co_await roll_back(leases[j], "ROLLBACK", max);
    co_return proto::error(
        sqlstate::kConnectionFailure,
        "COMMIT failed on shard " + name(i) +
            (committed.empty() ? std::string("; nothing was copied")
                               : " after shard(s) " + committed + " committed"),
        {}, committed.empty() ? std::string() : "the shards may now disagree; check and repair");
  }
  co_return std::nullopt;
}

static awaitable<std::optional<proto::ErrorInfo>> commit_everywhere(
    Client& c, std::vector<pool::Lease>& leases, const std::vector<int>& shards) {
  // As a client's transaction on several shards commits (txn/distributed.cpp): PREPARE
  // TRANSACTION everywhere, the decision fsynced to the log, COMMIT PREPARED everywhere; a
  // failure before the decision rolls every shard back, one after it is finished by
  // recovery. With two_phase_commit off, one shard after the other.
  if (!c.config().two_phase_commit || leases.size() < 2)
    co_return co_await commit_one_by_one(c, leases);
  const auto max = c.config().listen.max_message_size;
  auto& shared = c.worker().shared();
  auto name = [&](std::size_t i) { return leases[i]->target().shard_name; };
  auto& decisions = shared.decisions;
  const std::string gid = decisions.prefix() + std::to_string(decisions.generation()) + "_" +
                          std::to_string(shared.next_gid.fetch_add(1));
  auto part = [&](std::size_t i) { return gid + "_" + std::to_string(shards[i]); };
  decisions.begin(gid);  // live: the periodic recovery pass leaves it alone
  struct EndLive {
    runtime::DecisionLog& log;
    const std::string& gid;
    ~EndLive() { log.end(gid); }
  } end_live{decisions, gid};
  std::optional<proto::ErrorInfo> error;
  std::vector<bool> prepared(leases.size(), false);
  for (std::size_t i = 0; i < leases.size() && !error; ++i) {
    const bool ran = co_await leases[i]->run_own("PREPARE TRANSACTION '" + part(i) + "'", max);
    prepared[i] = ran && leases[i]->replies.tag == "PREPARE TRANSACTION";
    if (prepared[i]) continue;
    if (!ran) pool::report(*leases[i], pool::ServerFailure::kIoError);
    error = proto::error(ran && !leases[i]->replies.error_code.empty()
                             ? leases[i]->replies.error_code
                             : std::string(sqlstate::kConnectionFailure),
                         (ran ? leases[i]->replies.error : std::string("connection lost")) +
                             " (shard " + name(i) + "); nothing was copied");
  }
  if (!error && !decisions.commit(gid))
    error = proto::error(sqlstate::kInternalError,
                         "cannot write the two-phase commit log; nothing was copied");
  if (error) {
    for (std::size_t i = 0; i < leases.size(); ++i)
      if (prepared[i])
        co_await roll_back(leases[i], "ROLLBACK PREPARED '" + part(i) + "'", max);
      else if (leases[i]->status != proto::txn_status::kIdle)
        co_await roll_back(leases[i], "ROLLBACK", max);
    ++shared.rolled_back_2pc;
    co_return error;
  }
  ++shared.committed_2pc;
  bool all = true;
  for (std::size_t i = 0; i < leases.size(); ++i) {
    if (co_await leases[i]->run_own("COMMIT PREPARED '" + part(i) + "'", max) &&
        leases[i]->replies.tag == "COMMIT PREPARED")
      continue;
    all = false;
    pool::report(*leases[i], pool::ServerFailure::kInTransaction);
    spdlog::warn("{}: COMMIT PREPARED of {} on shard {} failed ({}); recovery will finish it",
                 c.prefix(), part(i), name(i), leases[i]->replies.error);
  }
  if (all) decisions.done(gid);
  co_return std::nullopt;
}

awaitable<std::string> resolve_directory(Client& c,
                                         const std::vector<std::pair<int, std::string>>& lookups) {
  for (const auto& [table, key] : lookups) {
    const auto& t = c.config().sharded_tables[static_cast<std::size_t>(table)];
    auto got = co_await c.worker().directory_pool(table, c.user()).acquire();
    if (auto* err = std::get_if<std::string>(&got)) co_return *err;
    auto lease = std::move(std::get<pool::Lease>(got));
    std::optional<std::string> shard_name;
    const bool ok = co_await lease->run_own(
        "SELECT shard FROM " + t.directory_table + " WHERE key = " + quote_literal(key),
        c.config().listen.max_message_size, [&](std::string_view body) {
          auto row = proto::DataRow::parse(body);
          if (row && !row->values.empty() && row->values[0])
            shard_name = std::string(*row->values[0]);
        });
    if (!ok) co_return "lost the connection to the directory of table " + t.table;
    const std::string failure = lease->replies.error;
    if (!failure.empty()) co_return "directory lookup for table " + t.table + " failed: " + failure;
    int shard = -1;
    if (shard_name) {
      shard = c.config().shard_index(*shard_name);
      if (shard < 0)
        co_return "the directory of table " + t.table + " puts key " + key +
            " on unknown shard \"" + *shard_name + "\"";
    }
    c.worker().directory().put(table, key, shard, t.directory_ttl);
  }
  co_return std::string();
}

awaitable<std::string> run_on_shard(Client& c, int shard, const std::string& sql,
                                    const std::function<void(std::string_view)>& row,
                                    const std::function<void(std::string_view)>& description,
                                    std::string& code) {
  auto& backends = c.backends();
  std::shared_ptr<pool::Link> link;
  if (c.transaction_status() != proto::txn_status::kIdle) {
    if (backends.active && backends.active->shard == shard)
      link = backends.active;
    else
      link = backends.participant(shard);
  }
  const auto max = c.config().listen.max_message_size;
  const std::string lost =
      "lost the connection to shard " +
      c.config().shards[static_cast<std::size_t>(c.config().host_of(shard).shard)].name;
  code.clear();
  if (link) {
    if (!co_await backends.borrow(link)) {
      code = std::string(sqlstate::kConnectionFailure);
      co_return lost;
    }
    const bool ok = co_await link->lease->run_own(sql, max, row, description);
    std::string failure = link->lease->replies.error;
    code = link->lease->replies.error_code;
    backends.give_back(link);
    if (!ok) {
      code = std::string(sqlstate::kConnectionFailure);
      co_return lost;
    }
    co_return failure;
  }
  // (Not the client's wait_for_server: callers such as PREPARE TRANSACTION's look-up of its
  // identifier read an error as "not on this shard", which a cancelled wait is not.)
  auto& pool = c.worker().pool(shard, c.user());
  auto got = co_await pool.acquire({}, backends.in_transaction_besides(-1));
  if (auto* err = std::get_if<std::string>(&got)) {
    // (Two primaries: refused as a lost shard is, 08006.)
    code = std::string(pool.refusal().empty() ? sqlstate::kSqlclientUnableToEstablish
                                              : sqlstate::kConnectionFailure);
    co_return *err;
  }
  auto lease = std::move(std::get<pool::Lease>(got));
  if (!co_await lease->run_own(sql, max, row, description)) {
    code = std::string(sqlstate::kConnectionFailure);
    co_return lost;
  }
  code = lease->replies.error_code;
  co_return lease->replies.error;
}

namespace {

// Runs pgshard's own query on the first shard: see run_on_shard.
awaitable<std::string> run_on_first_shard(Client& c, const std::string& sql,
                                          const std::function<void(std::string_view)>& row) {
  std::string code;
  co_return co_await run_on_shard(c, 0, sql, row, {}, code);
}

}  // namespace

awaitable<std::string> generate_keys(Client& c, int table, int count,
                                     std::vector<std::string>& keys, const std::string& of) {
  const auto& t = c.config().sharded_tables[static_cast<std::size_t>(table)];
  const std::string& col = of.empty() ? t.column : of;
  const std::string what = of.empty() ? "the shard key" : "the generated column";
  keys.clear();
  const std::string name = quote_literal(t.qualified_name()), column = quote_literal(col);
  // The column's sequence (serial, identity): its values; else the column's default, which
  // may be pgshard.unique_id() (pgshard makes those ids itself) or nextval of a sequence
  // the column does not own.
  bool missing = false;
  std::string default_expr;
  std::string err = co_await run_on_first_shard(
      c,
      "SELECT pg_catalog.nextval(q.s), (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid) "
      "FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid "
      "AND a.attnum = d.adnum WHERE d.adrelid = pg_catalog.to_regclass(" +
          name + ") AND a.attname = " + column +
          ") FROM (SELECT pg_catalog.pg_get_serial_sequence(" + name + ", " + column +
          ") AS s) q, pg_catalog.generate_series(1, " + std::to_string(count) + ")",
      [&](std::string_view body) {
        auto row = proto::DataRow::parse(body);
        if (row && row->values.size() == 2 && row->values[0])
          keys.emplace_back(*row->values[0]);
        else if (row && row->values.size() == 2 && row->values[1])
          default_expr = *row->values[1];
        else
          missing = true;
      });
  if (!err.empty()) co_return "generating values for table " + t.table + " failed: " + err;
  if (keys.empty() && !missing &&
      (default_expr == "pgshard.unique_id()" || default_expr == "pgshard.unique_id_53()")) {
    std::string why;
    const auto node = co_await node_for_ids(c, why);
    if (!node) co_return why;
    for (int i = 0; i < count; ++i) {
      const auto id = c.worker().shared().ids.next(*node, default_expr == "pgshard.unique_id_53()");
      if (!id)
        co_return "pgshard.unique_id_53() needs a node below 64 (this instance's is " +
            std::to_string(*node) + ")";
      keys.push_back(std::to_string(*id));
    }
  } else if (keys.empty() && !missing && default_expr.find("nextval(") != std::string::npos) {
    // DEFAULT nextval('some_seq'): the default itself, evaluated on the sequence's home.
    err = co_await run_on_first_shard(c,
                                      "SELECT " + default_expr +
                                          " FROM pg_catalog.generate_series(1, " +
                                          std::to_string(count) + ")",
                                      [&](std::string_view body) {
                                        auto row = proto::DataRow::parse(body);
                                        if (row && row->values.size() == 1 && row->values[0])
                                          keys.emplace_back(*row->values[0]);
                                      });
    if (!err.empty()) co_return "generating values for table " + t.table + " failed: " + err;
  }
  if (keys.size() != static_cast<std::size_t>(count))
    co_return what + " \"" + col + "\" of table " + t.table +
        " has no sequence, identity or pgshard.unique_id() default to generate it from: set "
        "it in the INSERT";
  co_return std::string();
}

awaitable<std::optional<int>> node_for_ids(Client& c, std::string& why) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int waited = 0;; waited += 20) {
    if (auto node = c.worker().shared().ids.current_node(c.config())) co_return node;
    if (waited >= 3000) break;
    timer.expires_after(std::chrono::milliseconds(20));
    co_await timer.async_wait(use_nothrow);
  }
  why =
      "pgshard.unique_id(): this instance holds no node id (set node_id, or let it lease one "
      "from shard " +
      c.config().shards.front().name + ", which it cannot now)";
  co_return std::nullopt;
}

awaitable<void> declare_unique_id(Client& c) {
  if (c.worker().shared().unique_id_declared.load(std::memory_order_relaxed)) co_return;
  // Declared on every shard so statements naming them prepare, describe and take them as a
  // column default there; called on a shard directly (not through pgshard) they fail.
  static const std::string kDeclare =
      "DO $pgshard$ DECLARE f text; BEGIN "
      "CREATE SCHEMA IF NOT EXISTS pgshard; "
      "FOREACH f IN ARRAY ARRAY['unique_id', 'unique_id_53'] LOOP "
      "IF pg_catalog.to_regprocedure('pgshard.' || f || '()') IS NULL THEN "
      "EXECUTE pg_catalog.format('CREATE FUNCTION pgshard.%I() RETURNS bigint LANGUAGE plpgsql "
      "VOLATILE AS $f$BEGIN RAISE EXCEPTION ''pgshard.%s() is computed by pgshard: run the "
      "statement through pgshard'' USING ERRCODE = ''0A000''; END$f$', f, f); "
      "END IF; END LOOP; "
      "EXCEPTION WHEN duplicate_schema OR duplicate_function OR unique_violation THEN NULL; "
      "END $pgshard$";
  bool all = true;
  for (std::size_t shard = 0; shard < c.config().shards.size(); ++shard) {
    auto got = co_await c.worker().pool(static_cast<int>(shard), c.user()).acquire();
    if (std::holds_alternative<std::string>(got)) {
      all = false;
      continue;
    }
    auto lease = std::move(std::get<pool::Lease>(got));
    if (!co_await lease->run_own(kDeclare, c.config().listen.max_message_size,
                                 [](std::string_view) {})) {
      pool::report(*lease, pool::ServerFailure::kIoError);
      all = false;
    } else if (!lease->replies.error.empty()) {
      spdlog::warn("{}: declaring pgshard.unique_id() on shard {} failed: {}", c.prefix(),
                   c.config().shards[shard].name, lease->replies.error);
      all = false;
    }
  }
  if (all) c.worker().shared().unique_id_declared.store(true, std::memory_order_relaxed);
}

awaitable<std::string> resolve_columns(Client& c, const std::vector<int>& tables) {
  for (int table : tables) {
    const auto& t = c.config().sharded_tables[static_cast<std::size_t>(table)];
    int index = 0, key = -1;
    std::vector<router::GeneratedColumn> generated;
    // Each column, and whether its values come from a sequence (serial, identity, a nextval
    // default) or pgshard.unique_id(): such columns other than the key get their values
    // from the sequence's home, unique across shards.
    const std::string err = co_await run_on_first_shard(
        c,
        "SELECT a.attname, a.attidentity, pg_catalog.pg_get_expr(d.adbin, d.adrelid) "
        "FROM pg_catalog.pg_attribute a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = "
        "a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = pg_catalog.to_regclass(" +
            quote_literal(t.qualified_name()) +
            ") AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [&](std::string_view body) {
          auto row = proto::DataRow::parse(body);
          if (!row || row->values.size() != 3 || !row->values[0]) return;
          const std::string_view name = *row->values[0];
          const std::string_view identity = row->values[1].value_or("");
          const std::string_view expr = row->values[2].value_or("");
          if (name == t.column) {
            key = index;
          } else if (identity == "a" || identity == "d" ||
                     expr.find("nextval(") != std::string_view::npos ||
                     expr == "pgshard.unique_id()" || expr == "pgshard.unique_id_53()") {
            generated.push_back({std::string(name), index, identity == "a"});
          }
          ++index;
        });
    if (!err.empty()) co_return "reading the columns of table " + t.table + " failed: " + err;
    c.worker().columns().put(t.qualified_name(), key, std::move(generated));
  }
  co_return std::string();
}

}  // namespace pgshard::executor
