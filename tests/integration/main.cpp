// Catch2 entry point for integration tests; prints pgshard and shard logs when a case fails.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "harness.hpp"

struct LogOnFailure : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (!stats.totals.assertions.allPassed()) harness::print_logs_on_failure();
  }
};
CATCH_REGISTER_LISTENER(LogOnFailure)
