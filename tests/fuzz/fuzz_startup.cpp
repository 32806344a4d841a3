// libFuzzer target: startup-phase packets (StartupMessage, SSLRequest, CancelRequest,
// GSSENCRequest) as a client may send them before authentication.
#include <cstdint>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/startup.hpp"

namespace p = pgshard::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto d = p::decode_startup(in);
  if (d.status == p::DecodeStatus::kFrame) {
    const char* err = nullptr;
    if (auto pkt = p::parse_startup(d.frame.body, &err)) {
      (void)pkt->param("user");
      (void)pkt->param("database");
      (void)pkt->protocol_options();
    }
  }
  // The body alone too, without the framing check in front of it.
  const char* err = nullptr;
  (void)p::parse_startup(in, &err);
  return 0;
}
