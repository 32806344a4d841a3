// The reshard state file: what `start` created, written atomically beside the new map.
#include "proxy/admin/reshard_state.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace pgshard::admin {

namespace {

constexpr const char* kHeader = "pgshard-reshard-state 1";

std::string short_name(const std::string& shard) {
  std::string out;
  for (char ch : shard) {
    const char c = static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    out += (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ? c : '_';
  }
  return out.substr(0, 20);
}

bool write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const auto n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

bool fsync_dir(const std::string& path) {
  const auto slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return false;
  const bool ok = ::fsync(fd) == 0;
  ::close(fd);
  return ok;
}

std::optional<ReshardPhase> phase_of(const std::string& word) {
  for (auto p : {ReshardPhase::kStarting, ReshardPhase::kCopying, ReshardPhase::kAborting,
                 ReshardPhase::kCleaning, ReshardPhase::kDeleting})
    if (word == to_string(p)) return p;
  return std::nullopt;
}

}  // namespace

const char* to_string(ReshardPhase p) {
  switch (p) {
    case ReshardPhase::kStarting:
      return "starting";
    case ReshardPhase::kCopying:
      return "copying";
    case ReshardPhase::kAborting:
      return "aborting";
    case ReshardPhase::kCleaning:
      return "cleaning";
    case ReshardPhase::kDeleting:
      return "deleting";
  }
  return "?";
}

std::string reshard_state_path(const std::string& to_map) {
  return to_map + ".reshard-state";
}

std::string format_state(const ReshardState& s) {
  std::ostringstream out;
  out << kHeader << "\nphase " << to_string(s.phase) << "\nid " << s.id << "\nfrom " << s.from_map
      << "\nto " << s.to_map << "\n";
  for (const auto& m : s.moves) out << "move " << m.from << " " << m.to << " " << m.name << "\n";
  for (const auto& [shard, table] : s.created) out << "created " << shard << " " << table << "\n";
  return out.str();
}

std::optional<ReshardState> parse_state(const std::string& text, std::string* error) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kHeader) {
    *error = "not a pgshard reshard state file";
    return std::nullopt;
  }
  ReshardState s;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string what;
    words >> what;
    std::string rest;
    std::getline(words >> std::ws, rest);
    if (what == "phase") {
      auto p = phase_of(rest);
      if (!p) break;
      s.phase = *p;
    } else if (what == "id") {
      s.id = rest;
    } else if (what == "from") {
      s.from_map = rest;
    } else if (what == "to") {
      s.to_map = rest;
    } else if (what == "move") {
      ReshardMove m;
      std::istringstream(rest) >> m.from >> m.to >> m.name;
      if (m.name.empty()) break;
      s.moves.push_back(m);
    } else if (what == "created") {
      const auto sp = rest.find(' ');
      if (sp == std::string::npos) break;
      s.created.emplace_back(rest.substr(0, sp), rest.substr(sp + 1));
    } else if (!what.empty()) {
      break;
    }
    what.clear();
  }
  if (!in.eof() || s.id.empty()) {
    *error = "state file damaged near: " + line;
    return std::nullopt;
  }
  return s;
}

std::optional<ReshardState> load_state(const std::string& path, std::string* error) {
  std::ifstream f(path);
  if (!f) {
    *error = "no reshard in progress (no " + path + ")";
    return std::nullopt;
  }
  std::stringstream text;
  text << f.rdbuf();
  return parse_state(text.str(), error);
}

bool save_state(const std::string& path, const ReshardState& s, std::string* error) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  bool ok = fd >= 0 && write_all(fd, format_state(s)) && ::fsync(fd) == 0;
  if (fd >= 0) ok = ::close(fd) == 0 && ok;
  ok = ok && ::rename(tmp.c_str(), path.c_str()) == 0 && fsync_dir(path);
  if (!ok) *error = "cannot write " + path + ": " + std::strerror(errno);
  return ok;
}

std::string move_object_name(const std::string& id, const std::string& from,
                             const std::string& to) {
  return "pgshard_rs_" + id + "_" + short_name(from) + "_" + short_name(to);
}

}  // namespace pgshard::admin
