// One client session (session.hpp): its making, its log prefix, and what the admin console
// and the SIGUSR2 dump see of it. Its work is in session_*.cpp, a file per responsibility.
#include "proxy/session/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "proxy/runtime/worker.hpp"

namespace pgshard::session {

const char* to_string(Session::State s) {
  switch (s) {
    case Session::State::kStartup:
      return "startup";
    case Session::State::kAuth:
      return "auth";
    case Session::State::kReady:
      return "ready";
    case Session::State::kClosing:
      return "closing";
  }
  return "?";
}

Session::Session(runtime::Worker& worker, tcp::socket socket, uint64_t id)
    : worker_(worker),
      buffered_total_(worker.shared().buffered),
      config_(worker.config()),
      stream_(std::move(socket)),
      id_(id),
      backends_(worker.executor()),
      drained_(worker.executor()),
      aborted_(worker.executor()),
      cancels_landed_(worker.executor()),
      client_write_done_(worker.executor()),
      server_write_done_(worker.executor()),
      idle_timer_(worker.executor()) {
  error_code ec;
  auto ep = stream_.socket().remote_endpoint(ec);
  // A Unix socket (the in-process tests' socketpair) reads as port 0, which no TCP peer has.
  peer_ = ec               ? "?"
          : ep.port() == 0 ? "unix"
                           : ep.address().to_string() + ":" + std::to_string(ep.port());
  stream_.socket().set_option(tcp::no_delay(true), ec);
  enable_drained_reads(stream_.socket());
}

Session::~Session() {
  worker_.parked_relays().unpark(*this);  // (its relay's frames go with next_relay_)
  if (key_.pid) runtime::CancelRegistry::instance().remove(key_);
  worker_.shared().clients--;
  buffered_total_ -= charged_;
  if (counted_) worker_.shared().logged_in--;
}

const std::string& Session::prefix() const {
  // Built once per state change, so a log call on the data path formats nothing extra.
  if (prefix_.empty() || (user_ && !prefix_has_user_)) {
    prefix_ =
        "C-" + std::to_string(id_) + ": " + (user_ ? user_->name + "@" : std::string()) + peer_;
    prefix_has_user_ = user_ != nullptr;
  }
  return prefix_;
}

awaitable<void> Session::serve() {
  try {
    co_await run();
  } catch (const std::exception& e) {
    spdlog::error("{}: session failed: {}", prefix(), e.what());
  }
  stream_.close();
}

std::string Session::describe() const {
  std::string out = prefix() + ": " + to_string(state_) + ", waiting on " + waiting_on_ +
                    ", in flight " + std::to_string(owed()) + ", " + to_string(phase_.phase()) +
                    ", txn " + transaction_status() + " (" + txn::to_string(txn_.state()) + ")";
  if (backends_.active && backends_.active->lease)
    out += ", server S-" + std::to_string(backends_.active->lease->id()) + " (" +
           config_.shards[static_cast<std::size_t>(shard_of_target(backends_.active->shard))].name +
           ", " + backends_.active->lease->status + ")";
  out += ", kept " + std::to_string(backends_.kept_count()) + ", txn servers " +
         std::to_string(backends_.participant_count());
  out += ", relays " + std::to_string(relays_) +
         (relays_ > 0 ? std::string(" (") + relay_at_ + " S-" + std::to_string(relay_server_) + ")"
                      : "") +
         (writing_server_ ? ", writing to a server" : "") +
         (client_writing_ ? ", writing to the client" : "") + (aborting_ ? ", aborting" : "");
  for (const auto& link : backends_.all()) {
    if (!link->lease) continue;
    out += ", S-" + std::to_string(link->lease->id()) + " (fd " +
           std::to_string(link->lease->socket().is_open() ? link->lease->socket().native_handle()
                                                          : -1) +
           ", " + config_.shards[static_cast<std::size_t>(shard_of_target(link->shard))].name +
           ", " + link->lease->status + (link->borrowed ? ", lent" : "") +
           (link->parked ? ", parked" : "") + (link->done ? ", done" : "") +
           (link->closing ? ", closing" : "") + ")";
  }
  return out;
}

runtime::ClientRow Session::client_row() const {
  runtime::ClientRow r;
  r.id = id_;
  r.user = user_ ? user_->name : std::string(identity_.startup.param("user"));
  r.database = identity_.database;
  const bool busy = owed() > 0 || backends_.active || backends_.participant_count() > 0 ||
                    !fan_out_servers_.empty();
  // Waiting for a pooled server, as PgBouncer's cl_waiting (its wait in `wait_us`).
  r.state = state_ != State::kReady ? (state_ == State::kClosing ? "closing" : "login")
            : pool_waiting_         ? "waiting"
            : busy                  ? "active"
                                    : "idle";
  if (pool_waiting_) r.wait_us = pool::micros_since(pool_waiting_->since);
  if (auto colon = peer_.rfind(':'); colon != std::string::npos) {
    r.addr = peer_.substr(0, colon);
    r.port = static_cast<uint16_t>(std::atoi(peer_.c_str() + colon + 1));
  }
  r.application_name = std::string(settings_.value("application_name"));
  r.tls = stream_.tls();
  r.txn = transaction_status();
  r.waiting_on = waiting_on_;
  r.connected = connected_;
  r.last_request = last_activity_;
  return r;
}

std::vector<const pool::ServerConn*> Session::servers() const {
  std::vector<const pool::ServerConn*> out;
  for (const auto& link : backends_.all())
    if (link->lease && !link->done) out.push_back(&*link->lease);
  for (const auto* conn : fan_out_servers_)
    if (std::find(out.begin(), out.end(), conn) == out.end()) out.push_back(conn);
  return out;
}

}  // namespace pgshard::session
