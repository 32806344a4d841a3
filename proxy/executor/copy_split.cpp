// Splits COPY FROM STDIN data (text or CSV) into rows and finds each row's shard-key field.
#include "proxy/executor/copy_split.hpp"

#include <cctype>

namespace pgshard::executor {

namespace {

bool is_octal(char c) {
  return c >= '0' && c <= '7';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  return std::tolower(static_cast<unsigned char>(c)) - 'a' + 10;
}

bool is_hex(std::string_view raw, std::size_t i) {
  return i < raw.size() && std::isxdigit(static_cast<unsigned char>(raw[i]));
}

// The byte a backslash escape at raw[i] (the byte after the backslash) stands for; `i`
// ends on its last byte. As PostgreSQL's CopyReadAttributesText decodes it (COPY docs,
// "Text Format"): \NNN octal (1-3 digits), \xHH hex (1-2 digits), \b \f \n \r \t \v, and
// any other byte for itself (\\, \x not followed by a hex digit).
char text_escape(std::string_view raw, std::size_t& i) {
  const char c = raw[i];
  if (is_octal(c)) {
    int v = c - '0';
    for (int more = 0; more < 2 && i + 1 < raw.size() && is_octal(raw[i + 1]); ++more)
      v = (v << 3) + (raw[++i] - '0');
    return static_cast<char>(v & 0xff);
  }
  switch (c) {
    case 'x':
      if (is_hex(raw, i + 1)) {
        int v = hex_value(raw[++i]);
        if (is_hex(raw, i + 1)) v = (v << 4) + hex_value(raw[++i]);
        return static_cast<char>(v & 0xff);
      }
      return c;
    case 'b':
      return '\b';
    case 'f':
      return '\f';
    case 'n':
      return '\n';
    case 'r':
      return '\r';
    case 't':
      return '\t';
    case 'v':
      return '\v';
    default:
      return c;
  }
}

// A text-format field as written (escapes and all) as the value PostgreSQL reads.
std::string decode_text_field(std::string_view raw) {
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] != '\\') {
      out.push_back(raw[i]);
    } else if (++i < raw.size()) {
      out.push_back(text_escape(raw, i));
    }  // (a backslash ending the line is dropped, as PostgreSQL drops it)
  }
  return out;
}

}  // namespace

std::optional<std::string> CopyRowSplitter::key_of(std::string_view row) const {
  while (!row.empty() && (row.back() == '\n' || row.back() == '\r')) row.remove_suffix(1);
  return spec_.csv ? csv_key(row) : text_key(row);
}

std::optional<std::string> CopyRowSplitter::text_key(std::string_view row) const {
  int field = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= row.size(); ++i) {
    if (i + 1 < row.size() && row[i] == '\\') {
      ++i;  // the escaped byte, a delimiter too, belongs to the field
      continue;
    }
    if (i < row.size() && row[i] != spec_.delimiter) continue;
    if (field == key_index_) {
      const auto raw = row.substr(start, i - start);
      // NULL is the field as written, before escapes ("\\N" is the text \N).
      if (raw == "\\N") return std::nullopt;
      return decode_text_field(raw);
    }
    ++field;
    start = i + 1;
  }
  return std::nullopt;
}

std::optional<std::string> CopyRowSplitter::csv_key(std::string_view row) const {
  int field = 0;
  std::string value;
  bool quoted = false, was_quoted = false;
  for (std::size_t i = 0; i <= row.size(); ++i) {
    const bool end = i == row.size();
    const char c = end ? spec_.delimiter : row[i];
    if (!end) {
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
    if (c == spec_.delimiter) {
      if (field == key_index_) {
        if (value.empty() && !was_quoted) return std::nullopt;  // unquoted empty: NULL
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
