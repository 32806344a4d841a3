// `pgshard reshard plan|propose|start|status|verify|abort`: the resharding command line.
#include "proxy/admin/reshard_cli.hpp"

#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "proxy/admin/reshard_move.hpp"
#include "proxy/admin/reshard_plan.hpp"

namespace pgshard::admin {

namespace {

void usage(std::ostream& err) {
  err << "Usage:\n"
      << "  pgshard reshard plan --from OLD.yaml --to NEW.yaml [--live] [--verbose]\n"
      << "      what moving from the OLD map to the NEW one moves, table by table; --live also\n"
      << "      counts the rows on the shards and refuses what cannot be moved (exit 1)\n"
      << "  pgshard reshard propose --from OLD.yaml --add NAME=postgres://...\n"
      << "      the shard entry and each hash table's buckets for a map with one more shard,\n"
      << "      moving the fewest buckets (paste them into a copy of OLD.yaml)\n"
      << "  pgshard reshard start --from OLD.yaml --to NEW.yaml\n"
      << "      copies the moving rows to their new shards by logical replication (publications\n"
      << "      with row filters and slots on the sources, subscriptions on the targets), which\n"
      << "      then follow every change; state in NEW.yaml.reshard-state\n"
      << "  pgshard reshard status --to NEW.yaml\n"
      << "      per move: tables synchronized, rows on target and source, replication lag\n"
      << "  pgshard reshard verify --to NEW.yaml [--timeout MS]\n"
      << "      compares the moving rows on source and target per bucket, names rows that\n"
      << "      differ (exit 1; 2 when the target did not catch up within MS, default 60000)\n"
      << "  pgshard reshard abort --to NEW.yaml\n"
      << "      drops the subscriptions, slots and publications and the copied rows; the old\n"
      << "      map stays\n"
      << "  pgshard reshard cleanup --to NEW.yaml --writes-stopped [--timeout MS]\n"
      << "      with writes stopped (no cutover yet: stop pgshard first): compares, drops the\n"
      << "      subscriptions, slots and publications, compares again, deletes the moved rows\n"
      << "      from the sources; then start pgshard on NEW.yaml\n";
}

struct Args {
  std::string from, to, add;
  int timeout_ms = 60000;
  bool writes_stopped = false;
  bool live = false, verbose = false;
};

std::optional<Args> parse(int argc, char** argv) {
  Args a;
  for (int i = 0; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--live") {
      a.live = true;
    } else if (arg == "--verbose") {
      a.verbose = true;
    } else if (arg == "--from" && has_value) {
      a.from = argv[++i];
    } else if (arg == "--to" && has_value) {
      a.to = argv[++i];
    } else if (arg == "--writes-stopped") {
      a.writes_stopped = true;
    } else if (arg == "--timeout" && has_value) {
      a.timeout_ms = std::atoi(argv[++i]);
    } else if (arg == "--add" && has_value) {
      a.add = argv[++i];
    } else {
      return std::nullopt;
    }
  }
  return a;
}

int plan(const Args& a, std::ostream& out, std::ostream& err) {
  if (a.from.empty() || a.to.empty() || !a.add.empty()) {
    usage(err);
    return 2;
  }
  try {
    const auto from = config::load_file(a.from);
    const auto to = config::load_file(a.to);
    out << "plan: " << a.from << " (" << from->shards.size() << " shards) -> " << a.to << " ("
        << to->shards.size() << " shards)\n";
    const auto p = plan_reshard(*from, *to);
    print_plan(p, out, a.verbose);
    int refused = 0;
    for (const auto& t : p) refused += !t.refusal.empty();
    if (a.live) refused += plan_live(p, *from, *to, out);
    return refused == 0 ? 0 : 1;
  } catch (const config::ConfigError& e) {
    err << e.what() << "\n";
    return 1;
  }
}

std::string yaml_quoted(const std::string& s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

// A hash table's bucket owners with enough buckets to spread over `shards` + 1 shards. A
// table without buckets first gets a multiple of the shard count, bucket b on shard
// b mod shards; one with fewer buckets than that many shards gets a multiple of its bucket
// count (about 1024), bucket b on the shard of old bucket b mod N (a key's hash modulo k*N,
// modulo N, is its old bucket). Nothing moves for either.
std::vector<int> enough_buckets(const config::ShardedTable& t, int shards) {
  if (t.buckets == 0) {
    std::vector<int> owners;
    const int n = (1024 + shards - 1) / shards * shards;
    for (int b = 0; b < n; ++b) owners.push_back(b % shards);
    return owners;
  }
  const int old = static_cast<int>(t.bucket_shard.size());
  if (old > shards) return t.bucket_shard;
  const int n = (1024 + old - 1) / old * old;
  std::vector<int> owners;
  for (int b = 0; b < n; ++b) owners.push_back(t.bucket_shard[static_cast<std::size_t>(b % old)]);
  return owners;
}

// A hash table's entry with `shards` shards: its buckets (enough_buckets) spread over one
// more shard.
void propose_table(const config::ShardedTable& t, const config::Config& cfg,
                   const std::string& added, std::ostream& out) {
  const int shards = static_cast<int>(cfg.shards.size());
  const std::vector<int> owners = enough_buckets(t, shards);
  const auto next = config::rebalance_buckets(owners, shards + 1);
  out << "  - table: " << t.qualified_name() << "\n    column: " << t.column
      << "\n    type: " << config::to_string(t.type)
      << "\n    function: hash\n    buckets: " << next.size() << "\n    bucket_shards:\n";
  for (int s = 0; s <= shards; ++s)
    out << "      - { shard: "
        << (s < shards ? cfg.shards[static_cast<std::size_t>(s)].name : added) << ", buckets: \""
        << config::bucket_ranges(next, s) << "\" }\n";
}

int propose(const Args& a, std::ostream& out, std::ostream& err) {
  const auto eq = a.add.find('=');
  if (a.from.empty() || !a.to.empty() || eq == std::string::npos || eq == 0) {
    usage(err);
    return 2;
  }
  const std::string name = a.add.substr(0, eq), url = a.add.substr(eq + 1);
  try {
    const auto from = config::load_file(a.from);
    if (from->shard_index(name) >= 0) {
      err << "shard " << name << " is already in " << a.from << "\n";
      return 1;
    }
    out << "# pgshard reshard propose: " << a.from << " plus shard " << name << "\n"
        << "# add to shards:\n  - { name: " << name << ", primary: " << yaml_quoted(url) << " }\n"
        << "# replace these entries of sharded_tables:\n";
    for (const auto& t : from->sharded_tables) {
      if (t.function == config::ShardFunction::kHash) propose_table(t, *from, name, out);
    }
    out << "# ring tables need no change (the new shard takes ~1/N of their keys); range,\n"
        << "# list and directory tables keep their keys where they are until you move them.\n";
    return 0;
  } catch (const config::ConfigError& e) {
    err << e.what() << "\n";
    return 1;
  }
}

}  // namespace

int reshard_main(int argc, char** argv, std::ostream& out, std::ostream& err) {
  if (argc < 1) {
    usage(err);
    return 2;
  }
  const auto args = parse(argc - 1, argv + 1);
  if (!args) {
    usage(err);
    return 2;
  }
  if (!std::strcmp(argv[0], "plan")) return plan(*args, out, err);
  if (!std::strcmp(argv[0], "propose")) return propose(*args, out, err);
  const std::string cmd = argv[0];
  if (cmd == "start" && !args->from.empty() && !args->to.empty())
    return reshard_start(args->from, args->to, out, err);
  if (args->to.empty() || !args->from.empty() || !args->add.empty()) {
    usage(err);
    return 2;
  }
  if (cmd == "status") return reshard_status(args->to, out, err);
  if (cmd == "verify") return reshard_verify(args->to, args->timeout_ms, out, err);
  if (cmd == "abort") return reshard_abort(args->to, out, err);
  if (cmd == "cleanup")
    return reshard_cleanup(args->to, args->writes_stopped, args->timeout_ms, out, err);
  usage(err);
  return 2;
}

}  // namespace pgshard::admin
