// libFuzzer target: SCRAM-SHA-256 messages from a hostile client (server side) and from a
// hostile server (client side), and stored verifiers.
#include <cstdint>
#include <string>
#include <string_view>

#include "protocol/auth.hpp"

namespace p = pgshard::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  // Split at the first NUL: client-first, then client-final.
  auto cut = in.find('\0');
  std::string_view first = in.substr(0, cut);
  std::string_view final_msg = cut == in.npos ? std::string_view() : in.substr(cut + 1);
  static const auto secret = p::ScramSecret::from_password("secret", "0123456789abcdef", 16);
  p::ScramServer server(secret, "servernonce");
  std::string err;
  if (server.client_first(first, &err)) (void)server.client_final(final_msg, &err);
  p::ScramClient client("secret", "clientnonce");
  (void)client.client_first();
  if (client.server_first(first, &err)) (void)client.server_final(final_msg);
  (void)p::ScramSecret::parse(in);
  (void)p::base64_decode(in);
  return 0;
}
