// Authentication maths: SCRAM-SHA-256 (RFC 5802/7677) for both sides, and MD5 passwords.
#include "protocol/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <charconv>
#include <map>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <vector>

namespace pgshard::protocol {

namespace {

constexpr std::size_t kKeyLen = 32;  // SHA-256

std::string hex(const unsigned char* p, std::size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

std::string md5_hex(std::string_view in) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(in.data(), in.size(), out, &len, EVP_md5(), nullptr);
  return hex(out, len);
}

std::string hmac(std::string_view key, std::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &len);
  return std::string(reinterpret_cast<char*>(out), len);
}

std::string sha256(std::string_view data) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), out);
  return std::string(reinterpret_cast<char*>(out), sizeof out);
}

std::string salted_password(std::string_view password, std::string_view salt, int iterations) {
  // RFC 5802 Hi() is PBKDF2 with HMAC as the PRF. SASLprep is the identity for ASCII
  // passwords; PostgreSQL also uses the raw bytes when SASLprep fails.
  std::string out(kKeyLen, '\0');
  PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                    reinterpret_cast<const unsigned char*>(salt.data()),
                    static_cast<int>(salt.size()), iterations, EVP_sha256(), kKeyLen,
                    reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

// ClientKey and ServerKey of one (password, salt, iterations), the costly part of a SCRAM
// login. A pure function's memo, so process-wide: pools filling and refilling log in to
// the same few servers with the same few passwords. Keyed by the password's SHA-256, not the
// password itself; bounded (an entry per user and server's salt; a server that changes its
// salts at every login only refills it).
struct ScramKeys {
  std::string client_key;
  std::string server_key;
};

class ScramKeyCache {
 public:
  ScramKeys get(std::string_view password, std::string_view salt, int iterations) {
    auto key = std::make_tuple(sha256(password), std::string(salt), iterations);
    {
      std::lock_guard lock(mu_);
      if (auto it = keys_.find(key); it != keys_.end()) {
        ++stats_.hits;
        return it->second;
      }
      ++stats_.misses;
    }
    // Derived outside the lock: logins to other servers do not wait for this one.
    const auto salted = salted_password(password, salt, iterations);
    ScramKeys keys{hmac(salted, "Client Key"), hmac(salted, "Server Key")};
    std::lock_guard lock(mu_);
    if (keys_.size() >= kMaxEntries) keys_.erase(keys_.begin());
    keys_.insert_or_assign(std::move(key), keys);
    return keys;
  }

  ScramKeyCacheStats stats() {
    std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  static constexpr std::size_t kMaxEntries = 256;
  std::mutex mu_;
  std::map<std::tuple<std::string, std::string, int>, ScramKeys> keys_;
  ScramKeyCacheStats stats_;
};

ScramKeyCache& scram_key_cache() {
  static ScramKeyCache cache;
  return cache;
}

std::string xor_bytes(std::string_view a, std::string_view b) {
  std::string out(a);
  for (std::size_t i = 0; i < out.size() && i < b.size(); ++i) out[i] ^= b[i];
  return out;
}

// Splits "k=v,k=v" SCRAM attribute lists; returns the value of `key` at position `index`.
std::optional<std::string_view> attribute(std::string_view msg, std::size_t index, char key) {
  std::size_t start = 0;
  for (std::size_t i = 0; i < index; ++i) {
    auto comma = msg.find(',', start);
    if (comma == std::string_view::npos) return std::nullopt;
    start = comma + 1;
  }
  auto end = msg.find(',', start);
  auto part = msg.substr(start, end == std::string_view::npos ? msg.npos : end - start);
  if (part.size() < 2 || part[0] != key || part[1] != '=') return std::nullopt;
  return part.substr(2);
}

bool printable_nonce(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  return true;
}

}  // namespace

std::string base64_encode(std::string_view raw) {
  std::string out(4 * ((raw.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(raw.data()),
                          static_cast<int>(raw.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * text.size() / 4, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock keeps the padding bytes as zeros; drop them.
  std::size_t pad = 0;
  if (!text.empty() && text.back() == '=') ++pad;
  if (text.size() > 1 && text[text.size() - 2] == '=') ++pad;
  out.resize(static_cast<std::size_t>(n) - pad);
  return out;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  return out;
}

std::string md5_stored(std::string_view user, std::string_view password) {
  std::string in(password);
  in.append(user);
  return "md5" + md5_hex(in);
}

std::string md5_from_stored(std::string_view stored, std::string_view salt) {
  std::string in(stored.substr(3));
  in.append(salt);
  return "md5" + md5_hex(in);
}

std::string md5_password(std::string_view user, std::string_view password, std::string_view salt) {
  return md5_from_stored(md5_stored(user, password), salt);
}

std::optional<ScramSecret> ScramSecret::parse(std::string_view v) {
  constexpr std::string_view kPrefix = "SCRAM-SHA-256$";
  if (!v.starts_with(kPrefix)) return std::nullopt;
  v.remove_prefix(kPrefix.size());
  auto colon = v.find(':');
  auto dollar = v.find('$');
  if (colon == v.npos || dollar == v.npos || colon > dollar) return std::nullopt;
  ScramSecret s;
  auto iter = v.substr(0, colon);
  auto [p, ec] = std::from_chars(iter.data(), iter.data() + iter.size(), s.iterations);
  if (ec != std::errc() || p != iter.data() + iter.size() || s.iterations < 1) return std::nullopt;
  auto salt = base64_decode(v.substr(colon + 1, dollar - colon - 1));
  auto keys = v.substr(dollar + 1);
  auto colon2 = keys.find(':');
  if (!salt || colon2 == keys.npos) return std::nullopt;
  auto stored = base64_decode(keys.substr(0, colon2));
  auto server = base64_decode(keys.substr(colon2 + 1));
  if (!stored || !server || stored->size() != kKeyLen || server->size() != kKeyLen)
    return std::nullopt;
  s.salt = *salt;
  s.stored_key = *stored;
  s.server_key = *server;
  return s;
}

ScramSecret ScramSecret::from_password(std::string_view password, std::string_view salt,
                                       int iterations) {
  auto salted = salted_password(password, salt, iterations);
  ScramSecret s;
  s.iterations = iterations;
  s.salt = salt;
  s.stored_key = sha256(hmac(salted, "Client Key"));
  s.server_key = hmac(salted, "Server Key");
  return s;
}

std::string ScramSecret::to_string() const {
  return "SCRAM-SHA-256$" + std::to_string(iterations) + ":" + base64_encode(salt) + "$" +
         base64_encode(stored_key) + ":" + base64_encode(server_key);
}

ScramServer::ScramServer(ScramSecret secret, std::string server_nonce)
    : secret_(std::move(secret)), server_nonce_(std::move(server_nonce)) {}

std::optional<std::string> ScramServer::client_first(std::string_view m, std::string* error) {
  // gs2-header: "n,," or "y,," (we offer no channel binding, so "p=" is refused), with an
  // optional authzid that PostgreSQL does not support either.
  if (m.size() < 3 || (m[0] != 'n' && m[0] != 'y') || m[1] != ',' || m[2] != ',') {
    *error = m.starts_with("p=") ? "channel binding is not supported"
                                 : "malformed SCRAM message (unexpected gs2 header)";
    return std::nullopt;
  }
  auto bare = m.substr(3);
  auto user = attribute(bare, 0, 'n');
  auto nonce = attribute(bare, 1, 'r');
  if (!user || !nonce || !printable_nonce(*nonce)) {
    *error = "malformed SCRAM client-first-message";
    return std::nullopt;
  }
  client_first_bare_ = bare;
  nonce_ = std::string(*nonce) + server_nonce_;
  server_first_ = "r=" + nonce_ + ",s=" + base64_encode(secret_.salt) +
                  ",i=" + std::to_string(secret_.iterations);
  return server_first_;
}

std::optional<std::string> ScramServer::client_final(std::string_view m, std::string* error) {
  auto binding = attribute(m, 0, 'c');
  auto nonce = attribute(m, 1, 'r');
  auto proof_at = m.rfind(",p=");
  if (!binding || !nonce || proof_at == m.npos) {
    *error = "malformed SCRAM client-final-message";
    return std::nullopt;
  }
  if (*binding != "biws" && *binding != "eSws") {  // base64 of "n,," and "y,,"
    *error = "unexpected SCRAM channel-binding attribute";
    return std::nullopt;
  }
  if (*nonce != nonce_) {
    *error = "SCRAM nonce mismatch";
    return std::nullopt;
  }
  auto proof = base64_decode(m.substr(proof_at + 3));
  if (!proof || proof->size() != kKeyLen) {
    *error = "malformed SCRAM proof";
    return std::nullopt;
  }
  std::string auth_message =
      client_first_bare_ + "," + server_first_ + "," + std::string(m.substr(0, proof_at));
  auto client_signature = hmac(secret_.stored_key, auth_message);
  auto client_key = xor_bytes(*proof, client_signature);
  auto check = sha256(client_key);
  if (CRYPTO_memcmp(check.data(), secret_.stored_key.data(), kKeyLen) != 0) {
    error->clear();
    return std::nullopt;
  }
  return "v=" + base64_encode(hmac(secret_.server_key, auth_message));
}

ScramClient::ScramClient(std::string password, std::string client_nonce)
    : password_(std::move(password)), client_nonce_(std::move(client_nonce)) {}

std::string ScramClient::client_first() {
  client_first_bare_ = "n=,r=" + client_nonce_;
  return "n,," + client_first_bare_;
}

std::optional<std::string> ScramClient::server_first(std::string_view m, std::string* error) {
  auto nonce = attribute(m, 0, 'r');
  auto salt64 = attribute(m, 1, 's');
  auto iter = attribute(m, 2, 'i');
  int iterations = 0;
  if (iter) std::from_chars(iter->data(), iter->data() + iter->size(), iterations);
  auto salt = salt64 ? base64_decode(*salt64) : std::nullopt;
  if (!nonce || !salt || iterations < 1 || !nonce->starts_with(client_nonce_) ||
      nonce->size() == client_nonce_.size()) {
    *error = "malformed SCRAM server-first-message";
    return std::nullopt;
  }
  auto [client_key, server_key] = scram_key_cache().get(password_, *salt, iterations);
  auto stored_key = sha256(client_key);
  std::string without_proof = "c=biws,r=" + std::string(*nonce);
  std::string auth_message = client_first_bare_ + "," + std::string(m) + "," + without_proof;
  auto proof = xor_bytes(client_key, hmac(stored_key, auth_message));
  expected_server_signature_ = base64_encode(hmac(server_key, auth_message));
  return without_proof + ",p=" + base64_encode(proof);
}

bool ScramClient::server_final(std::string_view m) const {
  auto v = attribute(m, 0, 'v');
  return v && !expected_server_signature_.empty() && *v == expected_server_signature_;
}

ScramKeyCacheStats scram_key_cache_stats() {
  return scram_key_cache().stats();
}

}  // namespace pgshard::protocol
