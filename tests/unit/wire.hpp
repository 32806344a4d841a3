// Hand-built server messages for the socket-free tests of the relay, the reply queue and the
// combiner.
#pragma once

#include <string>
#include <string_view>

#include "protocol/errors.hpp"
#include "protocol/messages.hpp"

namespace pgshard::testing {

inline std::string empty(char type) {
  std::string out;
  protocol::write_empty(out, type);
  return out;
}
inline std::string complete(std::string_view tag) {
  std::string out;
  protocol::CommandComplete{tag}.write(out);
  return out;
}
inline std::string error(std::string_view code = "42P01", std::string_view severity = "ERROR") {
  auto e = protocol::error(code, "relation \"nope\" does not exist");
  e.severity = std::string(severity);
  std::string out;
  protocol::write_error(out, e);
  return out;
}
inline std::string ready(char status = 'I') {
  return protocol::ready_for_query(status);
}

}  // namespace pgshard::testing
