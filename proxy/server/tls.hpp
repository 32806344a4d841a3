// TLS server context for client connections (OpenSSL via Asio).
#pragma once

#include <string>

#include "proxy/asio.hpp"

namespace pgshard::server {

// Loads the certificate chain and key; throws std::runtime_error naming the file on failure.
asio::ssl::context make_tls_context(const std::string& cert, const std::string& key);

}  // namespace pgshard::server
