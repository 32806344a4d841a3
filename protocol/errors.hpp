// ErrorResponse / NoticeResponse: SQLSTATE constants, field views and builders.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgshard::protocol {

// SQLSTATE codes pgshard emits (PostgreSQL "Appendix A. Error Codes").
namespace sqlstate {
inline constexpr std::string_view kProtocolViolation = "08P01";
inline constexpr std::string_view kConnectionFailure = "08006";
inline constexpr std::string_view kSqlclientUnableToEstablish = "08001";
inline constexpr std::string_view kInvalidAuthorization = "28000";
inline constexpr std::string_view kInvalidPassword = "28P01";
inline constexpr std::string_view kTooManyConnections = "53300";
inline constexpr std::string_view kAdminShutdown = "57P01";
inline constexpr std::string_view kCannotConnectNow = "57P03";
inline constexpr std::string_view kQueryCanceled = "57014";
inline constexpr std::string_view kWarning = "01000";
inline constexpr std::string_view kDatatypeMismatch = "42804";
inline constexpr std::string_view kFeatureNotSupported = "0A000";
inline constexpr std::string_view kInvalidParameterValue = "22023";
inline constexpr std::string_view kUndefinedObject = "42704";
inline constexpr std::string_view kInvalidCatalogName = "3D000";
inline constexpr std::string_view kIdleSessionTimeout = "57P05";
inline constexpr std::string_view kConfigurationLimitExceeded = "53400";
inline constexpr std::string_view kInternalError = "XX000";
inline constexpr std::string_view kInFailedSqlTransaction = "25P02";
inline constexpr std::string_view kProgramLimitExceeded = "54000";
inline constexpr std::string_view kDeadlockDetected = "40P01";
inline constexpr std::string_view kSerializationFailure = "40001";
inline constexpr std::string_view kInsufficientPrivilege = "42501";
inline constexpr std::string_view kSyntaxError = "42601";
inline constexpr std::string_view kDuplicateCursor = "42P03";
inline constexpr std::string_view kDuplicatePreparedStatement = "42P05";
}  // namespace sqlstate

// Field codes of ErrorResponse/NoticeResponse ("Error and Notice Message Fields").
namespace field {
inline constexpr char kSeverity = 'S';
inline constexpr char kSeverityNonLocalized = 'V';
inline constexpr char kCode = 'C';
inline constexpr char kMessage = 'M';
inline constexpr char kDetail = 'D';
inline constexpr char kHint = 'H';
}  // namespace field

// What a client is told. Severity is ERROR, FATAL, PANIC (errors) or WARNING, NOTICE,
// DEBUG, INFO, LOG (notices).
struct ErrorInfo {
  std::string severity = "ERROR";
  std::string code;
  std::string message;
  std::string detail;
  std::string hint;
};

ErrorInfo error(std::string_view code, std::string message, std::string detail = {},
                std::string hint = {});
ErrorInfo fatal(std::string_view code, std::string message, std::string detail = {},
                std::string hint = {});

// Appends an ErrorResponse ('E') or, for notices, a NoticeResponse ('N').
void write_error(std::string& out, const ErrorInfo& e);
void write_notice(std::string& out, const ErrorInfo& e);

// A view of the fields of an ErrorResponse/NoticeResponse body.
struct ErrorFields {
  std::vector<std::pair<char, std::string_view>> fields;
  static std::optional<ErrorFields> parse(std::string_view body);
  std::string_view get(char code) const;
  std::string_view severity() const {
    return get(field::kSeverityNonLocalized).empty() ? get(field::kSeverity)
                                                     : get(field::kSeverityNonLocalized);
  }
  std::string_view code() const { return get(field::kCode); }
  std::string_view message() const { return get(field::kMessage); }
};

}  // namespace pgshard::protocol
