// Joins several shards' COPY ... TO STDOUT streams into one (see copy_out.hpp).
#include "proxy/executor/copy_out.hpp"

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"

namespace pgshard::executor {

namespace {

// COPY binary format, "File Formats": signature, flags field, header extension length.
constexpr std::size_t kBinaryHeader = 11 + 4 + 4;
constexpr std::string_view kBinaryTrailer("\xff\xff", 2);

uint32_t be32(std::string_view s) {
  uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(s[i]);
  return v;
}

}  // namespace

CopyOutJoin::CopyOutJoin(int legs, std::string_view copy_out_response, bool header)
    : legs_(static_cast<std::size_t>(legs)),
      binary_(!copy_out_response.empty() && copy_out_response[0] == 1),
      header_(header && !binary_) {}

void CopyOutJoin::emit(std::string_view a, std::string_view b, std::string& out) {
  if (a.empty() && b.empty()) return;
  protocol::MessageWriter(out).begin(protocol::msg::kCopyData).bytes(a).bytes(b).finish();
}

void CopyOutJoin::data(int i, std::string_view payload, std::string& out) {
  auto& leg = legs_[static_cast<std::size_t>(i)];
  ++leg.messages;
  if (!binary_) {
    if (header_ && !leg.header_done) {
      leg.header_done = true;
      if (header_sent_) return;
      header_sent_ = true;
    }
    emit(payload, {}, out);
    return;
  }
  std::string rest;  // (only while a leg's header is still being read)
  if (!leg.header_done) {
    leg.head.append(payload);
    if (leg.head.size() < kBinaryHeader) return;
    const std::size_t size = kBinaryHeader + be32(std::string_view(leg.head).substr(15, 4));
    if (size < kBinaryHeader || leg.head.size() < size) return;
    if (leg.head.compare(0, 11, std::string_view("PGCOPY\n\xff\r\n\0", 11)) != 0 && error_.empty())
      error_ = "a shard's binary COPY stream has no file header";
    if (!header_sent_) emit(std::string_view(leg.head).substr(0, size), {}, out);
    header_sent_ = true;
    leg.header_done = true;
    rest = leg.head.substr(size);
    leg.head.clear();
    leg.head.shrink_to_fit();
    payload = rest;
  }
  // The last two bytes may be the trailer: they are held until more data or the end.
  if (leg.tail.size() + payload.size() <= kBinaryTrailer.size()) {
    leg.tail.append(payload);
    return;
  }
  if (payload.size() >= kBinaryTrailer.size()) {
    emit(leg.tail, payload.substr(0, payload.size() - kBinaryTrailer.size()), out);
    leg.tail.assign(payload.substr(payload.size() - kBinaryTrailer.size()));
    return;
  }
  std::string joined = leg.tail + std::string(payload);
  const std::size_t keep = joined.size() - kBinaryTrailer.size();
  emit(std::string_view(joined).substr(0, keep), {}, out);
  leg.tail = joined.substr(keep);
}

void CopyOutJoin::end(int i) {
  auto& leg = legs_[static_cast<std::size_t>(i)];
  if (leg.ended) return;
  leg.ended = true;
  if (!binary_ || leg.messages == 0) return;
  if ((!leg.header_done || leg.tail != kBinaryTrailer) && error_.empty())
    error_ = "a shard's binary COPY stream did not end with the file trailer";
  leg.tail.clear();
}

void CopyOutJoin::finish(std::string& out) {
  if (binary_ && header_sent_) emit(kBinaryTrailer, {}, out);
}

}  // namespace pgshard::executor
