// Who may read the HTTP endpoint: probes always; everything else with the configured bearer
// token or basic-auth credentials (admin.http_auth_token / http_basic_auth), if any.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"

namespace pgshard::admin {

// The paths a kubelet or load balancer probes: answered without credentials, and saying
// no more than "ok" or which shards do not answer.
bool http_open_path(std::string_view path);

// True when `admin` asks for no credentials, or `authorization` (the request's
// Authorization header, empty when absent) carries the token or the user and password.
// Compared in constant time (digests of both sides), so timing tells nothing of the secret.
bool http_authorized(const config::Admin& admin, std::string_view authorization);

// The WWW-Authenticate values of a 401 answer: one per scheme `admin` accepts.
std::vector<std::string> http_challenges(const config::Admin& admin);

}  // namespace pgshard::admin
