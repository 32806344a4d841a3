// The admin console: a client that connects to the database "pgshard" as one of
// admin.users (every command) or admin.stats_users (SHOW only) talks to pgshard itself,
// PgBouncer-style (SHOW POOLS, SHOW STATS, ..., KILL_CLIENT, SHUTDOWN). Nothing it sends
// ever reaches a shard.
#pragma once

#include <functional>
#include <string>

#include "config/config.hpp"
#include "protocol/buffer.hpp"
#include "proxy/admin/reports.hpp"
#include "proxy/asio.hpp"
#include "proxy/runtime/client_stream.hpp"

namespace pgshard::runtime {
class Worker;
struct Shared;
}  // namespace pgshard::runtime

namespace pgshard::admin {

// The database name that opens the console.
inline constexpr std::string_view kConsoleDatabase = "pgshard";

// Every worker's snapshot, gathered on the workers' own threads.
awaitable<Snapshot> collect(runtime::Shared& shared);

// Answers the console's commands for a logged-in client until it leaves. `welcome` is
// sent first (authentication ok and the parameters; the caller built it).
awaitable<void> run_console(runtime::Worker& worker, runtime::ClientStream& stream,
                            protocol::Buffer& in, const config::User& user, std::string welcome,
                            std::function<const std::string&()> prefix);

// What a command asks of the running process, done by the console after answering.
struct Effects {
  bool shutdown = false;
  std::vector<uint64_t> kill;  // client ids
  enum class Pools { kNone, kPause, kResume, kReconnect, kKill } pools = Pools::kNone;
  int shard = -1;  // the shard PAUSE/RESUME/RECONNECT name (-1: every shard)
};

// One command's answer (RowDescription, DataRows and CommandComplete, or an error);
// exposed for unit tests. `admin`: the user may run commands that change things.
std::string answer(std::string_view command, const Snapshot& snap, const config::Config& cfg,
                   bool admin, Effects* effects = nullptr);

}  // namespace pgshard::admin
