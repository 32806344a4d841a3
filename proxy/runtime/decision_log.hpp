// The two-phase commit decision log: a transaction across shards is committed only after its
// decision is on disk (fsync), so recovery can finish what a crash interrupted. One line per
// record, each with a checksum; a torn last line is ignored.
#pragma once

#include <chrono>
#include <map>
#include <mutex>
#include <set>
#include <string>

namespace pgshard::runtime {

class DecisionLog {
 public:
  // Opens (creating) DIR/decisions.log; false with `error` when it cannot be written.
  bool open(const std::string& dir, std::string* error);
  bool is_open() const { return fd_ >= 0; }
  // Durably records that global transaction `gid` commits. False on I/O failure (the
  // transaction must then be rolled back).
  bool commit(const std::string& gid);
  // Notes that every participant of `gid` committed (no fsync: recovery would redo it).
  void done(const std::string& gid);
  // Transactions decided to commit and not known to be done, read at open().
  std::set<std::string> pending() const;
  bool decided(const std::string& gid) const;
  // Rewrites the log without the finished transactions. done() also calls it every
  // kCompactEvery records, so the log stays bounded while pgshard runs.
  void compact();
  static constexpr int kCompactEvery = 2000;

  // The start-up count of this instance (persisted in the log directory): global ids are
  // "<prefix><generation>_<n>", unique across restarts even though n starts at 1 each time.
  uint64_t generation() const { return generation_; }
  // Global transactions a session is finishing right now: recovery leaves them alone.
  void begin(const std::string& gid);
  // A transaction that ends undecided (rolled back, or the session gave up) is remembered as
  // unsettled: a participant may still be prepared (its ROLLBACK PREPARED failed, or a
  // PREPARE's reply was lost), and only a recovery pass can roll it back.
  void end(const std::string& gid);
  bool live(const std::string& gid) const;
  // True when a recovery pass has something to finish: decided commits not known to be done
  // everywhere, or unsettled transactions.
  bool needs_recovery() const;
  // Forgets the unsettled transactions that ended at or before `cutoff` (a complete recovery
  // pass that started after them found and rolled back whatever they left).
  void settle(std::chrono::steady_clock::time_point cutoff);
  ~DecisionLog();

  // This instance's prefix of global transaction ids, "pgshard_<hex>_", kept in the log
  // directory so a restarted pgshard recognises (and resolves) its own transactions and
  // never touches those of other pgshard instances sharing the shards.
  const std::string& prefix() const { return prefix_; }
  // True when open() created the instance: no transaction of it can be in doubt yet.
  bool fresh() const { return fresh_; }

 private:
  bool append(const std::string& line, bool sync);
  void compact_locked();
  uint64_t generation_ = 0;
  int since_compact_ = 0;
  std::map<std::string, bool> live_;  // gid -> decided (commit() succeeded)
  std::map<std::string, std::chrono::steady_clock::time_point> unsettled_;  // gid -> end()
  mutable std::mutex mu_;
  int fd_ = -1;
  std::string path_;
  std::string prefix_;
  bool fresh_ = false;
  std::set<std::string> decided_;
  std::set<std::string> done_;
};

// Parses one log line; returns the record kind ('C' or 'D') and gid, or 0 when the line is
// malformed or its checksum does not match.
char parse_record(const std::string& line, std::string* gid);
std::string make_record(char kind, const std::string& gid);

}  // namespace pgshard::runtime
