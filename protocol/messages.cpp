// Typed views over every protocol v3 message body, and writers for each of them.
#include "protocol/messages.hpp"

#include "protocol/codec.hpp"

namespace pgshard::protocol {

namespace {

template <typename T>
std::optional<T> done(const BodyReader& r, T v) {
  if (!r.ok_and_done()) return std::nullopt;
  return v;
}

// A count word followed by that many int16 values (format codes).
template <typename List>
bool read_i16_list(BodyReader& r, List& out) {
  int16_t n = r.i16();
  if (n < 0) return false;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n && !r.failed(); ++i) out.push_back(r.i16());
  return !r.failed();
}

// A count word followed by length-prefixed values where -1 is NULL.
template <typename List>
bool read_values(BodyReader& r, List& out) {
  int16_t n = r.i16();
  if (n < 0) return false;
  out.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n && !r.failed(); ++i) {
    int32_t len = r.i32();
    if (len == -1) {
      out.emplace_back(std::nullopt);
    } else if (len < 0) {
      return false;
    } else {
      out.emplace_back(r.bytes(static_cast<std::size_t>(len)));
    }
  }
  return !r.failed();
}

template <typename List>
void write_i16_list(MessageWriter& w, const List& v) {
  w.i16(static_cast<int16_t>(v.size()));
  for (auto x : v) w.i16(x);
}

void write_value(MessageWriter& w, const Value& v) {
  if (!v) {
    w.i32(-1);
  } else {
    w.i32(static_cast<int32_t>(v->size())).bytes(*v);
  }
}

template <typename List>
void write_values(MessageWriter& w, const List& v) {
  w.i16(static_cast<int16_t>(v.size()));
  for (const auto& x : v) write_value(w, x);
}

}  // namespace

void write_empty(std::string& out, char type) {
  MessageWriter(out).begin(type).finish();
}

std::optional<Query> Query::parse(std::string_view body) {
  BodyReader r(body);
  Query q{r.cstr()};
  return done(r, q);
}
void Query::write(std::string& out) const {
  MessageWriter(out).begin(msg::kQuery).cstr(sql).finish();
}

std::optional<Parse> Parse::parse(std::string_view body) {
  BodyReader r(body);
  Parse p;
  p.name = r.cstr();
  p.query = r.cstr();
  int16_t n = r.i16();
  if (n < 0) return std::nullopt;
  for (int i = 0; i < n && !r.failed(); ++i) p.param_types.push_back(r.i32());
  return done(r, std::move(p));
}
void Parse::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kParse).cstr(name).cstr(query).i16(static_cast<int16_t>(param_types.size()));
  for (auto t : param_types) w.i32(t);
  w.finish();
}

std::optional<Bind> Bind::parse(std::string_view body) {
  std::optional<Bind> b(std::in_place);
  if (!read(body, *b)) b.reset();
  return b;
}
bool Bind::read(std::string_view body, Bind& b) {
  BodyReader r(body);
  b.portal = r.cstr();
  b.statement = r.cstr();
  return read_i16_list(r, b.param_formats) && read_values(r, b.params) &&
         read_i16_list(r, b.result_formats) && r.ok_and_done();
}
void Bind::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kBind).cstr(portal).cstr(statement);
  write_i16_list(w, param_formats);
  write_values(w, params);
  write_i16_list(w, result_formats);
  w.finish();
}
int16_t Bind::format_of(std::size_t i) const {
  if (param_formats.empty()) return 0;
  if (param_formats.size() == 1) return param_formats[0];
  return i < param_formats.size() ? param_formats[i] : 0;
}

std::optional<Describe> Describe::parse(std::string_view body) {
  BodyReader r(body);
  Describe d;
  d.kind = static_cast<char>(r.u8());
  d.name = r.cstr();
  if (d.kind != 'S' && d.kind != 'P') return std::nullopt;
  return done(r, d);
}
void Describe::write(std::string& out) const {
  MessageWriter(out).begin(msg::kDescribe).u8(static_cast<uint8_t>(kind)).cstr(name).finish();
}

std::optional<Close> Close::parse(std::string_view body) {
  BodyReader r(body);
  Close c;
  c.kind = static_cast<char>(r.u8());
  c.name = r.cstr();
  if (c.kind != 'S' && c.kind != 'P') return std::nullopt;
  return done(r, c);
}
void Close::write(std::string& out) const {
  MessageWriter(out).begin(msg::kClose).u8(static_cast<uint8_t>(kind)).cstr(name).finish();
}

std::optional<Execute> Execute::parse(std::string_view body) {
  BodyReader r(body);
  Execute e;
  e.portal = r.cstr();
  e.max_rows = r.i32();
  return done(r, e);
}
void Execute::write(std::string& out) const {
  MessageWriter(out).begin(msg::kExecute).cstr(portal).i32(max_rows).finish();
}

