// What the files of the router (router.cpp, pgshard_settings.cpp, route_by_parser.cpp)
// share: pgshard's own settings and hints as a statement carries them, and the route the
// parser's analysis gives. Internal to proxy/router.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "protocol/errors.hpp"
#include "proxy/router/analysis.hpp"
#include "proxy/router/router.hpp"

namespace pgshard::router::detail {

// pgshard_settings.cpp: SET / RESET / SHOW pgshard.*, and /* pgshard: ... */ hints.

enum class SetAction { kSet, kReset, kShow };

struct SetCommand {
  SetAction action = SetAction::kSet;
  std::string name;  // after "pgshard."; empty with RESET ALL
  std::string value;
  bool local = false;
};

// pgshard.* settings and hints in a statement string, as PostgreSQL's parser sees them.
struct Settings {
  bool parsed = false;
  int statements = 0;
  std::vector<SetCommand> commands;  // pgshard.* SET/RESET/SHOW, in order
  bool reset_all = false;            // RESET ALL / DISCARD ALL also clear pgshard.*
  Hints comment;                     // from /* pgshard: ... */ comments
  std::string comment_error;
};

// The pgshard settings and hints of `sql` (the parser runs only for text that mentions
// pgshard or resets settings).
Settings settings_of(std::string_view sql);
// Applies SET/RESET pgshard.* to `h`; returns an error for bad names or values.
std::optional<protocol::ErrorInfo> apply_settings(const Settings& a, SessionHints& h,
                                                  const config::Config& cfg);
// Whether a hint places the statement (shard or sharding_key).
bool places(const Hints& h);
// The Route a placing hint (places(h)) gives; `level` names it in the reason. A sharding_key
// takes the placement of the sharded tables `analysis` names (refused when they are placed
// differently); without analysis, or when it names none, the first sharded table's.
Route from_hints(const Hints& h, const char* level, const config::Config& cfg,
                 const Analysis* analysis = nullptr);
// The answer to SHOW pgshard.name, appended to `out`.
void answer_show(const SetCommand& c, const SessionHints& h, std::string& out);

// route_by_parser.cpp: the route from the statement's analysis.

// The analysis of `sql`: the one the caller fetched, the cache's, or a fresh one.
std::shared_ptr<const Analysis> analysis_of(std::string_view sql, const config::Config& cfg,
                                            const Context& ctx);
// What the statement does to the session wherever it runs: settings it changes, pinning,
// functions it calls, transaction control. A hint picks the shard, never these.
void take_session_effects(Route& r, const Analysis& a);
// Whether the analysed statement only reads as a replica would answer it (Route::read_only).
bool may_run_on_replica(const Analysis& a, const config::Config& cfg);
// Route::read_only and Route::side_effects from the analysis and the map.
void take_replica_safety(Route& r, const Analysis& a, const config::Config& cfg);
// The route the parser's analysis gives (no hint applies).
Route by_parser(std::string_view sql, const config::Config& cfg, const Context& ctx);

}  // namespace pgshard::router::detail
