// libFuzzer target: the COPY FROM STDIN row splitter (text and CSV) over arbitrary data cut
// into arbitrary CopyData pieces; no byte may come out twice (the text end marker "\." is
// the only thing dropped).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "proxy/executor/copy_split.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3) return 0;
  pgshard::router::CopySplit spec;
  spec.csv = data[0] & 1;
  spec.header = data[0] & 2;
  if (data[0] & 4) spec.delimiter = ',';
  if (data[0] & 8) spec.escape = '\\';
  const int key_index = data[1] % 4;
  const std::size_t piece = 1 + data[2] % 64;
  std::string_view in(reinterpret_cast<const char*>(data + 3), size - 3);
  pgshard::executor::CopyRowSplitter splitter(spec, key_index);
  std::size_t seen = 0;
  auto on_row = [&](std::string_view row, const std::optional<std::string>&, bool) {
    seen += row.size();
  };
  for (std::size_t at = 0; at < in.size(); at += piece) splitter.feed(in.substr(at, piece), on_row);
  splitter.finish(on_row);
  if (seen > in.size()) std::abort();  // a byte duplicated
  return 0;
}
