// The durable state of one reshard (`pgshard reshard start` .. `abort`): the file beside the
// new map that names every publication, slot and subscription the move created.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace pgshard::admin {

enum class ReshardPhase {
  kStarting,  // creating publications, slots and subscriptions (some may exist)
  kCopying,   // every subscription created: PostgreSQL copies, then streams the changes
  kAborting,  // dropping them again
  kCleaning,  // writes stopped and the copies compared: dropping the subscriptions
  kDeleting,  // deleting the moved rows from the sources: only cleanup may go on
};
const char* to_string(ReshardPhase p);

// The rows one source shard gives one target shard, for every moving table: one publication
// (on the source), one logical replication slot (on the source) and one subscription (on
// the target), all called `name`.
struct ReshardMove {
  std::string from, to, name;
};

struct ReshardState {
  ReshardPhase phase = ReshardPhase::kStarting;
  std::string from_map, to_map;  // the maps' paths as given to `start`
  std::string id;                // in every object name, apart from other reshards'
  std::vector<ReshardMove> moves;
  std::vector<std::pair<std::string, std::string>> created;  // (target shard, table) made by start
};

// NEW.yaml.reshard-state
std::string reshard_state_path(const std::string& to_map);
// The state text (line based: "phase copying", "move s0 s3 NAME", ...).
std::string format_state(const ReshardState& s);
std::optional<ReshardState> parse_state(const std::string& text, std::string* error);

std::optional<ReshardState> load_state(const std::string& path, std::string* error);
// Written to a temporary file, fsynced and renamed over `path` (then its directory fsynced):
// a crash leaves the old state or the new one, never half of it.
bool save_state(const std::string& path, const ReshardState& s, std::string* error);

// An object name for the move from `from` to `to`: pgshard_rs_ID_FROM_TO with the shard names
// reduced to [a-z0-9_] and cut short (PostgreSQL's 63-byte names).
std::string move_object_name(const std::string& id, const std::string& from, const std::string& to);

}  // namespace pgshard::admin
