// Who may read the HTTP endpoint: probes always; everything else with the configured bearer
// token or basic-auth credentials (admin.http_auth_token / http_basic_auth), if any.
#include "proxy/admin/http_auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <optional>

#include "protocol/auth.hpp"

namespace pgshard::admin {

namespace {

using Digest = std::array<unsigned char, EVP_MAX_MD_SIZE>;

Digest sha256(std::string_view text) {
  Digest d{};
  unsigned int n = 0;
  EVP_Digest(text.data(), text.size(), d.data(), &n, EVP_sha256(), nullptr);
  return d;
}

// Equal without an early exit: both sides hashed to a fixed size first, so neither the
// position of the first difference nor the secret's length shows in the time taken.
bool same_secret(std::string_view given, std::string_view expected) {
  const auto a = sha256(given), b = sha256(expected);
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// The credentials after `scheme` (compared without regard to case, RFC 9110 11.1), or
// nullopt when the header uses another scheme.
std::optional<std::string_view> credentials(std::string_view header, std::string_view scheme) {
  if (header.size() <= scheme.size() || header[scheme.size()] != ' ') return std::nullopt;
  for (std::size_t i = 0; i < scheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(header[i])) !=
        std::tolower(static_cast<unsigned char>(scheme[i])))
      return std::nullopt;
  auto rest = header.substr(scheme.size() + 1);
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  while (!rest.empty() && rest.back() == ' ') rest.remove_suffix(1);
  return rest;
}

}  // namespace

bool http_open_path(std::string_view path) {
  return path == "/health" || path == "/healthz" || path == "/ready" || path == "/readyz";
}

bool http_authorized(const config::Admin& admin, std::string_view authorization) {
  if (admin.http_auth_token.empty() && admin.http_basic_auth.empty()) return true;
  if (!admin.http_auth_token.empty())
    if (auto token = credentials(authorization, "Bearer"))
      return same_secret(*token, admin.http_auth_token);
  if (!admin.http_basic_auth.empty())
    if (auto encoded = credentials(authorization, "Basic")) {
      const auto decoded = protocol::base64_decode(*encoded);
      return decoded && same_secret(*decoded, admin.http_basic_auth);
    }
  return false;
}

std::vector<std::string> http_challenges(const config::Admin& admin) {
  std::vector<std::string> out;
  if (!admin.http_auth_token.empty()) out.emplace_back("Bearer realm=\"pgshard\"");
  if (!admin.http_basic_auth.empty())
    out.emplace_back("Basic realm=\"pgshard\", charset=\"UTF-8\"");
  return out;
}

}  // namespace pgshard::admin
