// Answers pgshard gives itself: the Answer and Refuse actions, failures as failures.hpp rules
// them, and pg_cancel_backend / pg_terminate_backend of a client's pid.
#include <spdlog/spdlog.h>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

bool Session::lone(const Request& req, const router::Route& route) const {
  // BEGIN/COMMIT/ROLLBACK pgshard may answer itself: a simple Query, or an extended batch
  // of one statement ending with Sync (psycopg 3, asyncpg...).
  if (req.simple) return true;
  if (req.boundary != proto::msg::kSync || route.txn == router::TxnControl::kNone) return false;
  int executes = 0;
  for (const auto m : proto::frames(pending_)) executes += m.frame.type == proto::msg::kExecute;
  return executes == 1;
}

awaitable<void> Session::answer_locally(const router::Route& route, const Request& req) {
  if (!co_await drain()) co_return;
  std::string out;
  const auto* error = router::refusal(route);
  const bool refused = error != nullptr;
  if (refused) {
    spdlog::debug("{}: routing error: {}", prefix(), error->message);
    proto::write_error(out, *error);
    fail_transaction();
  } else if (req.simple) {
    out += std::get<router::Answer>(route.action).text;
    hints_ = route.hints;
  } else {
    answer_extended(std::get<router::Answer>(route.action).text,
                    out);  // ends with ReadyForQuery at a Sync
    hints_ = route.hints;
    if (replicas_) sync_read_token();
    if (req.boundary == proto::msg::kSync) {
      pending_.clear();
      co_await write_client(out);
      co_return;
    }
  }
  if (transaction_status() == proto::txn_status::kIdle) hints_.local = {};
  if (replicas_) sync_read_token();
  if (req.boundary != proto::msg::kFlush)
    end_request(out, transaction_status());
  else if (refused)
    phase_.skip_to_sync();
  pending_.clear();
  co_await write_client(out);
}

awaitable<void> Session::fail(Failure f, std::string message, std::string hint) {
  co_await fail(f, failure_error(f, std::move(message), std::move(hint)), proto::msg::kSync);
}

awaitable<void> Session::fail(Failure f, protocol::ErrorInfo e, char boundary) {
  // What the server has sent the client so far reaches it first.
  if (!co_await drain()) co_return;
  spdlog::info("{}: {}: {}", prefix(), to_string(f), e.message);
  const auto r = rule(f);
  if (r.server && backends_.active && backends_.active->lease)
    pool::report(*backends_.active->lease, *r.server);
  if (r.fatal) {
    e.severity = "FATAL";
    co_await send_fatal(e);
    co_return;
  }
  if (r.fails_transaction) fail_transaction();
  // As PostgreSQL fails a request: an extended batch without Sync skips to the Sync.
  std::string out;
  proto::write_error(out, e);
  if (boundary == proto::msg::kFlush)
    phase_.skip_to_sync();
  else
    end_request(out, transaction_status());
  pending_.clear();
  co_await write_client(out);
}

awaitable<bool> Session::signal_client(const router::Route& route, const Request& req) {
  // pg_terminate_backend(pid) / pg_cancel_backend(pid) of a pid pgshard gave a client: that
  // client (a server's pid goes to the server, as before).
  const auto& call = *route.signal_call;
  int64_t pid = call.pid;
  std::optional<std::string> text;
  bool binary = false;  // the Bind asks for its result in binary (asyncpg)
  for (const auto m : proto::frames(pending_))
    if (m.frame.type == proto::msg::kBind)
      if (auto b = proto::Bind::parse(m.frame.body)) {
        if (call.param > 0) text = router::param_text(*b, call.param, config::KeyType::kInt8);
        binary = !b->result_formats.empty() && b->result_formats[0] == 1;
      }
  if (call.param > 0) {
    if (!text) co_return false;
    pid = std::strtoll(text->c_str(), nullptr, 10);
  }
  if (pid <= 0 || pid > INT32_MAX) co_return false;
  const auto pid32 = static_cast<int32_t>(pid);
  if (call.terminate && pid32 == key_.pid) {
    co_await fail(Failure::kAdminShutdown, "terminating connection due to administrator command");
    co_return true;
  }
  router::Route answer;
  answer.hints = route.hints;
  if (pid32 == key_.pid) {  // cancelling itself: this very statement, as on PostgreSQL
    answer.action = router::Refuse{
        proto::error(sqlstate::kQueryCanceled, "canceling statement due to user request")};
    co_await answer_locally(answer, req);
    co_return true;
  }
  const auto done = runtime::CancelRegistry::instance().signal(pid32, call.terminate, user_->name);
  if (!done) co_return false;
  if (!*done) {
    answer.action = router::Refuse{
        proto::error(sqlstate::kInsufficientPrivilege,
                     std::string("permission denied to ") +
                         (call.terminate ? "terminate" : "cancel") + " process",
                     "Only roles with privileges of the role whose process is being " +
                         std::string(call.terminate ? "terminated" : "canceled") +
                         " or with privileges of the \"pg_signal_backend\" role may " +
                         (call.terminate ? "terminate" : "cancel") + " this process.")};
  } else {
    std::string& text = answer.action.emplace<router::Answer>().text;
    proto::RowDescription desc;
    desc.fields.push_back({call.terminate ? "pg_terminate_backend" : "pg_cancel_backend", 0, 0, 16,
                           1, -1, static_cast<int16_t>(binary ? 1 : 0)});
    desc.write(text);
    proto::DataRow{{std::string_view(binary ? "\x01" : "t", 1)}}.write(text);
    proto::CommandComplete{"SELECT 1"}.write(text);
  }
  co_await answer_locally(answer, req);
  co_return true;
}

}  // namespace pgshard::session
