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

bool BodyReader::need(std::size_t n) {
  if (failed_ || body_.size() - pos_ < n) {
    failed_ = true;
    return false;
  }
  return true;
}

uint8_t BodyReader::u8() {
  if (!need(1)) return 0;
  return static_cast<uint8_t>(body_[pos_++]);
}

int16_t BodyReader::i16() {
  if (!need(2)) return 0;
  auto v = static_cast<int16_t>(load_be16(body_.data() + pos_));
  pos_ += 2;
  return v;
}

int32_t BodyReader::i32() {
  if (!need(4)) return 0;
  auto v = static_cast<int32_t>(load_be32(body_.data() + pos_));
  pos_ += 4;
  return v;
}

std::string_view BodyReader::cstr() {
  if (failed_) return {};
  auto nul = body_.find('\0', pos_);
  if (nul == std::string_view::npos) {
    failed_ = true;
    return {};
  }
  auto s = body_.substr(pos_, nul - pos_);
  pos_ = nul + 1;
  return s;
}

std::string_view BodyReader::bytes(std::size_t n) {
  if (!need(n)) return {};
  auto s = body_.substr(pos_, n);
  pos_ += n;
  return s;
}

std::string_view BodyReader::rest() {
  if (failed_) return {};
  auto s = body_.substr(pos_);
  pos_ = body_.size();
  return s;
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
