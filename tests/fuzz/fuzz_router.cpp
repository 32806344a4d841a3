// libFuzzer target: the router over arbitrary SQL (the real PostgreSQL parser) with
// arbitrary Bind parameters, in both protocols, with and without session hints.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/router.hpp"

namespace p = pgshard::protocol;
namespace r = pgshard::router;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto& cfg = fuzz_config();
  std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
  const uint8_t mode = data[0];
  // SQL up to the first NUL; the rest are NUL-separated parameter values.
  auto cut = in.find('\0');
  std::string sql(in.substr(0, cut));
  std::vector<std::string> values;
  if (cut != in.npos) {
    std::string_view rest = in.substr(cut + 1);
    while (!rest.empty() && values.size() < 16) {
      auto e = rest.find('\0');
      values.emplace_back(rest.substr(0, e));
      rest = e == rest.npos ? std::string_view() : rest.substr(e + 1);
    }
  }
  r::SessionHints hints;
  if (mode & 1) hints = r::route_query("SET pgshard.sharding_key = '42'", hints, cfg).hints;
  r::Context ctx;
  uint64_t rr = 0;
  ctx.round_robin = &rr;
  if (mode & 2) ctx.attached = mode % 3;
  if (mode & 4) {
    p::Bind bind;
    for (std::size_t i = 0; i < values.size(); ++i) {
      bind.params.emplace_back(values[i]);
      // Text or binary, per parameter, as the mode's bits say.
      bind.param_formats.push_back(static_cast<int16_t>((mode >> (3 + i % 5)) & 1));
    }
    ctx.bind = &bind;
    (void)r::route_extended(sql, hints, cfg, ctx);
  } else {
    (void)r::route_query(sql, hints, cfg, ctx);
  }
  return 0;
}
