// `pgshard reshard ...`: the resharding planner's command line (plan, propose).
#pragma once

#include <ostream>

namespace pgshard::admin {

// argv[0] is the subcommand ("plan", "propose"); returns the process's exit code (0: done,
// 1: refused or a map error, 2: usage).
int reshard_main(int argc, char** argv, std::ostream& out, std::ostream& err);

}  // namespace pgshard::admin
