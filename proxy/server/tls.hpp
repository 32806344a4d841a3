// TLS server contexts for client connections and the HTTP endpoint (OpenSSL via Asio).
#pragma once

#include <string>

#include "proxy/asio.hpp"

namespace pgshard::server {

// Loads the certificate chain and key; throws std::runtime_error naming the setting
// (`cert_setting`, `key_setting`) and the file on failure.
asio::ssl::context make_tls_context(const std::string& cert, const std::string& key,
                                    const char* cert_setting = "tls.cert",
                                    const char* key_setting = "tls.key");

}  // namespace pgshard::server
