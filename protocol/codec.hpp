// Protocol v3 framing: bounded frame decoding, a body reader and a writer that fills lengths.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <optional>
#include <string>
#include <string_view>

namespace pgshard::protocol {

// Largest message PostgreSQL itself accepts (PQ_LARGE_MESSAGE_LIMIT is 1 GB - 1).
inline constexpr std::size_t kDefaultMaxMessage = 0x3fffffff;
// postmaster.c: MAX_STARTUP_PACKET_LENGTH.
inline constexpr std::size_t kMaxStartupPacket = 10000;

// A typed message: type byte plus a view of the body (length word excluded).
// The view points into a buffer the caller owns.
struct Frame {
  char type = 0;
  std::string_view body;
  // Bytes of the whole frame on the wire (type + length + body).
  std::size_t wire_size() const { return body.size() + 5; }
};

inline uint32_t load_be32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return __builtin_bswap32(v);
}

enum class DecodeStatus { kFrame, kNeedMore, kError };

struct DecodeResult {
  DecodeStatus status = DecodeStatus::kNeedMore;
  Frame frame;
  std::size_t consumed = 0;  // bytes consumed from the input on kFrame
  const char* error = nullptr;
  // On kNeedMore: total bytes the next frame needs (0 when the header is incomplete).
  std::size_t needed = 0;
};

// Decodes one typed frame from the start of `in`. Limits are checked from the header
// alone, before the caller allocates room for the body. (Inline: every request's frames
// are walked several times.)
inline DecodeResult decode_frame(std::string_view in,
                                 std::size_t max_message = kDefaultMaxMessage) {
  DecodeResult r;
  if (in.size() < 5) return r;
  const uint32_t len = load_be32(in.data() + 1);
  // The length counts itself, so anything below 4 is malformed; a value with the sign bit
  // set is "negative" on the wire and also lands here or in the max check.
  if (len < 4) {
    r.status = DecodeStatus::kError;
    r.error = "invalid message length";
    return r;
  }
  if (len > max_message) {
    r.status = DecodeStatus::kError;
    r.error = "message too large";
    return r;
  }
  const std::size_t total = std::size_t{len} + 1;
  if (in.size() < total) {
    r.needed = total;
    return r;
  }
  r.status = DecodeStatus::kFrame;
  r.frame.type = in[0];
  r.frame.body = in.substr(5, len - 4);
  r.consumed = total;
  return r;
}

// The whole frames of a buffer in order, for range-for: `for (auto m : frames(batch))`
// gives each frame and its raw bytes; iteration ends at the first partial or bad frame.
// It views `bytes`: pass a buffer that outlives the loop, not a temporary.
class Frames {
 public:
  struct Message {
    Frame frame;
    std::string_view raw;  // type, length and body as on the wire
  };
  class iterator {
   public:
    explicit iterator(std::string_view rest) : rest_(rest) { load(); }
    Message operator*() const { return {d_.frame, rest_.substr(0, d_.consumed)}; }
    iterator& operator++() {
      rest_.remove_prefix(d_.consumed);
      load();
      return *this;
    }
    bool operator==(std::default_sentinel_t) const { return d_.status != DecodeStatus::kFrame; }

   private:
    void load() { d_ = decode_frame(rest_); }
    std::string_view rest_;
    DecodeResult d_;
  };
  explicit Frames(std::string_view bytes) : bytes_(bytes) {}
  iterator begin() const { return iterator(bytes_); }
  std::default_sentinel_t end() const { return {}; }

 private:
  std::string_view bytes_;
};
inline Frames frames(std::string_view bytes) {
  return Frames(bytes);
}

// Decodes one untyped startup-phase packet (StartupMessage, SSLRequest, CancelRequest...).
// `frame.type` is 0 and `frame.body` excludes the length word.
DecodeResult decode_startup(std::string_view in);

inline uint16_t load_be16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return __builtin_bswap16(v);
}

// Reads fields out of a message body with bounds checks. Any read past the end or a missing
// string terminator sets `failed()`; values read after that are zero/empty.
class BodyReader {
 public:
  explicit BodyReader(std::string_view body) : body_(body) {}

  uint8_t u8();
  int16_t i16();
  int32_t i32();
  // NUL-terminated string (the terminator is consumed, not returned).
  std::string_view cstr();
  std::string_view bytes(std::size_t n);
  std::string_view rest();

  bool failed() const { return failed_; }
  bool at_end() const { return pos_ == body_.size(); }
  std::size_t remaining() const { return body_.size() - pos_; }
  // True when everything was read cleanly and nothing is left over.
  bool ok_and_done() const { return !failed_ && at_end(); }

 private:
  bool need(std::size_t n);
  std::string_view body_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

// (Inline: message bodies are read field by field on every request.)
inline bool BodyReader::need(std::size_t n) {
  if (failed_ || body_.size() - pos_ < n) {
    failed_ = true;
    return false;
  }
  return true;
}

inline uint8_t BodyReader::u8() {
  if (!need(1)) return 0;
  return static_cast<uint8_t>(body_[pos_++]);
}

inline int16_t BodyReader::i16() {
  if (!need(2)) return 0;
  auto v = static_cast<int16_t>(load_be16(body_.data() + pos_));
  pos_ += 2;
  return v;
}

inline int32_t BodyReader::i32() {
  if (!need(4)) return 0;
  auto v = static_cast<int32_t>(load_be32(body_.data() + pos_));
  pos_ += 4;
  return v;
}

inline std::string_view BodyReader::cstr() {
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

inline std::string_view BodyReader::bytes(std::size_t n) {
  if (!need(n)) return {};
  auto s = body_.substr(pos_, n);
  pos_ += n;
  return s;
}

inline std::string_view BodyReader::rest() {
  if (failed_) return {};
  auto s = body_.substr(pos_);
  pos_ = body_.size();
  return s;
}

// Appends messages to a string. begin() writes type and a placeholder length; finish()
// patches the length, so no message needs a precomputed size.
class MessageWriter {
 public:
  explicit MessageWriter(std::string& out) : out_(out) {}

  MessageWriter& begin(char type);
  MessageWriter& begin_untyped();  // startup-phase packets have no type byte
  MessageWriter& u8(uint8_t v);
  MessageWriter& i16(int16_t v);
  MessageWriter& i32(int32_t v);
  MessageWriter& cstr(std::string_view s);
  MessageWriter& bytes(std::string_view s);
  void finish();

 private:
  std::string& out_;
  std::size_t len_at_ = 0;
};

}  // namespace pgshard::protocol
