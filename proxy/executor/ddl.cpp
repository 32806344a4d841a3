// DDL outside a transaction, run on every shard in shard order (run_ddl), and the catalog
// generation it moves on.
#include <atomic>
#include <deque>
#include <set>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/executor/fan_out_parts.hpp"
#include "proxy/pool/server_fate.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

void catalog_changed(Client& c) {
  c.worker().shared().catalog_generation.fetch_add(1);
}

namespace {

// The client's request (`messages`) for every shard's fresh server: a named statement there is
// another client's (transaction pooling) or unknown (the other shards), so each one the request
// parses, binds or describes becomes the unnamed statement, parsed from the client's text
// ahead of its first use. `hidden` gets, per Parse sent, whether its ParseComplete is
// pgshard's (before: the client's name went as it was, and psycopg's prepared DDL failed
// with 'prepared statement "_pg3_1" does not exist').
std::string ddl_request(Client& c, std::string_view messages, std::deque<bool>& hidden) {
  std::string out;
  std::optional<std::string> unnamed_holds;  // the client's statement now in the unnamed one
  // False for a name the client never parsed (the server reports it as PostgreSQL would).
  auto use = [&](std::string_view name) {
    if (unnamed_holds == name) return true;
    if (c.stored_text(name).empty()) return false;
    proto::Parse{"", c.stored_text(name), c.stored_types(name)}.write(out);
    hidden.push_back(true);
    unnamed_holds = std::string(name);
    return true;
  };
  for (const auto m : proto::frames(messages)) {
    const auto& f = m.frame;
    switch (f.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body); p && !p->name.empty()) {
          proto::Parse{"", p->query, p->param_types}.write(out);
          unnamed_holds = std::string(p->name);
        } else {
          out.append(m.raw);
          unnamed_holds.reset();
        }
        hidden.push_back(false);
        continue;
      case proto::msg::kBind:
        if (auto b = proto::Bind::parse(f.body); b && !b->statement.empty() && use(b->statement)) {
          b->statement = "";
          b->write(out);
          continue;
        }
        break;
      case proto::msg::kDescribe:
        if (auto d = proto::Describe::parse(f.body);
            d && d->kind == 'S' && !d->name.empty() && use(d->name)) {
          proto::Describe{'S', ""}.write(out);
          continue;
        }
        break;
      default:
        break;
    }
    out.append(m.raw);
  }
  return out;
}

// The shard's own error, with a detail saying where the statement took effect.
void write_ddl_error(Client& c, const std::vector<int>& shards, std::string_view error_frame,
                     const std::vector<std::string>& applied, const std::string& failed_shard,
                     std::string& out) {
  auto fields = proto::ErrorFields::parse(std::string_view(error_frame).substr(5));
  std::string applied_list, pending_list;
  for (const auto& a : applied) applied_list += (applied_list.empty() ? "" : ", ") + a;
  bool after = false;
  for (int shard : shards) {
    const auto& name = c.config().shards[static_cast<std::size_t>(shard)].name;
    if (name == failed_shard) after = true;
    if (after) pending_list += (pending_list.empty() ? "" : ", ") + name;
  }
  proto::ErrorInfo e = proto::error(
      fields ? fields->code() : sqlstate::kInternalError,
      (fields ? std::string(fields->message()) : std::string("DDL failed")) + " (on shard " +
          failed_shard + ")",
      "applied on shard(s): " + (applied_list.empty() ? std::string("none") : applied_list) +
          "; not applied on: " + pending_list,
      applied.empty() ? std::string()
                      : "repair or undo the statement on the shards that applied it");
  proto::write_error(out, e);
}

// CREATE DATABASE from a template and DROP DATABASE are refused while any session is
// connected to that database (55006), pgshard's idle pooled ones too: those are closed on
// every worker, and (true) the shard is asked once more.
awaitable<bool> retry_while_connected(Client& c, std::string_view error_frame) {
  if (error_frame.size() <= 5) co_return false;
  auto e = proto::ErrorFields::parse(error_frame.substr(5));
  if (!e || e->code() != "55006") co_return false;
  for (auto* w : c.worker().shared().workers)
    asio::post(w->executor(), [w] { w->close_idle_other_databases(); });
  asio::steady_timer pause(co_await asio::this_coro::executor, std::chrono::milliseconds(300));
  co_await pause.async_wait(use_nothrow);
  co_return true;
}

}  // namespace

