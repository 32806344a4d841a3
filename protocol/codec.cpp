// Protocol v3 framing: bounded frame decoding, a body reader and a writer that fills lengths.
#include "protocol/codec.hpp"

namespace pgshard::protocol {

DecodeResult decode_startup(std::string_view in) {
  DecodeResult r;
  if (in.size() < 4) return r;
  const uint32_t len = load_be32(in.data());
  // The shortest valid startup packet is a CancelRequest/SSLRequest header: 8 bytes.
  if (len < 8 || len > kMaxStartupPacket) {
    r.status = DecodeStatus::kError;
    r.error = "invalid length of startup packet";
    return r;
  }
  if (in.size() < len) {
    r.needed = len;
    return r;
  }
  r.status = DecodeStatus::kFrame;
  r.frame.type = 0;
  r.frame.body = in.substr(4, len - 4);
  r.consumed = len;
  return r;
}

MessageWriter& MessageWriter::begin(char type) {
  out_.push_back(type);
  return begin_untyped();
}

MessageWriter& MessageWriter::begin_untyped() {
  len_at_ = out_.size();
  out_.append(4, '\0');
  return *this;
}

MessageWriter& MessageWriter::u8(uint8_t v) {
  out_.push_back(static_cast<char>(v));
  return *this;
}

MessageWriter& MessageWriter::i16(int16_t v) {
  uint16_t be = __builtin_bswap16(static_cast<uint16_t>(v));
  out_.append(reinterpret_cast<const char*>(&be), 2);
  return *this;
}

MessageWriter& MessageWriter::i32(int32_t v) {
  uint32_t be = __builtin_bswap32(static_cast<uint32_t>(v));
  out_.append(reinterpret_cast<const char*>(&be), 4);
  return *this;
}

MessageWriter& MessageWriter::cstr(std::string_view s) {
  out_.append(s);
  out_.push_back('\0');
  return *this;
}

MessageWriter& MessageWriter::bytes(std::string_view s) {
  out_.append(s);
  return *this;
}

void MessageWriter::finish() {
  uint32_t len = static_cast<uint32_t>(out_.size() - len_at_);
  uint32_t be = __builtin_bswap32(len);
  std::memcpy(out_.data() + len_at_, &be, 4);
}

}  // namespace pgshard::protocol
