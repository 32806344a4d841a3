// Client settings that must follow the client from one server connection to the next:
// startup parameters (and `options -c`), kept equal on whatever server a client is given.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.hpp"

namespace pgshard::runtime {

using Params = std::map<std::string, std::string>;

// Whether a startup parameter is a setting that follows the client to its servers (every
// name but user, database, options, replication and protocol options).
bool is_synced_startup_parameter(std::string_view name);
// PostgreSQL's name for an encoding a client spells its own way ("utf-8" -> "UTF8").
std::string canonical_encoding(std::string_view name);

// Parses `options` ("-c name=value --name=value", backslash escapes spaces) into settings.
// Returns an error message for anything but -c/-- settings.
std::optional<std::string> parse_options(std::string_view options, Params& out);

// The SET/RESET statements that turn a server whose settings are `server` into one whose
// settings are `client`: settings the client has and the server lacks or differs are SET;
// non-reported settings only the server has are RESET. Empty when nothing differs.
std::string sync_statements(const Params& client, const Params& server);

// A hash of the whole set (never 0), to skip comparing sets that are known to be equal.
uint64_t fingerprint(const Params& p);

using protocol::quote_ident;
using protocol::quote_literal;

}  // namespace pgshard::runtime