namespace {

// What the shards DDL ran on have answered so far.
struct DdlRun {
  std::string out;                   // notices, each once, for the client
  std::vector<std::string> applied;  // the shards that applied it
  std::string first_tag;             // the first shard's replies, standing for all
  std::optional<std::string> error_frame;
  std::set<std::string> notices_seen;
};

enum class DdlOutcome { kApplied, kFailed, kNoServer };

// Runs the DDL on `shard` (named `name`); run.error_frame says why it failed.
awaitable<DdlOutcome> ddl_on_shard(Client& c, int shard, const std::string& name,
                                   std::string_view messages, DdlRun& run) {
  auto got = co_await c.wait_for_server(shard);
  if (auto* err = std::get_if<proto::ErrorInfo>(&got)) {
    std::string e;
    proto::write_error(e, *err);
    run.error_frame = e;
    co_return DdlOutcome::kNoServer;
  }
  auto lease = std::move(std::get<pool::Lease>(got));
  std::string batch = c.sync_prelude(*lease);
  std::deque<bool> hidden_parse;
  const std::string request = ddl_request(c, messages, hidden_parse);
  batch += request;
  lease->replies.expect_batch(request, pool::Replies::Owner::kClient);
  auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
  lease->count_sent(n);
  std::string replies;
  bool failed = false;
  bool ok =
      !ec && co_await lease->read_replies(
                 c.config().listen.max_message_size,
                 [&](const proto::Frame& f, std::string_view raw, pool::Replies::Verdict verdict) {
                   if (verdict == pool::Replies::Verdict::kHide) return false;
                   if (f.type == proto::msg::kParseComplete && !hidden_parse.empty()) {
                     const bool ours = hidden_parse.front();
                     hidden_parse.pop_front();
                     if (ours) return false;
                   }
                   switch (f.type) {
                     case proto::msg::kErrorResponse:
                       failed = true;
                       run.error_frame = std::string(raw);
                       break;
                     case proto::msg::kNoticeResponse:
                       if (run.notices_seen.insert(std::string(raw)).second) run.out.append(raw);
                       break;
                     case proto::msg::kReadyForQuery:
                     case proto::msg::kParameterStatus:
                       break;
                     default:
                       // The first shard's replies stand for all (tags, ParseComplete...).
                       if (run.applied.empty()) replies.append(raw);
                   }
                   return f.type == proto::msg::kReadyForQuery && lease->replies.empty();
                 });
  if (!ok) {
    pool::report(*lease, pool::ServerFailure::kIoError);
    std::string e;
    proto::write_error(e, proto::error(sqlstate::kConnectionFailure,
                                       "server connection to shard " + name + " was lost"));
    run.error_frame = e;
    failed = true;
  }
  if (failed) co_return DdlOutcome::kFailed;
  if (run.applied.empty()) run.first_tag = replies;
  run.applied.push_back(name);
  co_return DdlOutcome::kApplied;
}

}  // namespace

awaitable<void> run_ddl(Client& c, ReplySink& reply, const std::vector<int>& shards,
                        std::string_view messages) {
  catalog_changed(c);  // what was read of the catalogs may change
  // DDL runs on every shard in shard order and stops at the first failure; the client
  // learns which shards applied it. No transaction wraps it, so CREATE INDEX CONCURRENTLY
  // works as it does on one PostgreSQL.
  if (c.backends().active && !c.session_pooled()) c.release(c.backends().active);
  DdlRun run;
  std::string failed_shard;
  bool retried = false;
  for (std::size_t k = 0; k < shards.size(); ++k) {
    const int shard = shards[k];
    const auto& name = c.config().shards[static_cast<std::size_t>(shard)].name;
    const DdlOutcome outcome = co_await ddl_on_shard(c, shard, name, messages, run);
    if (outcome == DdlOutcome::kApplied) continue;
    if (outcome == DdlOutcome::kFailed && !retried && run.error_frame) {
      const bool again = co_await retry_while_connected(c, *run.error_frame);
      if (again) {
        retried = true;
        run.error_frame.reset();
        --k;
        continue;
      }
    }
    failed_shard = name;
    break;
  }
  if (run.error_frame) {
    write_ddl_error(c, shards, *run.error_frame, run.applied, failed_shard, run.out);
  } else {
    run.out += run.first_tag;
  }
  reply.end_request(run.out, c.transaction_status());
  co_await reply.write(run.out);
}

}  // namespace pgshard::executor