std::optional<FunctionCall> FunctionCall::parse(std::string_view body) {
  BodyReader r(body);
  FunctionCall f;
  f.function_oid = r.i32();
  if (!read_i16_list(r, f.arg_formats)) return std::nullopt;
  if (!read_values(r, f.args)) return std::nullopt;
  f.result_format = r.i16();
  return done(r, std::move(f));
}
void FunctionCall::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kFunctionCall).i32(function_oid);
  write_i16_list(w, arg_formats);
  write_values(w, args);
  w.i16(result_format).finish();
}

void CopyData::write(std::string& out) const {
  MessageWriter(out).begin(msg::kCopyData).bytes(data).finish();
}

std::optional<CopyFail> CopyFail::parse(std::string_view body) {
  BodyReader r(body);
  CopyFail c{r.cstr()};
  return done(r, c);
}
void CopyFail::write(std::string& out) const {
  MessageWriter(out).begin(msg::kCopyFail).cstr(message).finish();
}

std::optional<PasswordMessage> PasswordMessage::parse(std::string_view body) {
  BodyReader r(body);
  PasswordMessage p{r.cstr()};
  return done(r, p);
}
void PasswordMessage::write(std::string& out) const {
  MessageWriter(out).begin(msg::kPassword).cstr(password).finish();
}

std::optional<SASLInitialResponse> SASLInitialResponse::parse(std::string_view body) {
  BodyReader r(body);
  SASLInitialResponse s;
  s.mechanism = r.cstr();
  int32_t len = r.i32();
  if (len == -1) {
    s.data = std::nullopt;
  } else if (len < 0) {
    return std::nullopt;
  } else {
    s.data = r.bytes(static_cast<std::size_t>(len));
  }
  return done(r, s);
}
void SASLInitialResponse::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kPassword).cstr(mechanism);
  write_value(w, data);
  w.finish();
}

void SASLResponse::write(std::string& out) const {
  MessageWriter(out).begin(msg::kPassword).bytes(data).finish();
}

std::optional<Authentication> Authentication::parse(std::string_view body) {
  BodyReader r(body);
  Authentication a;
  a.code = r.i32();
  a.data = r.rest();
  if (r.failed()) return std::nullopt;
  if (a.code == auth::kMD5Password && a.data.size() != 4) return std::nullopt;
  if (a.code == auth::kOk && !a.data.empty()) return std::nullopt;
  return a;
}
void Authentication::write(std::string& out) const {
  MessageWriter(out).begin(msg::kAuthentication).i32(code).bytes(data).finish();
}
std::vector<std::string_view> Authentication::sasl_mechanisms() const {
  std::vector<std::string_view> out;
  BodyReader r(data);
  for (;;) {
    auto m = r.cstr();
    if (r.failed() || m.empty()) break;
    out.push_back(m);
  }
  return out;
}
void write_auth_sasl(std::string& out, const std::vector<std::string_view>& mechanisms) {
  MessageWriter w(out);
  w.begin(msg::kAuthentication).i32(auth::kSASL);
  for (auto m : mechanisms) w.cstr(m);
  w.u8(0).finish();
}

std::optional<BackendKeyData> BackendKeyData::parse(std::string_view body) {
  BodyReader r(body);
  BackendKeyData k;
  k.pid = r.i32();
  k.secret = r.i32();
  return done(r, k);
}
void BackendKeyData::write(std::string& out) const {
  MessageWriter(out).begin(msg::kBackendKeyData).i32(pid).i32(secret).finish();
}

std::optional<CommandComplete> CommandComplete::parse(std::string_view body) {
  BodyReader r(body);
  CommandComplete c{r.cstr()};
  return done(r, c);
}
void CommandComplete::write(std::string& out) const {
  MessageWriter(out).begin(msg::kCommandComplete).cstr(tag).finish();
}

std::optional<CopyResponse> CopyResponse::parse(char type, std::string_view body) {
  BodyReader r(body);
  CopyResponse c;
  c.type = type;
  c.format = static_cast<int8_t>(r.u8());
  if (!read_i16_list(r, c.column_formats)) return std::nullopt;
  return done(r, std::move(c));
}
void CopyResponse::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(type).u8(static_cast<uint8_t>(format));
  write_i16_list(w, column_formats);
  w.finish();
}

std::optional<DataRow> DataRow::parse(std::string_view body) {
  BodyReader r(body);
  DataRow d;
  if (!read_values(r, d.values)) return std::nullopt;
  return done(r, std::move(d));
}
void DataRow::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kDataRow);
  write_values(w, values);
  w.finish();
}

