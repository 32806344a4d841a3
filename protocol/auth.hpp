// Authentication maths: SCRAM-SHA-256 (RFC 5802/7677) for both sides, and MD5 passwords.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace pgshard::protocol {

std::string base64_encode(std::string_view raw);
std::optional<std::string> base64_decode(std::string_view text);
std::string random_bytes(std::size_t n);

// "md5" + md5(md5(password + user) + salt), as in AuthenticationMD5Password.
std::string md5_password(std::string_view user, std::string_view password, std::string_view salt);
// The stored form "md5" + md5(password + user).
std::string md5_stored(std::string_view user, std::string_view password);
// Answer to a salt given the stored form (what a proxy holding only the hash can do).
std::string md5_from_stored(std::string_view stored, std::string_view salt);

// A SCRAM-SHA-256 verifier as PostgreSQL stores it in pg_authid:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> (base64 fields).
struct ScramSecret {
  int iterations = 4096;
  std::string salt;        // raw bytes
  std::string stored_key;  // raw 32 bytes
  std::string server_key;  // raw 32 bytes

  static std::optional<ScramSecret> parse(std::string_view verifier);
  static ScramSecret from_password(std::string_view password, std::string_view salt,
                                   int iterations);
  std::string to_string() const;
};

// Server side of one SCRAM-SHA-256 exchange (pgshard authenticating a client).
class ScramServer {
 public:
  ScramServer(ScramSecret secret, std::string server_nonce);

  // client-first-message -> server-first-message; nullopt with *error on bad input.
  std::optional<std::string> client_first(std::string_view message, std::string* error);
  // client-final-message -> server-final-message ("v=..."); nullopt when the proof is wrong
  // (*error empty) or the message is malformed (*error set).
  std::optional<std::string> client_final(std::string_view message, std::string* error);

 private:
  ScramSecret secret_;
  std::string server_nonce_;
  std::string client_first_bare_;
  std::string server_first_;
  std::string nonce_;
};

// Client side of one SCRAM-SHA-256 exchange (pgshard logging into a backend). Its keys
// (ClientKey, ServerKey) come from Hi(), 4096 rounds of PBKDF2 by default, the same for every
// login with one password to one server: they are kept in a small process-wide cache keyed
// by (password, salt, iterations). The cache only saves the derivation: the server still
// checks the proof, and server_final() still checks the server's signature.
class ScramClient {
 public:
  ScramClient(std::string password, std::string client_nonce);

  std::string client_first();
  std::optional<std::string> server_first(std::string_view message, std::string* error);
  bool server_final(std::string_view message) const;

 private:
  std::string password_;
  std::string client_nonce_;
  std::string client_first_bare_;
  std::string expected_server_signature_;
};

// The ScramClient key cache's counters (for tests and the curious): a hit is a login that
// did not run PBKDF2.
struct ScramKeyCacheStats {
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;
};
ScramKeyCacheStats scram_key_cache_stats();

}  // namespace pgshard::protocol
