// The single-shard relay's filter (session::RelayFilter) over hand-built server replies: what
// reaches the client, what is hidden or replaced, what the session is told, and large rows
// streamed through in pieces; and the bound on relays waiting between transactions. No
// sockets.
#include "proxy/session/relay_filter.hpp"

#include <catch2/catch.hpp>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/runtime/parked_relays.hpp"
#include "wire.hpp"

using namespace pgshard;
namespace proto = pgshard::protocol;
namespace msg = pgshard::protocol::msg;
using Owner = pool::Replies::Owner;

namespace {

struct Events : session::RelayEvents {
  int ready = 0;
  bool keep_open = false;  // client_ready answers false: its BEGIN is pgshard's
  bool copy = false, failed = false, rolled_back = false, own_failed = false;
  std::vector<std::string> reports;
  bool client_ready(pool::ServerConn&) override {
    ++ready;
    return !keep_open;
  }
  void copy_in_started() override { copy = true; }
  void reported(pool::ServerConn&, std::string_view name, std::string_view value) override {
    reports.push_back(std::string(name) + "=" + std::string(value));
  }
  void client_failed() override { failed = true; }
  void client_rolled_back() override { rolled_back = true; }
  void own_statement_failed(pool::ServerConn&) override { own_failed = true; }
  std::optional<std::string> instead;  // replace_error's answer for a 57014
  std::optional<std::string> replace_error(std::string_view body) override {
    auto e = proto::ErrorFields::parse(body);
    return e && e->code() == "57014" ? instead : std::nullopt;
  }
};

using testing::complete;
using testing::empty;

std::string status(std::string_view name, std::string_view value) {
  std::string out;
  proto::ParameterStatus{name, value}.write(out);
  return out;
}
std::string error() {
  return testing::error("22012");
}
std::string row(std::size_t bytes) {
  proto::DataRow r;
  std::string value(bytes, 'x');
  r.values.push_back(proto::Value(value));
  std::string out;
  r.write(out);
  return out;
}

struct Fixture {
  asio::io_context io;
  pool::ServerConn conn{io.get_executor(), pool::BackendTarget{}};
  Events events;
  session::RelayFilter filter{1 << 20, events};
};

}  // namespace

TEST_CASE("pgshard's own statements are hidden, the client's replies pass untouched", "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kOwn);  // settings sync ahead of the request
  f.conn.replies.expect_ready(Owner::kClient);
  const std::string own = complete("SELECT 1") + proto::ready_for_query('I');
  const std::string mine = empty(msg::kRowDescription) + row(3) + complete("SELECT 1");
  const std::string in = own + mine + proto::ready_for_query('I');
  auto step = f.filter.walk(f.conn, in);
  CHECK(step.used == in.size());
  CHECK(step.relay == mine + proto::ready_for_query('I'));
  CHECK(f.events.ready == 1);
  CHECK(f.conn.replies.empty());
}

TEST_CASE("with nothing hidden the input itself is relayed", "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kClient);
  const std::string in = complete("UPDATE 1") + proto::ready_for_query('T');
  auto step = f.filter.walk(f.conn, in);
  CHECK(step.relay.data() == in.data());  // no copy
  CHECK(f.conn.status == 'T');
}

TEST_CASE("a transaction whose BEGIN is pgshard's reads as open to the client", "[relay]") {
  Fixture f;
  f.events.keep_open = true;
  f.conn.replies.expect_ready(Owner::kClient);
  auto step = f.filter.walk(f.conn, proto::ready_for_query('I'));
  CHECK(step.relay == proto::ready_for_query('T'));
}

TEST_CASE("a hidden ReadyForQuery of a pipeline part still tells the session", "[relay]") {
  // Before: the session's output filter dropped it after the relay had sent it on; now the
  // reply queue hides it, and a transaction whose BEGIN is pgshard's must not make the relay
  // send a 'T' in its place.
  Fixture f;
  f.events.keep_open = true;
  f.conn.replies.expect_ready(Owner::kClient, pool::Replies::Action::kHide);
  const std::string in = complete("INSERT 0 1") + proto::ready_for_query('I');
  auto step = f.filter.walk(f.conn, in);
  CHECK(step.used == in.size());
  CHECK(step.relay == complete("INSERT 0 1"));
  CHECK(f.events.ready == 1);
  CHECK(f.conn.status == 'I');
}