std::optional<FunctionCallResponse> FunctionCallResponse::parse(std::string_view body) {
  BodyReader r(body);
  FunctionCallResponse f;
  int32_t len = r.i32();
  if (len == -1) {
    f.result = std::nullopt;
  } else if (len < 0) {
    return std::nullopt;
  } else {
    f.result = r.bytes(static_cast<std::size_t>(len));
  }
  return done(r, f);
}
void FunctionCallResponse::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kFunctionCallResponse);
  write_value(w, result);
  w.finish();
}

std::optional<NegotiateProtocolVersion> NegotiateProtocolVersion::parse(std::string_view body) {
  BodyReader r(body);
  NegotiateProtocolVersion n;
  n.newest_minor = r.i32();
  int32_t count = r.i32();
  if (count < 0) return std::nullopt;
  for (int i = 0; i < count && !r.failed(); ++i) n.unrecognized.push_back(r.cstr());
  return done(r, std::move(n));
}
void NegotiateProtocolVersion::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kNegotiateProtocolVersion)
      .i32(newest_minor)
      .i32(static_cast<int32_t>(unrecognized.size()));
  for (auto o : unrecognized) w.cstr(o);
  w.finish();
}

std::optional<NotificationResponse> NotificationResponse::parse(std::string_view body) {
  BodyReader r(body);
  NotificationResponse n;
  n.pid = r.i32();
  n.channel = r.cstr();
  n.payload = r.cstr();
  return done(r, n);
}
void NotificationResponse::write(std::string& out) const {
  MessageWriter(out)
      .begin(msg::kNotificationResponse)
      .i32(pid)
      .cstr(channel)
      .cstr(payload)
      .finish();
}

std::optional<ParameterDescription> ParameterDescription::parse(std::string_view body) {
  BodyReader r(body);
  ParameterDescription p;
  int16_t n = r.i16();
  if (n < 0) return std::nullopt;
  for (int i = 0; i < n && !r.failed(); ++i) p.type_oids.push_back(r.i32());
  return done(r, std::move(p));
}
void ParameterDescription::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kParameterDescription).i16(static_cast<int16_t>(type_oids.size()));
  for (auto t : type_oids) w.i32(t);
  w.finish();
}

std::optional<ParameterStatus> ParameterStatus::parse(std::string_view body) {
  BodyReader r(body);
  ParameterStatus p;
  p.name = r.cstr();
  p.value = r.cstr();
  return done(r, p);
}
void ParameterStatus::write(std::string& out) const {
  MessageWriter(out).begin(msg::kParameterStatus).cstr(name).cstr(value).finish();
}

std::string ready_for_query(char status) {
  std::string out;
  ReadyForQuery{status}.write(out);
  return out;
}

std::optional<ReadyForQuery> ReadyForQuery::parse(std::string_view body) {
  BodyReader r(body);
  ReadyForQuery z;
  z.status = static_cast<char>(r.u8());
  if (z.status != 'I' && z.status != 'T' && z.status != 'E') return std::nullopt;
  return done(r, z);
}
void ReadyForQuery::write(std::string& out) const {
  MessageWriter(out).begin(msg::kReadyForQuery).u8(static_cast<uint8_t>(status)).finish();
}

std::optional<RowDescription> RowDescription::parse(std::string_view body) {
  BodyReader r(body);
  RowDescription d;
  int16_t n = r.i16();
  if (n < 0) return std::nullopt;
  d.fields.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n && !r.failed(); ++i) {
    FieldDescription f;
    f.name = r.cstr();
    f.table_oid = r.i32();
    f.column = r.i16();
    f.type_oid = r.i32();
    f.type_size = r.i16();
    f.type_modifier = r.i32();
    f.format = r.i16();
    d.fields.push_back(f);
  }
  return done(r, std::move(d));
}
void RowDescription::write(std::string& out) const {
  MessageWriter w(out);
  w.begin(msg::kRowDescription).i16(static_cast<int16_t>(fields.size()));
  for (const auto& f : fields) {
    w.cstr(f.name).i32(f.table_oid).i16(f.column).i32(f.type_oid).i16(f.type_size);
    w.i32(f.type_modifier).i16(f.format);
  }
  w.finish();
}

namespace {
std::string quoted(std::string_view v, char quote) {
  std::string out(1, quote);
  for (char c : v) {
    if (c == quote) out.push_back(quote);
    out.push_back(c);
  }
  out.push_back(quote);
  return out;
}
}  // namespace

std::string quote_literal(std::string_view v) {
  return quoted(v, '\'');
}

std::string quote_ident(std::string_view v) {
  return quoted(v, '"');
}

}  // namespace pgshard::protocol
