// libFuzzer target: the v3 codec — framing of arbitrary bytes and every typed view over the
// frames it finds. Nothing may crash, read out of bounds or allocate past the limits.
#include <cstdint>
#include <string_view>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"

namespace p = pgshard::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view rest(reinterpret_cast<const char*>(data), size);
  for (int frames = 0; !rest.empty() && frames < 1000; ++frames) {
    auto d = p::decode_frame(rest, 1 << 20);
    if (d.status != p::DecodeStatus::kFrame) break;
    const auto body = d.frame.body;
    switch (d.frame.type) {
      case 'Q':
        (void)p::Query::parse(body);
        break;
      case 'P':
        (void)p::Parse::parse(body);
        break;
      case 'B':
        if (auto b = p::Bind::parse(body))
          for (std::size_t i = 0; i < b->params.size(); ++i) (void)b->format_of(i);
        break;
      case 'D':
        (void)p::Describe::parse(body);
        (void)p::DataRow::parse(body);
        break;
      case 'C':
        (void)p::Close::parse(body);
        (void)p::CommandComplete::parse(body);
        break;
      case 'E':
        (void)p::Execute::parse(body);
        if (auto e = p::ErrorFields::parse(body)) {
          (void)e->code();
          (void)e->message();
          (void)e->severity();
        }
        break;
      case 'T':
        (void)p::RowDescription::parse(body);
        break;
      case 'Z':
        (void)p::ReadyForQuery::parse(body);
        break;
      case 'S':
        (void)p::ParameterStatus::parse(body);
        break;
      case 'f':
        (void)p::CopyFail::parse(body);
        break;
      case 'R':
        (void)p::Authentication::parse(body);
        break;
      case 'p':
        (void)p::PasswordMessage::parse(body);
        (void)p::SASLInitialResponse::parse(body);
        break;
      default:
        break;
    }
    rest.remove_prefix(d.consumed);
  }
  return 0;
}
