// Splits COPY FROM STDIN data (text or CSV) into rows and finds each row's shard-key field,
// across CopyData message boundaries. Pure: no sockets.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "proxy/router/analysis.hpp"

namespace pgshard::executor {

class CopyRowSplitter {
 public:
  CopyRowSplitter(const router::CopySplit& spec, int key_index)
      : spec_(spec), key_index_(key_index) {}

  // Appends data; calls on_row(row, key) for every complete row (row includes its line end;
  // key is nullopt for NULL). The CSV header row, when the COPY has one, is reported with
  // `header` set.
  template <typename F>
  void feed(std::string_view data, F&& on_row) {
    buf_.append(data);
    std::size_t start = 0;
    for (; pos_ < buf_.size(); ++pos_) {
      const char c = buf_[pos_];
      if (spec_.csv) {
        if (in_quotes_) {
          if (c == spec_.escape && spec_.escape != spec_.quote && pos_ + 1 < buf_.size() &&
              buf_[pos_ + 1] == spec_.quote) {
            ++pos_;
          } else if (c == spec_.quote) {
            in_quotes_ = false;
          }
          continue;
        }
        if (c == spec_.quote) {
          in_quotes_ = true;
          continue;
        }
      } else if (c == '\\') {
        if (pos_ + 1 >= buf_.size()) break;  // the escaped byte is in the next message
        ++pos_;
        continue;
      }
      if (c == '\n') {
        emit(std::string_view(buf_).substr(start, pos_ + 1 - start), on_row);
        start = pos_ + 1;
      }
    }
    buf_.erase(0, start);
    pos_ -= start;
  }

  // End of data: a last row without a line end.
  template <typename F>
  void finish(F&& on_row) {
    if (!buf_.empty()) emit(std::string_view(buf_), on_row);
    buf_.clear();
    pos_ = 0;
  }

  // The key field of one row, unescaped/unquoted; nullopt for NULL or a missing field.
  std::optional<std::string> key_of(std::string_view row) const;

 private:
  std::optional<std::string> text_key(std::string_view row) const;
  std::optional<std::string> csv_key(std::string_view row) const;

  template <typename F>
  void emit(std::string_view row, F& on_row) {
    if (spec_.header && !header_seen_) {
      header_seen_ = true;
      on_row(row, std::optional<std::string>(), true);
      return;
    }
    // "\." alone on a line ends the data (an old client convention, text and CSV alike);
    // PostgreSQL ignores whatever follows it up to CopyDone, and so does the split.
    if (ended_) return;
    if (row == "\\.\n" || row == "\\.\r\n" || row == "\\.") {
      ended_ = true;
      return;
    }
    on_row(row, key_of(row), false);
  }

  router::CopySplit spec_;
  int key_index_;
  std::string buf_;
  std::size_t pos_ = 0;
  bool in_quotes_ = false;
  bool header_seen_ = false;
  bool ended_ = false;  // the end-of-data marker was seen
};

}  // namespace pgshard::executor
