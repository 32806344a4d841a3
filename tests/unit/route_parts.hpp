// The parts of a router::Route that routing tests assert on, read from its action: each
// accessor says which action it expects, so an assertion on a payload also checks the
// action (REQUIRE fails the test when the route took another).
#pragma once

#include <catch2/catch.hpp>
#include <variant>
#include <vector>

#include "proxy/router/router.hpp"

namespace pgshard::testing {

// The shard of a Forward; -1 for any other action.
inline int forward_shard(const router::Route& r) {
  const auto* f = std::get_if<router::Forward>(&r.action);
  return f ? f->shard : -1;
}

// The shards of a statement on several shards (FanOut, Ddl, CopyIn); none for the rest.
inline std::vector<int> spread_shards(const router::Route& r) {
  if (std::holds_alternative<router::Forward>(r.action)) return {};
  const auto shards = router::shards_of(r);
  return {shards.begin(), shards.end()};
}

inline bool refused(const router::Route& r) {
  return std::holds_alternative<router::Refuse>(r.action);
}

// The error of a refusal (Refuse or SplitPipeline).
inline const protocol::ErrorInfo& error_of(const router::Route& r) {
  const auto* e = router::refusal(r);
  REQUIRE(e != nullptr);
  return *e;
}

template <typename Action>
const Action& payload(const router::Route& r) {
  const auto* a = std::get_if<Action>(&r.action);
  REQUIRE(a != nullptr);
  return *a;
}

inline const router::FanOut& fan_out_of(const router::Route& r) {
  return payload<router::FanOut>(r);
}
inline const router::Lookup& lookup_of(const router::Route& r) {
  return payload<router::Lookup>(r);
}
inline const router::GenerateKeys& generate_of(const router::Route& r) {
  return payload<router::GenerateKeys>(r);
}
inline const router::CopyIn& copy_in_of(const router::Route& r) {
  return payload<router::CopyIn>(r);
}

}  // namespace pgshard::testing
