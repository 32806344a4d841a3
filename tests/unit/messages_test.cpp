// Every protocol v3 message: written by the writer, decoded by the framer, read by its view.
#include "protocol/messages.hpp"

#include <catch2/catch.hpp>
#include <deque>
#include <functional>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/startup.hpp"

using namespace pgshard::protocol;

namespace {
// Writes one message, checks the framing, returns its body (kept alive for the views).
std::string_view round(char type, const std::function<void(std::string&)>& write) {
  static std::deque<std::string> bodies;
  std::string wire;
  write(wire);
  auto d = decode_frame(wire);
  REQUIRE(d.status == DecodeStatus::kFrame);
  REQUIRE(d.frame.type == type);
  REQUIRE(d.consumed == wire.size());
  return bodies.emplace_back(d.frame.body);
}
}  // namespace

TEST_CASE("frontend messages round trip", "[messages]") {
  SECTION("Query") {
    auto b = round('Q', [](std::string& o) { Query{"select 1"}.write(o); });
    CHECK(Query::parse(b)->sql == "select 1");
  }
  SECTION("Parse") {
    auto b = round('P', [](std::string& o) { Parse{"s1", "select $1", {20, 25}}.write(o); });
    auto p = Parse::parse(b);
    REQUIRE(p);
    CHECK(p->name == "s1");
    CHECK(p->query == "select $1");
    CHECK(p->param_types == std::vector<int32_t>{20, 25});
  }
  SECTION("Bind with NULL, text and binary values") {
    Bind in{"p1",
            "s1",
            {0, 1},
            {std::string_view("42"), std::nullopt, std::string_view("\0\1", 2)},
            {1}};
    auto b = round('B', [&](std::string& o) { in.write(o); });
    auto p = Bind::parse(b);
    REQUIRE(p);
    CHECK(p->portal == "p1");
    CHECK(p->statement == "s1");
    CHECK(p->params.size() == 3);
    CHECK(*p->params[0] == "42");
    CHECK_FALSE(p->params[1]);
    CHECK(*p->params[2] == std::string_view("\0\1", 2));
    CHECK(p->format_of(1) == 1);
    CHECK(p->result_formats == Bind::Formats{1});
  }
  SECTION("Describe and Close") {
    auto d = Describe::parse(round('D', [](std::string& o) { Describe{'P', "p1"}.write(o); }));
    CHECK(d->kind == 'P');
    CHECK(d->name == "p1");
    auto c = Close::parse(round('C', [](std::string& o) { Close{'S', "s1"}.write(o); }));
    CHECK(c->kind == 'S');
    CHECK(c->name == "s1");
    CHECK_FALSE(Describe::parse(std::string_view("X\0", 2)));
  }
  SECTION("Execute") {
    auto e = Execute::parse(round('E', [](std::string& o) { Execute{"p", 10}.write(o); }));
    CHECK(e->portal == "p");
    CHECK(e->max_rows == 10);
  }
  SECTION("FunctionCall") {
    FunctionCall in{1598, {0}, {std::string_view("x")}, 1};
    auto f = FunctionCall::parse(round('F', [&](std::string& o) { in.write(o); }));
    CHECK(f->function_oid == 1598);
    CHECK(*f->args[0] == "x");
    CHECK(f->result_format == 1);
  }
  SECTION("Copy messages") {
    CHECK(CopyData::parse(round('d', [](std::string& o) { CopyData{"1\tx\n"}.write(o); }))->data ==
          "1\tx\n");
    CHECK(CopyFail::parse(round('f', [](std::string& o) { CopyFail{"boom"}.write(o); }))->message ==
          "boom");
    CHECK(round('c', [](std::string& o) { write_empty(o, msg::kCopyDone); }).empty());
  }
  SECTION("Sync, Flush, Terminate") {
    CHECK(round('S', [](std::string& o) { write_empty(o, msg::kSync); }).empty());
    CHECK(round('H', [](std::string& o) { write_empty(o, msg::kFlush); }).empty());
    CHECK(round('X', [](std::string& o) { write_empty(o, msg::kTerminate); }).empty());
  }
  SECTION("Password and SASL") {
    CHECK(PasswordMessage::parse(round('p', [](std::string& o) {
            PasswordMessage{"md5abc"}.write(o);
          }))->password == "md5abc");
    auto s = SASLInitialResponse::parse(round('p', [](std::string& o) {
      SASLInitialResponse{"SCRAM-SHA-256", std::string_view("n,,n=,r=abc")}.write(o);
    }));
    CHECK(s->mechanism == "SCRAM-SHA-256");
    CHECK(*s->data == "n,,n=,r=abc");
    CHECK(SASLResponse::parse(round('p', [](std::string& o) {
            SASLResponse{"c=biws"}.write(o);
          }))->data == "c=biws");
  }
}

