// libFuzzer target: the multi-shard merger fed arbitrary shard streams — a RowDescription
// and DataRows per shard in an order the input chooses — for plans of real statements
// (ORDER BY, LIMIT/OFFSET, GROUP BY with aggregates, HAVING, DISTINCT).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "protocol/messages.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/router/router.hpp"

namespace p = pgshard::protocol;

namespace {

const char* const kStatements[] = {
    "SELECT id, name FROM users ORDER BY id DESC NULLS LAST, name LIMIT 5 OFFSET 2",
    "SELECT name, count(*), sum(id), avg(id), min(name), max(id) FROM users GROUP BY name "
    "HAVING count(*) > 1 ORDER BY 2 DESC",
    "SELECT DISTINCT name FROM users ORDER BY name",
    "SELECT count(*), bool_and(id > 0) FROM users",
    "SELECT DISTINCT ON (name) name, id FROM users ORDER BY name, id LIMIT 3",
};
const int32_t kTypes[] = {20, 23, 21, 25, 1043, 1700, 701, 700, 16, 1082, 1114, 1184, 2950, 17};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 4) return 0;
  const auto& cfg = fuzz_config();
  static std::vector<pgshard::router::Route> routes = [&] {
    std::vector<pgshard::router::Route> v;
    for (const char* sql : kStatements) v.push_back(pgshard::router::route_query(sql, {}, cfg));
    return v;
  }();
  const auto* fan_out =
      std::get_if<pgshard::router::FanOut>(&routes[data[0] % std::size(kStatements)].action);
  if (!fan_out || !fan_out->merge) return 0;
  const int shards = 1 + data[1] % 4;
  const int16_t format = data[2] & 1;
  // Columns: as many as the shards' statement returns, types chosen by the input.
  std::string_view in(reinterpret_cast<const char*>(data + 4), size - 4);
  p::RowDescription desc;
  std::vector<std::string> names;
  const int columns = 1 + data[3] % 8;
  for (int i = 0; i < columns; ++i) names.push_back("c" + std::to_string(i));
  for (int i = 0; i < columns; ++i) {
    int32_t type = kTypes[(static_cast<unsigned>(data[3]) + 7u * i) % std::size(kTypes)];
    desc.fields.push_back({names[i], 0, 0, type, -1, -1, format});
  }
  std::string body;
  desc.write(body);
  pgshard::merge::Collation collation;
  pgshard::merge::Merger merger(*fan_out->merge, shards, collation, fan_out->merge->limit.value,
                                fan_out->merge->offset.value);
  std::string err;
  if (!merger.describe(std::string_view(body).substr(5), &err)) return 0;
  // Rows: NUL-separated values, one row per input line; the merger asks for them in turn.
  std::vector<std::vector<std::string>> rows(static_cast<std::size_t>(shards));
  int shard = 0;
  while (!in.empty()) {
    auto line = in.substr(0, in.find('\n'));
    in.remove_prefix(std::min(in.size(), line.size() + 1));
    p::DataRow r;
    std::vector<std::string> values;
    for (int c = 0; c < columns; ++c) {
      auto cut = line.find('\0');
      values.emplace_back(line.substr(0, cut));
      line = cut == line.npos ? std::string_view() : line.substr(cut + 1);
    }
    for (auto& v : values) r.values.push_back(v == "N" ? p::Value() : p::Value(v));
    std::string frame;
    r.write(frame);
    rows[static_cast<std::size_t>(shard)].push_back(frame.substr(5));
    shard = (shard + 1) % shards;
  }
  std::vector<std::size_t> next(static_cast<std::size_t>(shards), 0);
  std::string out;
  for (int s, steps = 0; (s = merger.wants()) >= 0 && steps < 100000; ++steps) {
    auto& i = next[static_cast<std::size_t>(s)];
    if (i < rows[static_cast<std::size_t>(s)].size())
      merger.add_row(s, rows[static_cast<std::size_t>(s)][i++]);
    else
      merger.end_of_rows(s);
    merger.take(out);
    if (!merger.error().empty()) break;
  }
  merger.take(out);
  return 0;
}