TEST_CASE("a split pipeline's COMMIT on one shard reaches the client only as its error",
          "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kClient, pool::Replies::Action::kHideCompletion);
  const std::string in = error() + complete("ROLLBACK") + proto::ready_for_query('I');
  auto step = f.filter.walk(f.conn, in);
  CHECK(step.relay == error());
  CHECK(f.events.ready == 1);
  CHECK(f.events.failed);
  CHECK(f.events.rolled_back);
}

TEST_CASE("a Parse pgshard answered with a Close becomes ParseComplete", "[relay]") {
  Fixture f;
  f.conn.replies.expect_close(Owner::kClient, pool::Replies::Action::kAsParseComplete);
  f.conn.replies.expect_ready(Owner::kClient);
  auto step = f.filter.walk(f.conn, empty(msg::kCloseComplete) + proto::ready_for_query('I'));
  CHECK(step.relay == empty(msg::kParseComplete) + proto::ready_for_query('I'));
}

TEST_CASE("a large row streams through in pieces; a partial small frame waits", "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kClient);
  const std::string big = row(200 * 1024);
  const std::string rest = complete("SELECT 1") + proto::ready_for_query('I');
  const std::string in = big + rest;
  auto step = f.filter.walk(f.conn, std::string_view(in).substr(0, 1000));
  CHECK(step.used == 1000);  // relayed at once, unparsed
  CHECK(step.relay == in.substr(0, 1000));
  step = f.filter.walk(f.conn, std::string_view(in).substr(1000, big.size() - 1000 + 3));
  CHECK(step.used == big.size() - 1000);  // the rest of the row; 3 bytes of the tag wait
  step = f.filter.walk(f.conn, std::string_view(in).substr(big.size()));
  CHECK(step.relay == rest);
  CHECK(f.events.ready == 1);
}

TEST_CASE("an impossible length from a server is a lost connection", "[relay]") {
  Fixture f;
  std::string in = "Z";
  in += std::string("\x7f\xff\xff\xff", 4);
  CHECK(f.filter.walk(f.conn, in).invalid);
}

TEST_CASE("settings reported after the client's statement reach the session", "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kOwn);
  f.conn.replies.expect_ready(Owner::kClient);
  f.filter.walk(f.conn, status("TimeZone", "UTC") + proto::ready_for_query('I') +
                            status("DateStyle", "ISO, DMY") + proto::ready_for_query('I'));
  CHECK(f.events.reports == std::vector<std::string>{"DateStyle=ISO, DMY"});
  CHECK_FALSE(f.conn.params.contains("TimeZone"));  // pgshard's sync: recorded when sent
  CHECK(f.conn.params.at("DateStyle") == "ISO, DMY");
  // After pgshard's DISCARD ALL the server's defaults are what it has.
  f.conn.replies.expect_ready(Owner::kOwnReset);
  f.filter.walk(f.conn, status("TimeZone", "GMT") + proto::ready_for_query('I'));
  CHECK(f.conn.params.at("TimeZone") == "GMT");
  CHECK(f.events.reports.size() == 1);
}

TEST_CASE("the session hears of the client's errors, rollbacks and COPY", "[relay]") {
  Fixture f;
  f.conn.replies.expect_ready(Owner::kClient);
  f.filter.walk(f.conn, error() + proto::ready_for_query('E'));
  CHECK(f.events.failed);
  f.conn.replies.expect_ready(Owner::kClient);
  f.filter.walk(f.conn, complete("ROLLBACK") + proto::ready_for_query('I'));
  CHECK(f.events.rolled_back);
  f.conn.replies.expect_ready(Owner::kClient);
  f.filter.walk(f.conn, empty(msg::kCopyInResponse));
  CHECK(f.events.copy);
  f.conn.replies.clear();
  f.conn.replies.expect_ready(Owner::kOwn);
  auto step = f.filter.walk(f.conn, error() + proto::ready_for_query('I'));
  CHECK(f.events.own_failed);
  CHECK(step.relay.empty());
}

