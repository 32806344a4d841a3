// libFuzzer target: the YAML config loader. Bad files are reported (an exception with
// file:line messages), never a crash.
#include <cstdint>
#include <exception>
#include <string>

#include "config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string yaml(reinterpret_cast<const char*>(data), size);
  try {
    (void)pgshard::config::load_string(yaml, "fuzz.yaml");
  } catch (const std::exception&) {
    // Rejected with a message: what a bad file must get.
  }
  return 0;
}
