// Startup-phase packets: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.
#include "protocol/startup.hpp"

#include "protocol/codec.hpp"

namespace pgshard::protocol {

std::string_view StartupPacket::param(std::string_view name) const {
  for (const auto& [k, v] : params)
    if (k == name) return v;
  return {};
}

std::vector<std::string_view> StartupPacket::protocol_options() const {
  std::vector<std::string_view> out;
  for (const auto& [k, v] : params)
    if (k.starts_with("_pq_.")) out.push_back(k);
  return out;
}

std::optional<StartupPacket> parse_startup(std::string_view body, const char** error) {
  static const char* kMalformed = "invalid startup packet layout";
  BodyReader r(body);
  StartupPacket p;
  const int32_t code = r.i32();
  if (r.failed()) {
    *error = kMalformed;
    return std::nullopt;
  }
  switch (code) {
    case kSSLRequestCode:
      p.kind = StartupKind::kSSLRequest;
      if (!r.at_end()) break;
      return p;
    case kGSSENCRequestCode:
      p.kind = StartupKind::kGSSENCRequest;
      if (!r.at_end()) break;
      return p;
    case kCancelRequestCode:
      p.kind = StartupKind::kCancelRequest;
      p.cancel_pid = r.i32();
      p.cancel_secret = r.i32();
      if (!r.ok_and_done()) break;
      return p;
    default: {
      p.major = code >> 16;
      p.minor = code & 0xffff;
      if (p.major != 3) {
        *error = "unsupported frontend protocol";
        return std::nullopt;
      }
      // Name/value pairs, then a final empty name.
      for (;;) {
        auto name = r.cstr();
        if (r.failed()) break;
        if (name.empty()) {
          if (!r.at_end()) break;
          return p;
        }
        auto value = r.cstr();
        if (r.failed()) break;
        p.params.emplace_back(name, value);
      }
    }
  }
  *error = kMalformed;
  return std::nullopt;
}

void write_startup(std::string& out,
                   const std::vector<std::pair<std::string, std::string>>& params) {
  MessageWriter w(out);
  w.begin_untyped().i32(kProtocolV3);
  for (const auto& [k, v] : params) w.cstr(k).cstr(v);
  w.u8(0).finish();
}

void write_ssl_request(std::string& out) {
  MessageWriter(out).begin_untyped().i32(kSSLRequestCode).finish();
}

void write_cancel_request(std::string& out, int32_t pid, int32_t secret) {
  MessageWriter(out).begin_untyped().i32(kCancelRequestCode).i32(pid).i32(secret).finish();
}

}  // namespace pgshard::protocol
