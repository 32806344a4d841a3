// Reads kept by pgshard: see capture.hpp.
#include "proxy/executor/capture.hpp"

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"

namespace pgshard::executor {

namespace proto = protocol;

namespace {

// The client as the executor sees it, but with the request replaced and the answer kept.
class CapturingClient final : public Client {
 public:
  CapturingClient(Client& c, std::string request, Captured& out)
      : c_(c), request_(std::move(request)), out_(out) {}

  runtime::Worker& worker() override { return c_.worker(); }
  const config::Config& config() const override { return c_.config(); }
  const config::User& user() const override { return c_.user(); }
  const std::string& prefix() const override { return c_.prefix(); }
  const char* set_waiting(const char* what) override { return c_.set_waiting(what); }
  const std::string& request() const override { return request_; }
  std::string_view stored_text(std::string_view name) const override {
    return c_.stored_text(name);
  }
  const std::vector<int32_t>& stored_types(std::string_view name) const override {
    return c_.stored_types(name);
  }
  bool injected_parse(std::string_view) const override { return false; }
  router::SessionHints& hints() override { return c_.hints(); }

  awaitable<bool> write_client(std::string_view bytes) override {
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
    if (!notices.empty()) co_return co_await c_.write_client(notices);
    co_return true;
  }
  bool gone() const override { return c_.gone(); }
  void mark_gone() override { c_.mark_gone(); }
  void skip_to_sync() override {}
  void answer_extended(std::string_view answer, std::string& out) override {
    c_.answer_extended(answer, out);
  }
  awaitable<void> copy_violation(char type) override { return c_.copy_violation(type); }
  protocol::Buffer& input() override { return c_.input(); }
  awaitable<bool> read_client() override { return c_.read_client(); }
  awaitable<bool> drain() override { return c_.drain(); }
  awaitable<void> watch_client(std::shared_ptr<ClientWatch> watch,
                               std::function<void()> on_gone) override {
    return c_.watch_client(std::move(watch), std::move(on_gone));
  }
  awaitable<void> stop_watch(ClientWatch& watch) override { return c_.stop_watch(watch); }
  pool::Backends& backends() override { return c_.backends(); }
  awaitable<bool> attach(int shard) override { return c_.attach(shard); }
  void release(std::shared_ptr<pool::Link> link) override { c_.release(std::move(link)); }
  bool session_pooled() const override { return c_.session_pooled(); }
  std::string sync_prelude(pool::ServerConn& conn) override { return c_.sync_prelude(conn); }
  awaitable<bool> run_ours(const std::shared_ptr<pool::Link>& link,
                           const std::string& sql) override {
    return c_.run_ours(link, sql);
  }
  awaitable<bool> write_server(const std::shared_ptr<pool::Link>& link,
                               std::string_view bytes) override {
    return c_.write_server(link, bytes);
  }
  void running_on(std::vector<pool::ServerConn*> servers) override {
    c_.running_on(std::move(servers));
  }
  txn::Transaction& transaction() override { return c_.transaction(); }
  void fail_transaction() override { c_.fail_transaction(); }
  char transaction_status() const override { return c_.transaction_status(); }
  std::optional<std::string> replace_error(std::string_view body) override {
    return c_.replace_error(body);
  }

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
        break;  // CommandComplete, ReadyForQuery...: the INSERT answers for itself
    }
  }

  Client& c_;
  std::string request_;
  Captured& out_;
  std::string buffer_;
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

awaitable<void> capture_read(Client& c, const router::Route& route, const std::string& sql,
                             Captured& out) {
  std::string request;
  proto::Query{sql}.write(request);
  CapturingClient capturing(c, std::move(request), out);
  co_await fan_out(capturing, route, true, proto::msg::kQuery);
}

}  // namespace pgshard::executor
