// ASCII case-insensitive search, for the cheap checks routing makes on every statement.
#pragma once

#include <string_view>

namespace pgshard::router {

// Position of `needle` in `hay` ignoring ASCII case, or npos. Folding with | 0x20 can also
// match a few non-letters to each other; callers use it only where a false match is safe
// (it sends the statement to the full parser).
inline std::size_t ifind(std::string_view hay, std::string_view needle) {
  if (needle.empty() || needle.size() > hay.size()) return std::string_view::npos;
  const std::size_t last = hay.size() - needle.size();
  for (std::size_t i = 0; i <= last; ++i) {
    if ((hay[i] | 0x20) != (needle[0] | 0x20)) continue;
    std::size_t j = 1;
    while (j < needle.size() && (hay[i + j] | 0x20) == (needle[j] | 0x20)) ++j;
    if (j == needle.size()) return i;
  }
  return std::string_view::npos;
}

inline bool icontains(std::string_view hay, std::string_view needle) {
  return ifind(hay, needle) != std::string_view::npos;
}

}  // namespace pgshard::router
