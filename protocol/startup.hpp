// Startup-phase packets: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pgshard::protocol {

// Request codes sent in place of a protocol version ("Message Formats").
inline constexpr int32_t kCancelRequestCode = 80877102;
inline constexpr int32_t kSSLRequestCode = 80877103;
inline constexpr int32_t kGSSENCRequestCode = 80877104;
inline constexpr int32_t kProtocolV3 = 3 << 16;

enum class StartupKind { kStartup, kSSLRequest, kGSSENCRequest, kCancelRequest };

struct StartupPacket {
  StartupKind kind = StartupKind::kStartup;
  int major = 3;
  int minor = 0;
  std::vector<std::pair<std::string_view, std::string_view>> params;  // kStartup
  int32_t cancel_pid = 0;                                             // kCancelRequest
  int32_t cancel_secret = 0;

  std::string_view param(std::string_view name) const;
  // `_pq_.` protocol options, which pgshard does not implement.
  std::vector<std::string_view> protocol_options() const;
};

// Parses a startup packet body (after the length word). Rejects protocol majors other
// than 3, malformed parameter lists and a missing final terminator.
std::optional<StartupPacket> parse_startup(std::string_view body, const char** error);

void write_startup(std::string& out,
                   const std::vector<std::pair<std::string, std::string>>& params);
void write_ssl_request(std::string& out);
void write_cancel_request(std::string& out, int32_t pid, int32_t secret);

}  // namespace pgshard::protocol
