// Splits COPY FROM STDIN data (text or CSV) into rows and finds each row's shard-key field.
#include "proxy/executor/copy_split.hpp"

namespace pgshard::executor {

std::optional<std::string> CopyRowSplitter::key_of(std::string_view row) const {
  while (!row.empty() && (row.back() == '\n' || row.back() == '\r')) row.remove_suffix(1);
  int field = 0;
  std::string value;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i <= row.size(); ++i) {
    const bool end = i == row.size();
    const char c = end ? spec_.delimiter : row[i];
    if (spec_.csv && !end) {
      if (quoted) {
        if (c == spec_.escape && i + 1 < row.size() && row[i + 1] == spec_.quote) {
          if (field == key_index_) value.push_back(spec_.quote);
          ++i;
        } else if (c == spec_.quote) {
          quoted = false;
        } else if (field == key_index_) {
          value.push_back(c);
        }
        continue;
      }
      if (c == spec_.quote) {
        quoted = was_quoted = true;
        continue;
      }
    }
    if (!spec_.csv && c == '\\' && !end && i + 1 < row.size()) {
      // Text format escapes (COPY docs: "File Formats").
      const char n = row[++i];
      if (field == key_index_) {
        if (n == 'N' && value.empty()) {
          value = "\\N";
        } else {
          switch (n) {
            case 't':
              value.push_back('\t');
              break;
            case 'n':
              value.push_back('\n');
              break;
            case 'r':
              value.push_back('\r');
              break;
            default:
              value.push_back(n);
          }
        }
      }
      continue;
    }
    if (c == spec_.delimiter) {
      if (field == key_index_) {
        if (!spec_.csv && value == "\\N") return std::nullopt;
        if (spec_.csv && value.empty() && !was_quoted) return std::nullopt;  // unquoted empty: NULL
        return value;
      }
      ++field;
      value.clear();
      was_quoted = false;
      continue;
    }
    if (field == key_index_) value.push_back(c);
  }
  return std::nullopt;
}

}  // namespace pgshard::executor
