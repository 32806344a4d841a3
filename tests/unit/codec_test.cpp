// Framing: pieces, batches, bad lengths, limits, and random input that must not crash.
#include "protocol/codec.hpp"

#include <catch2/catch.hpp>
#include <random>

#include "protocol/buffer.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "protocol/startup.hpp"

using namespace pgshard::protocol;

namespace {
std::string two_messages() {
  std::string out;
  Query{"select 1"}.write(out);
  write_empty(out, msg::kSync);
  return out;
}
}  // namespace

TEST_CASE("a stream fed byte by byte yields each frame once it is complete", "[codec]") {
  std::string wire = two_messages();
  std::string buf;
  std::vector<std::pair<char, std::string>> got;
  for (char c : wire) {
    buf.push_back(c);
    for (;;) {
      auto d = decode_frame(buf);
      REQUIRE(d.status != DecodeStatus::kError);
      if (d.status == DecodeStatus::kNeedMore) break;
      got.emplace_back(d.frame.type, std::string(d.frame.body));
      buf.erase(0, d.consumed);
    }
  }
  REQUIRE(got.size() == 2);
  CHECK(got[0].first == 'Q');
  CHECK(got[0].second == std::string("select 1\0", 9));
  CHECK(got[1].first == 'S');
  CHECK(got[1].second.empty());
  CHECK(buf.empty());
}

TEST_CASE("two messages in one buffer decode one after the other", "[codec]") {
  std::string wire = two_messages();
  auto a = decode_frame(wire);
  REQUIRE(a.status == DecodeStatus::kFrame);
  CHECK(a.frame.type == 'Q');
  auto b = decode_frame(std::string_view(wire).substr(a.consumed));
  REQUIRE(b.status == DecodeStatus::kFrame);
  CHECK(b.frame.type == 'S');
  CHECK(a.consumed + b.consumed == wire.size());
}

TEST_CASE("truncated frames ask for more and say how much", "[codec]") {
  std::string wire;
  Query{"select 1"}.write(wire);
  for (std::size_t n = 0; n < wire.size(); ++n) {
    auto d = decode_frame(std::string_view(wire).substr(0, n));
    CHECK(d.status == DecodeStatus::kNeedMore);
    if (n >= 5) CHECK(d.needed == wire.size());
  }
}

TEST_CASE("bad lengths are errors before any allocation", "[codec]") {
  auto frame_with_len = [](uint32_t len) {
    std::string s(1, 'Q');
    uint32_t be = __builtin_bswap32(len);
    s.append(reinterpret_cast<char*>(&be), 4);
    return s;
  };
  CHECK(decode_frame(frame_with_len(3)).status == DecodeStatus::kError);
  CHECK(decode_frame(frame_with_len(0)).status == DecodeStatus::kError);
  CHECK(decode_frame(frame_with_len(0xFFFFFFFF)).status == DecodeStatus::kError);  // "negative"
  CHECK(decode_frame(frame_with_len(0x80000000)).status == DecodeStatus::kError);
  CHECK(decode_frame(frame_with_len(1000), 999).status == DecodeStatus::kError);
  auto ok = decode_frame(frame_with_len(1000), 1000);
  CHECK(ok.status == DecodeStatus::kNeedMore);
  CHECK(ok.needed == 1001);
  CHECK(decode_frame(frame_with_len(4)).status == DecodeStatus::kFrame);
}

TEST_CASE("startup packets are bounded to 10000 bytes", "[codec]") {
  auto packet = [](uint32_t len) {
    uint32_t be = __builtin_bswap32(len);
    return std::string(reinterpret_cast<char*>(&be), 4);
  };
  CHECK(decode_startup(packet(10001)).status == DecodeStatus::kError);
  CHECK(decode_startup(packet(7)).status == DecodeStatus::kError);
  CHECK(decode_startup(packet(10000)).status == DecodeStatus::kNeedMore);
}

TEST_CASE("missing string terminators make views fail, not overrun", "[codec]") {
  CHECK_FALSE(Query::parse(std::string_view("select 1", 8)));
  CHECK_FALSE(Parse::parse(std::string_view("s1\0select", 9)));
  CHECK_FALSE(ParameterStatus::parse(std::string_view("TimeZone\0UTC", 12)));
  CHECK_FALSE(ErrorFields::parse(std::string_view("SERROR", 6)));
  CHECK_FALSE(CommandComplete::parse(std::string_view()));
  const char* err = nullptr;
  std::string body("\x00\x03\x00\x00user\0app", 12);  // no final terminator
  CHECK_FALSE(parse_startup(body, &err));
}

