// Catch2 entry point for integration tests; prints pgshard and shard logs when a case fails,
// and turns a case that hangs into a failure that says where: after PGSHARD_CASE_TIMEOUT
// seconds (180 by default) the watchdog prints the case's name, the logs and the stacks of
// the test process and of every running pgshard, then exits non-zero.
#define CATCH_CONFIG_MAIN
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>

#include "harness.hpp"

namespace {

class Watchdog {
 public:
  static Watchdog& get() {
    static auto* w = new Watchdog;  // never destroyed: its thread waits on it until exit
    return *w;
  }
  void arm(std::string name) {
    std::lock_guard lock(mu_);
    name_ = std::move(name);
    deadline_ = std::chrono::steady_clock::now() + limit_;
    armed_ = true;
    cv_.notify_all();
  }
  void disarm() {
    std::lock_guard lock(mu_);
    armed_ = false;
  }

 private:
  Watchdog() {
    const char* s = std::getenv("PGSHARD_CASE_TIMEOUT");
    limit_ = std::chrono::seconds(s ? std::atoi(s) : 180);
    std::thread([this] { watch(); }).detach();
  }
  void watch() {
    std::unique_lock lock(mu_);
    for (;;) {
      if (!armed_) {
        cv_.wait(lock);
        continue;
      }
      if (cv_.wait_until(lock, deadline_) == std::cv_status::no_timeout) continue;
      if (armed_ && std::chrono::steady_clock::now() >= deadline_) break;
    }
    std::cerr << "\n==== test case \"" << name_ << "\" still running after " << limit_.count()
              << " s: stacks and logs follow ====\n";
    std::cerr << harness::stacks_of(getpid());
    harness::report_hang_and_stop();
    std::cerr.flush();
    _exit(3);
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::chrono::seconds limit_{180};
  std::chrono::steady_clock::time_point deadline_;
  bool armed_ = false;
  std::string name_;
};

}  // namespace

struct LogOnFailure : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    harness::case_starting();
    Watchdog::get().arm(info.name);
  }
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    Watchdog::get().disarm();
    if (!stats.totals.assertions.allPassed()) harness::print_logs_on_failure();
  }
};
CATCH_REGISTER_LISTENER(LogOnFailure)
