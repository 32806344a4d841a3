// Combines the replies of several shards to one statement into the one reply the client
// expects: every shard answers the same messages in the same order, so replies are taken in
// rounds (one message from each shard), rows are merged by merge::Merger or passed on, tags
// are summed, a shard's error ends the statement, notices reach the client once. Fed one
// message at a time by the executor's I/O loop, which asks wants() whose reply comes next.
// Synchronous, no I/O.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "proxy/executor/copy_out.hpp"
#include "proxy/merge/merger.hpp"

namespace pgshard::executor {

struct CombineOptions {
  const merge::MergePlan* plan = nullptr;  // merge rows (ORDER BY, LIMIT, aggregates...)
  const merge::Collation* collation = nullptr;
  std::optional<int64_t> limit, offset;  // the plan's bounds, parameters resolved
  int32_t max_rows = 0;                  // Execute's row limit (0: all)
  bool replicated = false;   // a reference-table write: every shard returns the same rows
  bool partial = false;      // a shard that fails is left out (its name in missing())
  bool copy_header = false;  // COPY ... TO with HEADER: the stream gets one header line
  std::vector<std::string> shard_names;  // per leg, for messages
  // Per leg: its columns with other collations than the database's (null: none known).
  std::vector<const merge::ColumnCollations*> column_collations;
  // A split INSERT ... RETURNING: the leg of each VALUES row, in the client's order. Rows
  // go to the client in that order, as one PostgreSQL returns them (ORMs match returned
  // keys to objects by position).
  std::vector<int> row_legs;
  // With row_legs: each VALUES row's shard-key value (router::key_identity), and the key
  // column, so that rows stay in VALUES order when a shard skips some (ON CONFLICT DO
  // NOTHING) and RETURNING includes the key.
  std::vector<std::string> row_keys;
  std::string key_column;
  config::KeyType key_type = config::KeyType::kInt8;
};

class Combiner {
 public:
  Combiner(int legs, CombineOptions options);

  // The leg whose next reply is needed, or -1 when the statement is over (every leg has
  // sent its ReadyForQuery or failed, or pgshard failed the statement: failure()).
  int wants();
  // The next reply of `leg`. `hidden`: a RowDescription pgshard asked for (the merge needs
  // it, the client did not ask). Copies what it keeps.
  void add(int leg, const protocol::Frame& f, std::string_view raw, bool hidden);
  // `leg` cannot answer (lost, timed out, abandoned); `problem` says why.
  void fail(int leg, const std::string& problem, bool timed_out);
  bool finished(int leg) const { return legs_[static_cast<std::size_t>(leg)].done; }

  // Messages for the client so far (no ReadyForQuery): the caller writes and clears it.
  std::string& out() { return out_; }
  // pgshard's own error for the statement (shards disagree, a shard lost...).
  const std::optional<protocol::ErrorInfo>& failure() const { return failure_; }
  bool error_sent() const { return error_sent_; }  // a shard's error went to the client
  const std::vector<std::string>& missing() const { return missing_; }  // partial answers

 private:
  struct Leg {
    std::string head;  // the reply this round is waiting on (a copy of the raw frame)
    char type = 0;
    bool has_head = false;
    bool hidden = false;
    bool done = false;  // its ReadyForQuery was taken
    bool failed = false;
    bool draining = false;  // after an error: everything up to ReadyForQuery is dropped
    bool skipping = false;  // the merge needs no more rows: drop them
    bool rows_ended = false;
    std::string_view body() const { return std::string_view(head).substr(5); }
  };
  enum class Phase { kRound, kRows, kMerge };

  bool live(const Leg& l) const { return !l.done && !l.failed; }
  // All live legs have their reply for this round: act on them.
  void resolve();
  // Every shard answered `type`: one answer for the client.
  void resolve_same(char type);
  void describe_rows(const Leg& first);
  void start_merge(const Leg& first);  // the merger, fed the first shard's RowDescription
  void complete_statement(const std::vector<Leg*>& now);
  bool finish_merge();  // false: the merge failed the statement
  // The shards' CommandComplete tags as one ("UPDATE 5": the sum of their counts).
  std::string summed_tag(const std::vector<Leg*>& now);
  // CommandComplete with `tag`, or PortalSuspended when Execute's row limit cut the rows.
  void end_portal(const std::string& tag);
  void end_rows(int leg);
  void deliver(std::string_view frames);
  // Runs the merge until it needs a row not here yet; returns the leg it waits on or -1.
  int pump_merge();
  // Delivers the rows held for row_legs in VALUES order.
  void deliver_in_values_order();
  // Which held row answers each VALUES row (null: skipped), told by shard-key values; empty
  // when it cannot be told (no key column returned, or a skipped row repeats a key).
  std::vector<const std::string*> match_rows_by_key() const;
  void stop(protocol::ErrorInfo e);

  CombineOptions options_;
  std::vector<Leg> legs_;
  Phase phase_ = Phase::kRound;
  int rows_leg_ = 0;     // kRows: the leg whose rows are being passed on
  int rows_source_ = 0;  // replicated writes: the one leg whose rows count
  std::optional<merge::Merger> merger_;
  std::optional<CopyOutJoin> copy_out_;  // COPY ... TO STDOUT: the shards' files joined
  std::string merged_;
  std::string out_;
  std::set<std::string> notices_seen_;
  std::optional<protocol::ErrorInfo> failure_;
  bool error_sent_ = false;
  std::vector<std::string> missing_;
  std::vector<std::vector<std::string>> held_;  // row_legs: each leg's rows until all are in
  std::string columns_;                         // row_legs: the RowDescription body, if any
  uint64_t total_ = 0;                          // summed command tag
  std::string verb_;
  bool counted_ = false;
  int64_t delivered_ = 0;
  bool suspended_ = false;
};

}  // namespace pgshard::executor
