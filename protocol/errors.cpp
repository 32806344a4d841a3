// ErrorResponse / NoticeResponse: SQLSTATE constants, field views and builders.
#include "protocol/errors.hpp"

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"

namespace pgshard::protocol {

namespace {
void write_fields(std::string& out, char type, const ErrorInfo& e) {
  MessageWriter w(out);
  w.begin(type);
  w.u8(field::kSeverity).cstr(e.severity);
  w.u8(field::kSeverityNonLocalized).cstr(e.severity);
  w.u8(field::kCode).cstr(e.code);
  w.u8(field::kMessage).cstr(e.message);
  if (!e.detail.empty()) w.u8(field::kDetail).cstr(e.detail);
  if (!e.hint.empty()) w.u8(field::kHint).cstr(e.hint);
  w.u8(0).finish();
}
}  // namespace

ErrorInfo error(std::string_view code, std::string message, std::string detail, std::string hint) {
  return ErrorInfo{"ERROR", std::string(code), std::move(message), std::move(detail),
                   std::move(hint)};
}

ErrorInfo fatal(std::string_view code, std::string message, std::string detail, std::string hint) {
  return ErrorInfo{"FATAL", std::string(code), std::move(message), std::move(detail),
                   std::move(hint)};
}

void write_error(std::string& out, const ErrorInfo& e) {
  write_fields(out, msg::kErrorResponse, e);
}

void write_notice(std::string& out, const ErrorInfo& e) {
  write_fields(out, msg::kNoticeResponse, e);
}

std::optional<ErrorFields> ErrorFields::parse(std::string_view body) {
  BodyReader r(body);
  ErrorFields f;
  for (;;) {
    uint8_t code = r.u8();
    if (r.failed()) return std::nullopt;
    if (code == 0) break;
    auto value = r.cstr();
    if (r.failed()) return std::nullopt;
    f.fields.emplace_back(static_cast<char>(code), value);
  }
  if (!r.at_end()) return std::nullopt;
  return f;
}

std::string_view ErrorFields::get(char code) const {
  for (const auto& [c, v] : fields)
    if (c == code) return v;
  return {};
}

}  // namespace pgshard::protocol
