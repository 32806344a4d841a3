// pgshard: command line, configuration and logging set-up, then the server.
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "config/config.hpp"
#include "proxy/admin/check.hpp"
#include "proxy/admin/reshard_cli.hpp"
#include "proxy/server/server.hpp"

namespace {

// Length of the valid UTF-8 sequence at the start of `s` (0: none).
std::size_t utf8_length(std::string_view s) {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = b(0);
  std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (n == 0 || n > s.size() || (n == 2 && c < 0xc2)) return 0;
  for (std::size_t i = 1; i < n; ++i)
    if ((b(i) & 0xc0) != 0x80) return 0;
  if (n == 3 && ((c == 0xe0 && b(1) < 0xa0) || (c == 0xed && b(1) >= 0xa0))) return 0;
  if (n == 4 && ((c == 0xf0 && b(1) < 0x90) || c > 0xf4 || (c == 0xf4 && b(1) >= 0x90))) return 0;
  return n;
}

// The escape of a character some readers take as a line break (NEL, LINE and PARAGRAPH
// SEPARATOR), or nullptr.
const char* line_break(std::string_view ch) {
  if (ch == "\u0085") return "\\u0085";
  if (ch == "\u2028") return "\\u2028";
  if (ch == "\u2029") return "\\u2029";
  return nullptr;
}

// A log message with what a client sent in it made harmless: every control character
// and every byte that is not valid UTF-8 is escaped, so a database name, user name,
// console command or statement carrying a newline cannot start a line of its own
// (log_format: text, "\n", "\x1b"), nor break the JSON line (log_format: json, "\u000a";
// quotes and backslashes escaped too).
class Escaped : public spdlog::custom_flag_formatter {
 public:
  explicit Escaped(bool json) : json_(json) {}
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string_view s(msg.payload.data(), msg.payload.size());
    while (!s.empty()) {
      const auto u = static_cast<unsigned char>(s[0]);
      const std::size_t n = utf8_length(s);
      const std::string_view ch = s.substr(0, n);
      if ((json_ && u == '"') || u == '\\') {  // (text: so "\\n" as sent reads apart from \n)
        dest.push_back('\\');
        dest.push_back(s[0]);
      } else if (const char* named = line_break(ch)) {  // (to some readers: U+0085, U+2028/9)
        dest.append(named, named + 6);
      } else if (n > 1 || (n == 1 && u >= 0x20 && u != 0x7f)) {
        dest.append(s.data(), s.data() + n);
      } else if (json_) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        const char* named = u == '\n' ? "\\n" : u == '\r' ? "\\r" : u == '\t' ? "\\t" : nullptr;
        const char esc[] = {'\\', 'x', kHex[u >> 4], kHex[u & 15]};
        if (named)
          dest.append(named, named + 2);
        else
          dest.append(esc, esc + sizeof esc);
      }
      s.remove_prefix(n > 0 ? n : 1);
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<Escaped>(json_);
  }

 private:
  bool json_;
};

void usage(std::ostream& out) {
  out << "pgshard " << PGSHARD_VERSION << " - a sharding PostgreSQL proxy\n\n"
      << "Usage:\n"
      << "  pgshard --config FILE     run with the shard map FILE (pgshard.yaml)\n"
      << "  pgshard check FILE        validate FILE and exit (non-zero on errors)\n"
      << "  pgshard check --live FILE also connect to every shard and check the map against\n"
      << "                            their catalogs (tables, key columns and types, 2PC)\n"
      << "  pgshard reshard plan --from OLD.yaml --to NEW.yaml [--live]\n"
      << "                            what a change of map moves (pgshard reshard for more)\n"
      << "  pgshard reshard propose --from OLD.yaml --add NAME=URL\n"
      << "                            buckets for one more shard, moving the fewest\n"
      << "  pgshard reshard start|status|verify|abort|cleanup ...\n"
      << "                            move the rows by logical replication (pgshard reshard)\n"
      << "  pgshard --help            this text\n"
      << "  pgshard --version         the version\n";
}

}  // namespace

int main(int argc, char** argv) {
  using namespace pgshard;
  if (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    usage(std::cout);
    return 0;
  }
  if (argc == 2 && !std::strcmp(argv[1], "--version")) {
    std::cout << "pgshard " << PGSHARD_VERSION << "\n";
    return 0;
  }
  if (argc >= 2 && !std::strcmp(argv[1], "reshard"))
    return admin::reshard_main(argc - 2, argv + 2, std::cout, std::cerr);
  const bool live = argc == 4 && !std::strcmp(argv[1], "check") && !std::strcmp(argv[2], "--live");
  if ((argc == 3 && !std::strcmp(argv[1], "check")) || live) {
    const char* file = argv[argc - 1];
    try {
      auto cfg = config::load_file(file);
      std::cout << file << ": OK (" << cfg->shards.size() << " shards, "
                << cfg->sharded_tables.size() << " sharded tables, " << cfg->users.size()
                << " users)\n";
      if (live) return admin::check_live(*cfg, std::cout) == 0 ? 0 : 1;
      return 0;
    } catch (const config::ConfigError& e) {
      std::cerr << e.what() << "\n";
      return 1;
    }
  }
  if (argc != 3 || (std::strcmp(argv[1], "--config") && std::strcmp(argv[1], "-c"))) {
    usage(std::cerr);
    return 2;
  }
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = config::load_file(argv[2]);
  } catch (const config::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  if (cfg->listen.workers == 0) {
    auto copy = std::make_shared<config::Config>(*cfg);
    copy->listen.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    cfg = copy;
  }
  if (cfg->log_json) {
    auto f = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
    f->add_flag<Escaped>('*', true).set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"msg":"%*"})");
    spdlog::set_formatter(std::move(f));
  } else {
    auto f = std::make_unique<spdlog::pattern_formatter>();
    f->add_flag<Escaped>('*', false).set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %*");
    spdlog::set_formatter(std::move(f));
  }
  spdlog::set_level(spdlog::level::from_str(cfg->log_level));
  try {
    server::Server server(cfg);
    return server.run();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
}
