// pgshard: command line, configuration and logging set-up, then the server.
#include <spdlog/spdlog.h>

#include <cstring>
#include <iostream>
#include <thread>

#include "config/config.hpp"
#include "proxy/admin/check.hpp"
#include "proxy/server/server.hpp"

namespace {

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
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ %v");
  spdlog::set_level(spdlog::level::from_str(cfg->log_level));
  try {
    server::Server server(cfg);
    return server.run();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    return 1;
  }
}
