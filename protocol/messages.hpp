// Typed views over every protocol v3 message body, and writers for each of them.
//
// parse() takes a frame body and returns std::nullopt when the body is malformed (short,
// missing terminator, trailing bytes). Views point into the body; write() appends a whole
// frame. PostgreSQL docs: "Message Formats" (protocol-message-formats.html).
#pragma once

#include <boost/container/small_vector.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshard::protocol {

namespace msg {
// Frontend message types.
inline constexpr char kBind = 'B';
inline constexpr char kClose = 'C';
inline constexpr char kCopyData = 'd';
inline constexpr char kCopyDone = 'c';
inline constexpr char kCopyFail = 'f';
inline constexpr char kDescribe = 'D';
inline constexpr char kExecute = 'E';
inline constexpr char kFlush = 'H';
inline constexpr char kFunctionCall = 'F';
inline constexpr char kParse = 'P';
inline constexpr char kPassword = 'p';  // also SASLInitialResponse, SASLResponse, GSSResponse
inline constexpr char kQuery = 'Q';
inline constexpr char kSync = 'S';
inline constexpr char kTerminate = 'X';
// Backend message types.
inline constexpr char kAuthentication = 'R';
inline constexpr char kBackendKeyData = 'K';
inline constexpr char kBindComplete = '2';
inline constexpr char kCloseComplete = '3';
inline constexpr char kCommandComplete = 'C';
inline constexpr char kCopyInResponse = 'G';
inline constexpr char kCopyOutResponse = 'H';
inline constexpr char kCopyBothResponse = 'W';
inline constexpr char kDataRow = 'D';
inline constexpr char kEmptyQueryResponse = 'I';
inline constexpr char kErrorResponse = 'E';
inline constexpr char kFunctionCallResponse = 'V';
inline constexpr char kNegotiateProtocolVersion = 'v';
inline constexpr char kNoData = 'n';
inline constexpr char kNoticeResponse = 'N';
inline constexpr char kNotificationResponse = 'A';
inline constexpr char kParameterDescription = 't';
inline constexpr char kParameterStatus = 'S';
inline constexpr char kParseComplete = '1';
inline constexpr char kPortalSuspended = 's';
inline constexpr char kReadyForQuery = 'Z';
inline constexpr char kRowDescription = 'T';
}  // namespace msg

// Messages with an empty body: Sync, Flush, Terminate, CopyDone, ParseComplete,
// BindComplete, CloseComplete, NoData, EmptyQueryResponse, PortalSuspended.
void write_empty(std::string& out, char type);

// A parameter or column value: nullopt is SQL NULL (length -1 on the wire).
using Value = std::optional<std::string_view>;

// ---- Frontend ----

struct Query {
  std::string_view sql;
  static std::optional<Query> parse(std::string_view body);
  void write(std::string& out) const;
};

struct Parse {
  std::string_view name;
  std::string_view query;
  std::vector<int32_t> param_types;
  static std::optional<Parse> parse(std::string_view body);
  void write(std::string& out) const;
};

struct Bind {
  // Most Binds carry a few parameters: they are read without allocating.
  using Formats = boost::container::small_vector<int16_t, 4>;
  using Values = boost::container::small_vector<Value, 4>;
  std::string_view portal;
  std::string_view statement;
  Formats param_formats;
  Values params;
  Formats result_formats;
  static std::optional<Bind> parse(std::string_view body);
  static bool read(std::string_view body, Bind& into);  // parse() into an empty Bind
  void write(std::string& out) const;
  // Format of parameter i per the protocol rule: none = all text, one = applies to all.
  int16_t format_of(std::size_t i) const;
};

// Describe and Close share a layout: 'S' (statement) or 'P' (portal) plus a name.
struct Describe {
  char kind = 'S';
  std::string_view name;
  static std::optional<Describe> parse(std::string_view body);
  void write(std::string& out) const;
};

struct Close {
  char kind = 'S';
  std::string_view name;
  static std::optional<Close> parse(std::string_view body);
  void write(std::string& out) const;
};

struct Execute {
  std::string_view portal;
  int32_t max_rows = 0;
  static std::optional<Execute> parse(std::string_view body);
  void write(std::string& out) const;
};

struct FunctionCall {
  int32_t function_oid = 0;
  std::vector<int16_t> arg_formats;
  std::vector<Value> args;
  int16_t result_format = 0;
  static std::optional<FunctionCall> parse(std::string_view body);
  void write(std::string& out) const;
};

// CopyData in either direction: the body is the data.
struct CopyData {
  std::string_view data;
  static std::optional<CopyData> parse(std::string_view body) { return CopyData{body}; }
  void write(std::string& out) const;
};

struct CopyFail {
  std::string_view message;
  static std::optional<CopyFail> parse(std::string_view body);
  void write(std::string& out) const;
};