TEST_CASE("views reject trailing bytes and negative counts", "[codec]") {
  std::string q("select 1\0X", 10);
  CHECK_FALSE(Query::parse(q));
  std::string bind("\0\0\xff\xff", 4);  // portal "", statement "", -1 format codes
  CHECK_FALSE(Bind::parse(bind));
  std::string row("\x00\x01\xff\xff\xff\xfe", 6);  // a value of length -2
  CHECK_FALSE(DataRow::parse(row));
}

TEST_CASE("10000 random buffers never crash the decoder or the views", "[codec][fuzz]") {
  std::mt19937 rng(12345);
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_int_distribution<int> size(0, 64);
  const char types[] = "QPBDECHSXdcfpRK23CGHWDIEVvnNAtS1sZT";
  for (int i = 0; i < 10000; ++i) {
    std::string buf(static_cast<std::size_t>(size(rng)), '\0');
    for (auto& c : buf) c = static_cast<char>(byte(rng));
    if (!buf.empty() && i % 2 == 0)
      buf[0] = types[static_cast<std::size_t>(i) % (sizeof types - 1)];
    auto d = decode_frame(buf, 1 << 20);
    if (d.status == DecodeStatus::kFrame) {
      auto body = d.frame.body;
      (void)Query::parse(body);
      (void)Parse::parse(body);
      (void)Bind::parse(body);
      (void)Describe::parse(body);
      (void)Execute::parse(body);
      (void)FunctionCall::parse(body);
      (void)DataRow::parse(body);
      (void)RowDescription::parse(body);
      (void)ErrorFields::parse(body);
      (void)Authentication::parse(body);
      (void)NegotiateProtocolVersion::parse(body);
      (void)ParameterDescription::parse(body);
      (void)CopyResponse::parse('G', body);
      (void)SASLInitialResponse::parse(body);
    }
    const char* err = nullptr;
    auto s = decode_startup(buf);
    if (s.status == DecodeStatus::kFrame) (void)parse_startup(s.frame.body, &err);
    (void)parse_startup(buf, &err);
  }
  SUCCEED("no crash on 10000 random buffers");
}

TEST_CASE("frames() walks the whole frames of a buffer and stops at a partial one", "[codec]") {
  std::string batch;
  pgshard::protocol::write_empty(batch, 'S');
  batch += std::string("Q\0\0\0\x20select", 10);  // a Query cut short
  std::string full;
  pgshard::protocol::write_empty(full, 'H');
  const std::string wire = full + batch;  // (frames() views its argument: keep it alive)
  std::string types;
  std::size_t bytes = 0;
  for (const auto m : pgshard::protocol::frames(wire)) {
    types += m.frame.type;
    bytes += m.raw.size();
  }
  CHECK(types == "HS");
  CHECK(bytes == 10);
  CHECK(pgshard::protocol::frames("").begin() == std::default_sentinel);
}

TEST_CASE("spare read blocks are reused, bounded, and never hold a client's bytes", "[codec]") {
  SpareBlocks spare;
  Buffer a;
  std::size_t room = 0;
  a.append("hello");
  REQUIRE(a.capacity() == SpareBlocks::kBlock);
  a.consume(5);
  const char* block = a.data();
  spare.take_from(a);  // idle: the block goes to the spares
  CHECK(a.capacity() == 0);
  Buffer b;
  spare.give_to(b);  // the next client to read gets it back, empty
  CHECK(b.capacity() == SpareBlocks::kBlock);
  CHECK(b.empty());
  CHECK(b.prepare(1000, &room) == block);
  CHECK(room == SpareBlocks::kBlock);
  b.commit(3);
  spare.give_to(b);  // holds storage already: nothing changes
  CHECK(b.size() == 3);
  // A grown buffer is freed, not kept; a buffer with storage is never given another.
  Buffer big;
  big.append(std::string(5000, 'x'));
  big.consume(5000);
  spare.take_from(big);
  CHECK(big.capacity() == 0);
  Buffer none;
  spare.give_to(none);
  CHECK(none.capacity() == 0);  // nothing kept (the big one was not)
  // At most 64 blocks are kept, whatever the number of clients going idle at once.
  std::vector<Buffer> many(100);
  for (auto& m : many) {
    m.append("x");
    m.consume(1);
    spare.take_from(m);
  }
  int given = 0;
  for (auto& m : many) {
    spare.give_to(m);
    given += m.capacity() == SpareBlocks::kBlock;
  }
  CHECK(given == 64);
}
