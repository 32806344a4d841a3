// Catch2 entry point for the unit tests (no sockets, no servers).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