struct PasswordMessage {
  std::string_view password;
  static std::optional<PasswordMessage> parse(std::string_view body);
  void write(std::string& out) const;
};

struct SASLInitialResponse {
  std::string_view mechanism;
  Value data;
  static std::optional<SASLInitialResponse> parse(std::string_view body);
  void write(std::string& out) const;
};

// SASLResponse and GSSResponse: the body is the data.
struct SASLResponse {
  std::string_view data;
  static std::optional<SASLResponse> parse(std::string_view body) { return SASLResponse{body}; }
  void write(std::string& out) const;
};

// ---- Backend ----

namespace auth {
inline constexpr int32_t kOk = 0;
inline constexpr int32_t kKerberosV5 = 2;
inline constexpr int32_t kCleartextPassword = 3;
inline constexpr int32_t kMD5Password = 5;
inline constexpr int32_t kGSS = 7;
inline constexpr int32_t kGSSContinue = 8;
inline constexpr int32_t kSSPI = 9;
inline constexpr int32_t kSASL = 10;
inline constexpr int32_t kSASLContinue = 11;
inline constexpr int32_t kSASLFinal = 12;
}  // namespace auth

// Every Authentication* message: a code and code-specific data (MD5 salt, SASL mechanism
// list, SASL challenge...).
struct Authentication {
  int32_t code = auth::kOk;
  std::string_view data;
  static std::optional<Authentication> parse(std::string_view body);
  void write(std::string& out) const;
  // AuthenticationSASL: the NUL-separated mechanism list.
  std::vector<std::string_view> sasl_mechanisms() const;
};
void write_auth_sasl(std::string& out, const std::vector<std::string_view>& mechanisms);

struct BackendKeyData {
  int32_t pid = 0;
  int32_t secret = 0;
  static std::optional<BackendKeyData> parse(std::string_view body);
  void write(std::string& out) const;
};

struct CommandComplete {
  std::string_view tag;
  static std::optional<CommandComplete> parse(std::string_view body);
  void write(std::string& out) const;
};

// CopyInResponse, CopyOutResponse and CopyBothResponse share a layout.
struct CopyResponse {
  char type = msg::kCopyInResponse;
  int8_t format = 0;
  std::vector<int16_t> column_formats;
  static std::optional<CopyResponse> parse(char type, std::string_view body);
  void write(std::string& out) const;
};

struct DataRow {
  std::vector<Value> values;
  static std::optional<DataRow> parse(std::string_view body);
  void write(std::string& out) const;
};

struct FunctionCallResponse {
  Value result;
  static std::optional<FunctionCallResponse> parse(std::string_view body);
  void write(std::string& out) const;
};

struct NegotiateProtocolVersion {
  int32_t newest_minor = 0;
  std::vector<std::string_view> unrecognized;
  static std::optional<NegotiateProtocolVersion> parse(std::string_view body);
  void write(std::string& out) const;
};

struct NotificationResponse {
  int32_t pid = 0;
  std::string_view channel;
  std::string_view payload;
  static std::optional<NotificationResponse> parse(std::string_view body);
  void write(std::string& out) const;
};

struct ParameterDescription {
  std::vector<int32_t> type_oids;
  static std::optional<ParameterDescription> parse(std::string_view body);
  void write(std::string& out) const;
};

struct ParameterStatus {
  std::string_view name;
  std::string_view value;
  static std::optional<ParameterStatus> parse(std::string_view body);
  void write(std::string& out) const;
};

// The transaction status byte of ReadyForQuery (protocol "ReadyForQuery" message).
namespace txn_status {
inline constexpr char kIdle = 'I';
inline constexpr char kInBlock = 'T';
inline constexpr char kFailed = 'E';
}  // namespace txn_status

// A whole ReadyForQuery frame.
std::string ready_for_query(char status);

struct ReadyForQuery {
  char status = 'I';  // 'I' idle, 'T' in transaction, 'E' failed transaction
  static std::optional<ReadyForQuery> parse(std::string_view body);
  void write(std::string& out) const;
};

struct FieldDescription {
  std::string_view name;
  int32_t table_oid = 0;
  int16_t column = 0;
  int32_t type_oid = 0;
  int16_t type_size = 0;
  int32_t type_modifier = 0;
  int16_t format = 0;
  bool operator==(const FieldDescription&) const = default;
};

struct RowDescription {
  std::vector<FieldDescription> fields;
  static std::optional<RowDescription> parse(std::string_view body);
  void write(std::string& out) const;
};

// SQL text pgshard writes for servers: a string literal ('it''s', standard_conforming_strings
// on) and a quoted identifier ("a""b").
std::string quote_literal(std::string_view v);
std::string quote_ident(std::string_view v);

}  // namespace pgshard::protocol
