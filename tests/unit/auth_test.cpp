// SCRAM-SHA-256 against the RFC 7677 example, both sides; MD5 against PostgreSQL's format.
#include "protocol/auth.hpp"

#include <catch2/catch.hpp>

using namespace pgshard::protocol;

namespace {
// RFC 7677 section 3.
const std::string kClientNonce = "rOprNGfwEbeRWgbNEkqO";
const std::string kServerNonce = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const std::string kSalt64 = "W22ZaJ0SNY7soEsUEjb6gQ==";
const std::string kServerFirst = "r=" + kClientNonce + kServerNonce + ",s=" + kSalt64 + ",i=4096";
const std::string kClientFinal =
    "c=biws,r=" + kClientNonce + kServerNonce + ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const std::string kServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";
}  // namespace

TEST_CASE("SCRAM client side reproduces RFC 7677", "[auth]") {
  ScramClient c("pencil", kClientNonce);
  // The RFC's client-first names user "user"; PostgreSQL clients send "n=" and the
  // signature covers the bare message, so test with the RFC's exact bare message.
  ScramServer s(ScramSecret::from_password("pencil", *base64_decode(kSalt64), 4096), kServerNonce);
  std::string err;
  REQUIRE(s.client_first("n,,n=user,r=" + kClientNonce, &err) == kServerFirst);
  auto final_msg = s.client_final(kClientFinal, &err);
  REQUIRE(final_msg);
  CHECK(*final_msg == kServerFinal);
  CHECK(c.client_first() == "n,,n=,r=" + kClientNonce);
}

TEST_CASE("SCRAM server rejects a wrong password and malformed messages", "[auth]") {
  ScramServer s(ScramSecret::from_password("other", *base64_decode(kSalt64), 4096), kServerNonce);
  std::string err;
  REQUIRE(s.client_first("n,,n=user,r=" + kClientNonce, &err));
  CHECK_FALSE(s.client_final(kClientFinal, &err));
  CHECK(err.empty());  // a wrong proof, not a malformed message

  ScramServer t(ScramSecret::from_password("pencil", "salt", 4096), "x");
  CHECK_FALSE(t.client_first("p=tls-server-end-point,,n=,r=abc", &err));
  CHECK_FALSE(t.client_first("n,,r=abc", &err));
  REQUIRE(t.client_first("n,,n=,r=abc", &err));
  CHECK_FALSE(t.client_final("c=biws,r=WRONG,p=AAAA", &err));
  CHECK_FALSE(err.empty());
}

namespace {
// One login of a client knowing `password` to a server holding `secret` (derived without
// the cache): whether the server took the proof and the client took the server's signature.
struct Login {
  std::string client_final;
  bool server_accepted = false;
  bool client_accepted = false;
};
Login log_in(const ScramSecret& secret, const std::string& password) {
  ScramServer s(secret, "servernonce");
  ScramClient c(password, "clientnonce");
  std::string err;
  auto first = s.client_first(c.client_first(), &err);
  REQUIRE(first);
  auto final_msg = c.server_first(*first, &err);
  REQUIRE(final_msg);
  auto v = s.client_final(*final_msg, &err);
  return {*final_msg, v.has_value(), v && c.server_final(*v)};
}
}  // namespace

TEST_CASE("SCRAM client and server agree end to end", "[auth]") {
  auto login = log_in(ScramSecret::from_password("s3cret", random_bytes(16), 4096), "s3cret");
  CHECK(login.server_accepted);
  CHECK(login.client_accepted);
}

TEST_CASE("SCRAM client keys are derived once per password, salt and iterations", "[auth]") {
  // Pools log in to the same server again and again: the second login skips PBKDF2, and
  // says exactly what the first said.
  auto secret = ScramSecret::from_password("s3cret", random_bytes(16), 4096);
  const auto before = scram_key_cache_stats();
  const auto first = log_in(secret, "s3cret");
  const auto after_first = scram_key_cache_stats();
  CHECK(after_first.misses == before.misses + 1);
  CHECK(after_first.hits == before.hits);
  const auto second = log_in(secret, "s3cret");
  const auto after_second = scram_key_cache_stats();
  CHECK(after_second.hits == after_first.hits + 1);
  CHECK(after_second.misses == after_first.misses);
  CHECK(first.server_accepted);
  CHECK(first.client_accepted);
  CHECK(second.client_final == first.client_final);
  CHECK(second.server_accepted);
  CHECK(second.client_accepted);

  // A wrong password with the same salt is its own entry: the server refuses its proof.
  const auto wrong = log_in(secret, "s3cre7");
  CHECK(scram_key_cache_stats().misses == after_second.misses + 1);
  CHECK_FALSE(wrong.server_accepted);
  CHECK(log_in(secret, "s3cre7").client_final == wrong.client_final);
  // Another salt or iteration count for the right password: another entry, still accepted.
  auto other_salt = ScramSecret::from_password("s3cret", random_bytes(16), 4096);
  auto fewer = ScramSecret::from_password("s3cret", secret.salt, 4095);
  const auto misses = scram_key_cache_stats().misses;
  CHECK(log_in(other_salt, "s3cret").server_accepted);
  CHECK(log_in(fewer, "s3cret").server_accepted);
  CHECK(scram_key_cache_stats().misses == misses + 2);
}

TEST_CASE("SCRAM client refuses a server that does not know the password", "[auth]") {
  // The cached keys do not stand in for the server's signature. A server holding the
  // password's StoredKey (stolen) but another password's ServerKey takes the proof; the
  // client refuses its signature, before and after caching.
  auto salt = random_bytes(16);
  ScramSecret forged = ScramSecret::from_password("other", salt, 4096);
  forged.stored_key = ScramSecret::from_password("s3cret", salt, 4096).stored_key;
  for (int i = 0; i < 2; ++i) {
    auto login = log_in(forged, "s3cret");
    CHECK(login.server_accepted);
    CHECK_FALSE(login.client_accepted);
  }
}

TEST_CASE("SCRAM verifiers parse and print in PostgreSQL's format", "[auth]") {
  auto secret = ScramSecret::from_password("pencil", *base64_decode(kSalt64), 4096);
  auto text = secret.to_string();
  CHECK(text.starts_with("SCRAM-SHA-256$4096:" + kSalt64 + "$"));
  auto back = ScramSecret::parse(text);
  REQUIRE(back);
  CHECK(back->stored_key == secret.stored_key);
  CHECK(back->server_key == secret.server_key);
  CHECK_FALSE(ScramSecret::parse("SCRAM-SHA-256$x:abc$def:ghi"));
  CHECK_FALSE(ScramSecret::parse("md5abc"));
}

TEST_CASE("MD5 passwords match PostgreSQL's md5(password || user) scheme", "[auth]") {
  // SELECT 'md5' || md5('secret' || 'app')
  CHECK(md5_stored("app", "secret") == "md56a422f785c9e20873908ce25d1736ae2");
  auto salt = std::string("\x01\x02\x03\x04", 4);
  CHECK(md5_password("app", "secret", salt) == md5_from_stored(md5_stored("app", "secret"), salt));
  CHECK(md5_password("app", "secret", salt).size() == 35);
}

TEST_CASE("base64 round trips and rejects garbage", "[auth]") {
  for (const std::string& s :
       std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff", 2)})
    CHECK(base64_decode(base64_encode(s)) == s);
  CHECK_FALSE(base64_decode("abc"));
  CHECK_FALSE(base64_decode("!!!!"));
}
