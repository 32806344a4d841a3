// pgshard: command line, configuration and logging set-up, then the server.
#include <spdlog/pattern_formatter.h>
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "config/config.hpp"
#include "proxy/admin/check.hpp"
#include "proxy/server/server.hpp"

namespace {

// The log message as the body of a JSON string (log_format: json).
class JsonEscaped : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr char kHex[] = "0123456789abcdef";
    for (const char c : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(c);
      } else if (u < 0x20) {
        const char esc[] = {'\\', 'u', '0', '0', kHex[u >> 4], kHex[u & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.push_back(c);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<JsonEscaped>();
  }
};

void usage(std::ostream& out) {
  out << "pgshard " << PGSHARD_VERSION << " - a sharding PostgreSQL proxy\n\n"
      << "Usage:\n"
      << "  pgshard --config FILE     run with the shard map FILE (pgshard.yaml)\n"
      << "  pgshard check FILE        validate FILE and exit (non-zero on errors)\n"
      << "  pgshard check --live FILE also connect to every shard and check the map against\n"
      << "                            their catalogs (tables, key columns and types, 2PC)\n"
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
    f->add_flag<JsonEscaped>('*').set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","thread":%t,"msg":"%*"})");
    spdlog::set_formatter(std::move(f));
  } else {
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
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
