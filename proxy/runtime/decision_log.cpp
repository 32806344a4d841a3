// The two-phase commit decision log (see decision_log.hpp).
#include "proxy/runtime/decision_log.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

namespace pgshard::runtime {

namespace {

uint32_t checksum(const std::string& s) {
  uint32_t h = 2166136261u;  // FNV-1a
  for (unsigned char c : s) h = (h ^ c) * 16777619u;
  return h;
}

}  // namespace

std::string make_record(char kind, const std::string& gid) {
  std::string body = std::string(1, kind) + " " + gid;
  char sum[16];
  std::snprintf(sum, sizeof(sum), "%08x", checksum(body));
  return body + " " + sum + "\n";
}

char parse_record(const std::string& line, std::string* gid) {
  auto last = line.rfind(' ');
  if (line.size() < 4 || last == std::string::npos || last < 2) return 0;
  std::string body = line.substr(0, last);
  char sum[16];
  std::snprintf(sum, sizeof(sum), "%08x", checksum(body));
  if (line.substr(last + 1) != sum) return 0;
  if ((body[0] != 'C' && body[0] != 'D') || body[1] != ' ') return 0;
  *gid = body.substr(2);
  return body[0];
}

bool DecisionLog::open(const std::string& dir, std::string* error) {
  std::lock_guard lock(mu_);
  ::mkdir(dir.c_str(), 0700);
  path_ = dir + "/decisions.log";
  {
    std::ifstream in(dir + "/instance");
    std::getline(in, prefix_);
  }
  if (!prefix_.starts_with("pgshard_") || prefix_.back() != '_') {
    std::random_device rd;
    char buf[40];
    std::snprintf(buf, sizeof(buf), "pgshard_%08x%08x_", rd(), rd());
    prefix_ = buf;
    fresh_ = true;
    std::ofstream out(dir + "/instance", std::ios::trunc);
    out << prefix_ << "\n";
    out.flush();
    if (!out) {
      *error = "cannot write " + dir + "/instance";
      return false;
    }
  }
  {
    std::ifstream in(path_);
    std::string line, gid;
    while (std::getline(in, line)) {
      char kind = parse_record(line, &gid);
      if (kind == 'C') decided_.insert(gid);
      if (kind == 'D') done_.insert(gid);
    }
  }
  {
    // A new generation for every start, durable before any id of it is used.
    std::ifstream in(dir + "/generation");
    uint64_t g = 0;
    in >> g;
    generation_ = g + 1;
    const std::string tmp = dir + "/generation.tmp";
    int gfd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const std::string text = std::to_string(generation_) + "\n";
    bool ok = gfd >= 0 &&
              ::write(gfd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
              ::fsync(gfd) == 0;
    if (gfd >= 0) ::close(gfd);
    if (!ok || ::rename(tmp.c_str(), (dir + "/generation").c_str()) != 0) {
      *error = "cannot write " + dir + "/generation: " + std::strerror(errno);
      return false;
    }
  }
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd_ < 0) {
    *error = "cannot open the two-phase commit log " + path_ + ": " + std::strerror(errno);
    return false;
  }
  return true;
}

DecisionLog::~DecisionLog() {
  if (fd_ >= 0) ::close(fd_);
}

bool DecisionLog::append(const std::string& line, bool sync) {
  if (fd_ < 0) return false;
  std::size_t off = 0;
  while (off < line.size()) {
    ssize_t n = ::write(fd_, line.data() + off, line.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    off += static_cast<std::size_t>(n);
  }
  return !sync || ::fdatasync(fd_) == 0;
}

bool DecisionLog::commit(const std::string& gid) {
  std::lock_guard lock(mu_);
  if (!append(make_record('C', gid), true)) return false;
  decided_.insert(gid);
  if (auto it = live_.find(gid); it != live_.end()) it->second = true;
  return true;
}

void DecisionLog::done(const std::string& gid) {
  std::lock_guard lock(mu_);
  append(make_record('D', gid), false);
  decided_.erase(gid);
  done_.erase(gid);
  if (++since_compact_ >= kCompactEvery) compact_locked();
}

void DecisionLog::begin(const std::string& gid) {
  std::lock_guard lock(mu_);
  live_.emplace(gid, false);
}

void DecisionLog::end(const std::string& gid) {
  std::lock_guard lock(mu_);
  auto it = live_.find(gid);
  if (it == live_.end()) return;
  if (!it->second) unsettled_[gid] = std::chrono::steady_clock::now();
  live_.erase(it);
}

bool DecisionLog::live(const std::string& gid) const {
  std::lock_guard lock(mu_);
  return live_.contains(gid);
}

bool DecisionLog::needs_recovery() const {
  std::lock_guard lock(mu_);
  if (!unsettled_.empty()) return true;
  for (const auto& g : decided_)
    if (!done_.contains(g)) return true;
  return false;
}

void DecisionLog::settle(std::chrono::steady_clock::time_point cutoff) {
  std::lock_guard lock(mu_);
  std::erase_if(unsettled_, [&](const auto& u) { return u.second <= cutoff; });
}

std::set<std::string> DecisionLog::pending() const {
  std::lock_guard lock(mu_);
  std::set<std::string> out;
  for (const auto& g : decided_)
    if (!done_.contains(g)) out.insert(g);
  return out;
}

bool DecisionLog::decided(const std::string& gid) const {
  std::lock_guard lock(mu_);
  return decided_.contains(gid) && !done_.contains(gid);
}

void DecisionLog::compact() {
  std::lock_guard lock(mu_);
  compact_locked();
}

void DecisionLog::compact_locked() {
  since_compact_ = 0;
  std::string tmp = path_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string all;
  for (const auto& g : decided_)
    if (!done_.contains(g)) all += make_record('C', g);
  bool ok = ::write(fd, all.data(), all.size()) == static_cast<ssize_t>(all.size()) &&
            ::fdatasync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path_.c_str()) != 0) return;
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC, 0600);
  done_.clear();
}

}  // namespace pgshard::runtime
