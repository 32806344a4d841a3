// TLS server contexts for client connections and the HTTP endpoint (OpenSSL via Asio).
#include "proxy/server/tls.hpp"

#include <stdexcept>

namespace pgshard::server {

asio::ssl::context make_tls_context(const std::string& cert, const std::string& key,
                                    const char* cert_setting, const char* key_setting) {
  asio::ssl::context ctx(asio::ssl::context::tls_server);
  ctx.set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                  asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                  asio::ssl::context::no_tlsv1_1);
  error_code ec;
  ctx.use_certificate_chain_file(cert, ec);
  if (ec) throw std::runtime_error(std::string(cert_setting) + " " + cert + ": " + ec.message());
  ctx.use_private_key_file(key, asio::ssl::context::pem, ec);
  if (ec) throw std::runtime_error(std::string(key_setting) + " " + key + ": " + ec.message());
  return ctx;
}

}  // namespace pgshard::server
