// Helpers the files of Session's member functions share (internal to proxy/session/).
#pragma once

#include <cctype>
#include <cstddef>
#include <memory>
#include <new>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/router.hpp"
#include "proxy/session/settings.hpp"
#include "proxy/session/statements.hpp"

namespace pgshard::session {

// True when a batch binds or runs anything (Bind, Execute, Query, FunctionCall).
inline bool binds_or_runs(std::string_view batch) {
  for (const auto m : protocol::frames(batch)) {
    const char t = m.frame.type;
    if (t == protocol::msg::kBind || t == protocol::msg::kExecute || t == protocol::msg::kQuery ||
        t == protocol::msg::kFunctionCall)
      return true;
  }
  return false;
}

// A Route (about 750 bytes) held in a request's coroutine frame would make the frame too large
// for Asio's per-thread frame recycling: each request would allocate and free it. Routes
// are built in place in storage kept per worker thread instead (a few: requests nest, a
// split pipeline runs its parts as requests).
class RouteBox {
 public:
  template <typename Make>
  explicit RouteBox(Make&& make) {
    if (spare().empty()) {
      storage_ = std::make_unique<Storage>();
    } else {
      storage_ = std::move(spare().back());
      spare().pop_back();
    }
    route_ = ::new (storage_->bytes) router::Route(make());  // (no copy, no move)
  }
  RouteBox(const RouteBox&) = delete;
  RouteBox& operator=(const RouteBox&) = delete;
  ~RouteBox() {
    route_->~Route();
    if (spare().size() < kKept) spare().push_back(std::move(storage_));
  }
  router::Route& operator*() { return *route_; }

 private:
  struct Storage {
    alignas(router::Route) std::byte bytes[sizeof(router::Route)];
  };
  static constexpr std::size_t kKept = 4;
  static std::vector<std::unique_ptr<Storage>>& spare() {
    thread_local std::vector<std::unique_ptr<Storage>> kept;
    return kept;
  }
  std::unique_ptr<Storage> storage_;
  router::Route* route_;
};

}  // namespace pgshard::session