TEST_CASE("an error the session replaces reaches the client in its place", "[relay]") {
  // A deadlock victim's cancel (57014) becomes the session's 40P01; other errors pass.
  Fixture f;
  f.events.instead = testing::error("40P01");
  f.conn.replies.expect_ready(Owner::kClient);
  const std::string in = testing::error("57014") + proto::ready_for_query('E');
  auto step = f.filter.walk(f.conn, in);
  CHECK(step.used == in.size());
  CHECK(step.relay == testing::error("40P01") + proto::ready_for_query('E'));
  CHECK(f.events.failed);
  f.conn.replies.expect_ready(Owner::kClient);
  const std::string other = error() + proto::ready_for_query('E');
  CHECK(f.filter.walk(f.conn, other).relay == other);
}

TEST_CASE("a worker keeps at most kMax waiting relays and ends the oldest for room", "[session]") {
  using pgshard::runtime::ParkedRelays;
  struct Relay : ParkedRelays::Entry {
    int id = 0;
    std::vector<int>* ended = nullptr;
    void end_parked_relay() override { ended->push_back(id); }
  };
  std::vector<int> ended;
  std::vector<Relay> relays(ParkedRelays::kMax + 3);
  for (std::size_t i = 0; i < relays.size(); ++i) {
    relays[i].id = static_cast<int>(i);
    relays[i].ended = &ended;
  }
  ParkedRelays parked;
  for (auto& r : relays) parked.park(r);
  CHECK(parked.size() == ParkedRelays::kMax);
  CHECK(ended == std::vector<int>{0, 1, 2});  // the oldest, in order
  CHECK_FALSE(relays[0].is_linked());
  // A relay woken by its own session leaves the list; unparking twice does nothing.
  parked.unpark(relays[10]);
  parked.unpark(relays[10]);
  parked.unpark(relays[0]);  // (ended already)
  CHECK(parked.size() == ParkedRelays::kMax - 1);
  // Room again: parking the woken one ends nobody; the next one ends the oldest left (3).
  parked.park(relays[10]);
  CHECK(ended.size() == 3);
  parked.park(relays[0]);
  CHECK(ended == std::vector<int>{0, 1, 2, 3});
  for (auto& r : relays) parked.unpark(r);
  CHECK(parked.size() == 0);
}

TEST_CASE("the client's own notifications carry the process id pgshard gave it", "[relay]") {
  struct PidEvents : Events {
    int32_t client_pid() const override { return 777; }
  };
  asio::io_context io;
  pool::ServerConn conn{io.get_executor(), pool::BackendTarget{}};
  PidEvents events;
  session::RelayFilter filter{1 << 20, events};
  auto notification = [](int32_t pid) {
    std::string out;
    proto::MessageWriter(out)
        .begin(msg::kNotificationResponse)
        .i32(pid)
        .cstr("ch")
        .cstr("hi")
        .finish();
    return out;
  };
  conn.replies.expect_ready(Owner::kClient);
  // From this server's own session (its pid): rewritten to the client's; from another: as is.
  const std::string in =
      notification(conn.pid()) + notification(4242) + proto::ready_for_query('I');
  auto step = filter.walk(conn, in);
  CHECK(step.used == in.size());
  CHECK(step.relay == notification(777) + notification(4242) + proto::ready_for_query('I'));
}

TEST_CASE("a result type changed under a cached plan tells the session the schema changed",
          "[relay]") {
  struct SchemaEvents : Events {
    bool changed = false;
    void schema_changed() override { changed = true; }
  };
  asio::io_context io;
  pool::ServerConn conn{io.get_executor(), pool::BackendTarget{}};
  SchemaEvents events;
  session::RelayFilter filter{1 << 20, events};
  conn.replies.expect_ready(Owner::kClient);
  filter.walk(conn, error() + proto::ready_for_query('E'));
  CHECK_FALSE(events.changed);
  conn.replies.expect_ready(Owner::kClient);
  std::string plan_changed;
  proto::write_error(plan_changed,
                     proto::error("0A000", "cached plan must not change result type"));
  const std::string from_server = plan_changed + proto::ready_for_query('E');
  auto step = filter.walk(conn, from_server);  // (step.relay views from_server)
  CHECK(events.changed);
  CHECK(events.failed);
  CHECK(step.relay == from_server);
}