TEST_CASE("startup-phase packets round trip", "[messages]") {
  const char* err = nullptr;
  std::string wire;
  write_startup(wire, {{"user", "app"}, {"database", "db"}, {"_pq_.x", "1"}});
  auto d = decode_startup(wire);
  REQUIRE(d.status == DecodeStatus::kFrame);
  auto p = parse_startup(d.frame.body, &err);
  REQUIRE(p);
  CHECK(p->kind == StartupKind::kStartup);
  CHECK(p->param("user") == "app");
  CHECK(p->param("database") == "db");
  CHECK(p->protocol_options() == std::vector<std::string_view>{"_pq_.x"});

  wire.clear();
  write_ssl_request(wire);
  CHECK(parse_startup(decode_startup(wire).frame.body, &err)->kind == StartupKind::kSSLRequest);
  wire.clear();
  write_cancel_request(wire, 7, 99);
  auto c = parse_startup(decode_startup(wire).frame.body, &err);
  CHECK(c->kind == StartupKind::kCancelRequest);
  CHECK(c->cancel_pid == 7);
  CHECK(c->cancel_secret == 99);
  std::string gss("\x04\xd2\x16\x30", 4);
  CHECK(parse_startup(gss, &err)->kind == StartupKind::kGSSENCRequest);
  std::string v2("\x00\x02\x00\x00\x00", 5);
  CHECK_FALSE(parse_startup(v2, &err));
}

TEST_CASE("backend messages round trip", "[messages]") {
  SECTION("Authentication variants") {
    auto a = Authentication::parse(round('R', [](std::string& o) {
      Authentication{auth::kMD5Password, "salt"}.write(o);
    }));
    CHECK(a->code == auth::kMD5Password);
    CHECK(a->data == "salt");
    auto s = Authentication::parse(
        round('R', [](std::string& o) { write_auth_sasl(o, {"SCRAM-SHA-256"}); }));
    CHECK(s->sasl_mechanisms() == std::vector<std::string_view>{"SCRAM-SHA-256"});
    CHECK(Authentication::parse(round('R', [](std::string& o) {
            Authentication{}.write(o);
          }))->code == auth::kOk);
  }
  SECTION("BackendKeyData") {
    auto k = BackendKeyData::parse(round('K', [](std::string& o) {
      BackendKeyData{12, -5}.write(o);
    }));
    CHECK(k->pid == 12);
    CHECK(k->secret == -5);
  }
  SECTION("empty-bodied replies") {
    for (char t : {msg::kParseComplete, msg::kBindComplete, msg::kCloseComplete, msg::kNoData,
                   msg::kEmptyQueryResponse, msg::kPortalSuspended}) {
      CHECK(round(t, [t](std::string& o) { write_empty(o, t); }).empty());
    }
  }
  SECTION("CommandComplete") {
    CHECK(CommandComplete::parse(round('C', [](std::string& o) {
            CommandComplete{"INSERT 0 3"}.write(o);
          }))->tag == "INSERT 0 3");
  }
  SECTION("Copy responses") {
    for (char t : {msg::kCopyInResponse, msg::kCopyOutResponse, msg::kCopyBothResponse}) {
      auto c = CopyResponse::parse(t, round(t, [t](std::string& o) {
                                     CopyResponse{t, 0, {0, 0}}.write(o);
                                   }));
      CHECK(c->column_formats.size() == 2);
    }
  }
  SECTION("DataRow and RowDescription") {
    auto r = DataRow::parse(round('D', [](std::string& o) {
      DataRow{{std::string_view("1"), std::nullopt}}.write(o);
    }));
    CHECK(*r->values[0] == "1");
    CHECK_FALSE(r->values[1]);
    RowDescription in{{{"id", 16384, 1, 20, 8, -1, 0}, {"name", 0, 0, 25, -1, -1, 1}}};
    auto d = RowDescription::parse(round('T', [&](std::string& o) { in.write(o); }));
    REQUIRE(d->fields.size() == 2);
    CHECK(d->fields[0] == in.fields[0]);
    CHECK(d->fields[1] == in.fields[1]);
  }
  SECTION("ErrorResponse and NoticeResponse carry SQLSTATE and text") {
    auto e = ErrorFields::parse(round('E', [](std::string& o) {
      write_error(o, error(sqlstate::kFeatureNotSupported, "no", "detail", "hint"));
    }));
    CHECK(e->severity() == "ERROR");
    CHECK(e->code() == "0A000");
    CHECK(e->message() == "no");
    CHECK(e->get(field::kDetail) == "detail");
    CHECK(e->get(field::kHint) == "hint");
    auto n = ErrorFields::parse(round('N', [](std::string& o) {
      write_notice(o, ErrorInfo{"WARNING", "01000", "careful", "", ""});
    }));
    CHECK(n->severity() == "WARNING");
  }
  SECTION("the rest") {
    CHECK(FunctionCallResponse::parse(round('V', [](std::string& o) {
            FunctionCallResponse{std::string_view("r")}.write(o);
          }))->result == "r");
    auto n = NegotiateProtocolVersion::parse(round('v', [](std::string& o) {
      NegotiateProtocolVersion{0, {"_pq_.a"}}.write(o);
    }));
    CHECK(n->unrecognized == std::vector<std::string_view>{"_pq_.a"});
    auto a = NotificationResponse::parse(round('A', [](std::string& o) {
      NotificationResponse{3, "ch", "hi"}.write(o);
    }));
    CHECK(a->channel == "ch");
    CHECK(a->payload == "hi");
    CHECK(ParameterDescription::parse(round('t', [](std::string& o) {
            ParameterDescription{{20}}.write(o);
          }))->type_oids == std::vector<int32_t>{20});
    auto p = ParameterStatus::parse(round('S', [](std::string& o) {
      ParameterStatus{"TimeZone", "UTC"}.write(o);
    }));
    CHECK(p->value == "UTC");
    CHECK(ReadyForQuery::parse(round('Z', [](std::string& o) {
            ReadyForQuery{'T'}.write(o);
          }))->status == 'T');
    CHECK_FALSE(ReadyForQuery::parse("Q"));
  }
}
