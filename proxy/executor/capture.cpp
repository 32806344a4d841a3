// Reads kept by pgshard: see capture.hpp.
#include "proxy/executor/capture.hpp"

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"

namespace pgshard::executor {

namespace proto = protocol;

namespace {

// The read's replies, kept: its columns' types, its rows, its first error. Notices still
// go to the client; the rest (CommandComplete...) is not wanted: the INSERT answers for
// itself.
class CapturingSink final : public ReplySink {
 public:
  CapturingSink(ReplySink& client, Captured& out) : client_(client), out_(out) {}

  awaitable<bool> write(std::string_view bytes) override {
    buffer_.append(bytes);
    std::string_view rest = buffer_;
    std::string notices;
    for (;;) {
      auto d = proto::decode_frame(rest);
      if (d.status != proto::DecodeStatus::kFrame) break;
      keep(d.frame, rest.substr(0, d.consumed), notices);
      rest.remove_prefix(d.consumed);
    }
    buffer_.erase(0, buffer_.size() - rest.size());
    if (!notices.empty()) co_return co_await client_.write(notices);
    co_return true;
  }
  // The read is one statement of the INSERT's request: that request's ReadyForQuery ends it.
  void end_request(std::string&, char) override {}

 private:
  void keep(const proto::Frame& f, std::string_view raw, std::string& notices) {
    switch (f.type) {
      case proto::msg::kRowDescription:
        out_.describe(f.body);
        break;
      case proto::msg::kDataRow:
        out_.add_row(f.body);
        break;
      case proto::msg::kErrorResponse:
        if (auto e = proto::ErrorFields::parse(f.body); e && out_.error_code.empty()) {
          out_.error_code = std::string(e->code());
          out_.error_message = std::string(e->message());
        }
        break;
      case proto::msg::kNoticeResponse:
        notices.append(raw);
        break;
      default:
        break;  // CommandComplete...: the INSERT answers for itself
    }
  }

  ReplySink& client_;
  Captured& out_;
  std::string buffer_;  // a message not all written yet
};

}  // namespace

void Captured::describe(std::string_view body) {
  if (auto d = proto::RowDescription::parse(body)) {
    types.clear();
    for (const auto& field : d->fields) types.push_back(static_cast<uint32_t>(field.type_oid));
  }
}

void Captured::add_row(std::string_view body) {
  if (too_big) return;
  if (auto row = proto::DataRow::parse(body)) {
    auto& kept = rows.emplace_back();
    for (const auto& v : row->values)
      kept.emplace_back(v ? std::optional<std::string>(*v) : std::nullopt);
    bytes += body.size();
    too_big = rows.size() > max_rows || bytes > max_bytes;
  }
}

awaitable<void> capture_read(Client& c, ReplySink& client, const router::Route& route,
                             const std::string& sql, Captured& out) {
  std::string request;
  proto::Query{sql}.write(request);
  CapturingSink capturing(client, out);
  co_await fan_out(c, capturing, route, {request, true, proto::msg::kQuery});
}

}  // namespace pgshard::executor
