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

awaitable<void> run_ddl(Client& c, ReplySink& reply, const std::vector<int>& shards,
                        std::string_view messages) {
  catalog_changed(c);  // what was read of the catalogs may change
  // DDL runs on every shard in shard order and stops at the first failure; the client
  // learns which shards applied it. No transaction wraps it, so CREATE INDEX CONCURRENTLY
  // works as it does on one PostgreSQL.
  if (c.backends().active && !c.session_pooled()) c.release(c.backends().active);
  std::string out;
  std::vector<std::string> applied;
  std::string first_tag;
  std::optional<std::string> error_frame;
  std::string failed_shard;
  std::set<std::string> notices_seen;
  bool retried = false;
  for (std::size_t k = 0; k < shards.size(); ++k) {
    const int shard = shards[k];
    const auto& name = c.config().shards[static_cast<std::size_t>(shard)].name;
    auto got = co_await c.wait_for_server(shard);
    if (auto* err = std::get_if<proto::ErrorInfo>(&got)) {
      std::string e;
      proto::write_error(e, *err);
      error_frame = e;
      failed_shard = name;
      break;
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
    bool ok = !ec &&
              co_await lease->read_replies(
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
                        error_frame = std::string(raw);
                        break;
                      case proto::msg::kNoticeResponse:
                        if (notices_seen.insert(std::string(raw)).second) out.append(raw);
                        break;
                      case proto::msg::kReadyForQuery:
                      case proto::msg::kParameterStatus:
                        break;
                      default:
                        // The first shard's replies stand for all (tags, ParseComplete...).
                        if (applied.empty()) replies.append(raw);
                    }
                    return f.type == proto::msg::kReadyForQuery && lease->replies.empty();
                  });
    if (!ok) {
      pool::report(*lease, pool::ServerFailure::kIoError);
      std::string e;
      proto::write_error(e, proto::error(sqlstate::kConnectionFailure,
                                         "server connection to shard " + name + " was lost"));
      error_frame = e;
      failed = true;
    }
    if (failed && !retried && error_frame && co_await retry_while_connected(c, *error_frame)) {
      retried = true;
      error_frame.reset();
      --k;
      continue;
    }
    if (failed) {
      failed_shard = name;
      break;
    }
    if (applied.empty()) first_tag = replies;
    applied.push_back(name);
  }
  if (error_frame) {
    write_ddl_error(c, shards, *error_frame, applied, failed_shard, out);
  } else {
    out += first_tag;
  }
  reply.end_request(out, c.transaction_status());
  co_await reply.write(out);
}

}  // namespace pgshard::executor
