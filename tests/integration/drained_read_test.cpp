// DrainedSocket over a loopback TCP pair (no PostgreSQL): a read that drained the socket
// lets the next one wait without a try, and no bytes are ever left unseen: not those that
// arrive between reads, not those a full read left behind, not an end of file that came with
// the last bytes.
#include "proxy/drained_read.hpp"

#include <catch2/catch.hpp>
#include <functional>
#include <string>
#include <thread>

using namespace pgshard;

namespace {

struct Pair {
  asio::io_context ctx{1};
  tcp::socket writer{ctx}, reader{ctx};
  DrainedSocket drained{reader};
  Pair() {
    tcp::acceptor acceptor(ctx, {asio::ip::address_v4::loopback(), 0});
    writer.connect(acceptor.local_endpoint());
    acceptor.accept(reader);
    writer.set_option(tcp::no_delay(true));
    enable_drained_reads(reader);
  }
  void send(std::string_view s) { asio::write(writer, asio::buffer(s)); }
};

// Reads into an 8-byte buffer, counting the recv calls.
struct Reads {
  char buf[8];
  int tries = 0;
  int done = 0;
  error_code ec;
  std::string got;
  void start(DrainedSocket& s) {
    s.read(
        [this](int fd, bool& drained) {
          ++tries;
          return recv_noting_drained(fd, buf, sizeof buf, drained);
        },
        [this](error_code e, std::size_t n) {
          ec = e;
          got.assign(buf, n);
          ++done;
        });
  }
};

// Runs the loop until `done` reaches `n` (or a second passes).
void run_until(Pair& p, const int& done, int n) {
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  while (done < n && Clock::now() < deadline) {
    p.ctx.restart();
    p.ctx.run_one_for(std::chrono::milliseconds(20));
  }
}

// Starts a read, does `meanwhile`, and runs the loop until the read completes; false if it
// did not within a second.
bool read_next(Pair& p, Reads& r, const std::function<void()>& meanwhile = {}) {
  const int before = r.done;
  r.start(p.drained);
  if (meanwhile) meanwhile();
  run_until(p, r.done, before + 1);
  return r.done == before + 1;
}

// The first read: three bytes of eight, which drain the socket.
void read_abc(Pair& p, Reads& r) {
  p.send("abc");
  REQUIRE(read_next(p, r));
  REQUIRE(r.got == "abc");
}

}  // namespace

TEST_CASE("a read that drained the socket lets the next read wait without a recv", "[protocol]") {
  Pair p;
  Reads r;
  read_abc(p, r);
  CHECK(r.tries == 1);

  r.start(p.drained);  // the socket was empty, so no try now
  p.ctx.restart();
  p.ctx.poll();
  CHECK(r.tries == 1);
  CHECK(r.done == 1);
  p.send("de");
  run_until(p, r.done, 2);
  REQUIRE(r.done == 2);
  CHECK(r.got == "de");
  CHECK(r.tries == 2);
}

TEST_CASE("bytes that arrive while no read waits are read by the next read", "[protocol]") {
  Pair p;
  Reads r;
  read_abc(p, r);

  // The loop sees the socket's new edge while nothing reads it (a timer keeps it polling).
  p.send("xy");
  asio::steady_timer timer(p.ctx, std::chrono::milliseconds(50));
  timer.async_wait([](error_code) {});
  p.ctx.restart();
  p.ctx.run();
  REQUIRE(read_next(p, r));
  CHECK(r.got == "xy");
}

TEST_CASE("a read that filled its buffer lets the next read try at once", "[protocol]") {
  Pair p;
  Reads r;
  p.send("0123456789abcdefXYZ");
  std::string all;
  for (int i = 1; i <= 3; ++i) {
    REQUIRE(read_next(p, r));
    REQUIRE(!r.ec);
    all += r.got;
  }
  CHECK(all == "0123456789abcdefXYZ");
  CHECK(r.tries == 3);
}

TEST_CASE("a drained read sees end of file and cancellation", "[protocol]") {
  Pair p;
  Reads r;
  read_abc(p, r);

  SECTION("end of file") {
    REQUIRE(read_next(p, r, [&] { p.writer.close(); }));
    CHECK(r.ec == asio::error::eof);
  }
  SECTION("end of file that came with the last bytes") {
    // Both are in the socket before the read: its edge is spent, the read takes the bytes,
    // and the next read must still see the end of file.
    p.send("de");
    p.writer.close();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    REQUIRE(read_next(p, r));
    CHECK(r.got == "de");
    REQUIRE(read_next(p, r));
    CHECK(r.ec == asio::error::eof);
  }
  SECTION("the socket cancelled") {
    REQUIRE(read_next(p, r, [&] { p.reader.cancel(); }));
    CHECK(r.ec == asio::error::operation_aborted);
  }
  SECTION("the operation cancelled through its slot") {
    asio::cancellation_signal stop;
    error_code ec;
    int done = 0;
    p.drained.read(
        [&r](int fd, bool& drained) {
          return recv_noting_drained(fd, r.buf, sizeof r.buf, drained);
        },
        asio::bind_cancellation_slot(stop.slot(), [&](error_code e, std::size_t) {
          ec = e;
          ++done;
        }));
    stop.emit(asio::cancellation_type::terminal);
    run_until(p, done, 1);
    REQUIRE(done == 1);
    CHECK(ec == asio::error::operation_aborted);
    // The socket still reads afterwards.
    p.send("z");
    REQUIRE(read_next(p, r));
    CHECK(r.got == "z");
  }
}
