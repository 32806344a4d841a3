// The multi-shard row merger: a synchronous state machine, no sockets, fed one message at a
// time. It asks for rows from the shard it needs next (wants()), so an ORDER BY merge holds
// at most one pending row per shard, and hands back DataRow frames for the client.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "protocol/messages.hpp"
#include "proxy/merge/plan.hpp"
#include "proxy/merge/value.hpp"

namespace pgshard::merge {

class Merger {
 public:
  // `limit`/`offset` are the plan's bounds with parameters resolved (nullopt: none).
  Merger(const MergePlan& plan, int shards, const Collation& collation,
         std::optional<int64_t> limit, std::optional<int64_t> offset);

  // The shards' RowDescription body (every shard's must agree; the executor checks), and
  // the collations of that shard's columns that are not the database's (null: none known).
  // Returns the RowDescription body the client gets, or an error message.
  std::optional<std::string> describe(std::string_view body, std::string* error,
                                      const ColumnCollations* collations = nullptr);
  // Without a RowDescription (a statement returning no rows) nothing is merged.
  bool described() const { return described_; }

  // The shard whose next row is needed, or -1 when none is (everything is read, or the
  // answer is complete — LIMIT reached — and the rest may be discarded).
  int wants() const;
  void add_row(int shard, std::string_view datarow_body);
  void end_of_rows(int shard);

  // DataRow frames ready for the client, appended to `out`.
  void take(std::string& out);
  bool complete() const { return complete_; }
  uint64_t rows_sent() const { return sent_; }
  // Set when a value could not be merged (pgshard then fails the statement).
  const std::string& error() const { return error_; }
  const std::string& error_code() const { return error_code_; }

 private:
  using Row = std::vector<std::optional<std::string>>;
  struct Column {
    int32_t type = 0;
    int16_t format = 0;
    const Collation* collation = nullptr;  // text: the column's own (null: the database's)
    std::string problem;        // text: why pgshard cannot order its values ("" if it can)
    bool deterministic = true;  // equal values have equal bytes (GROUP BY, DISTINCT)
  };
  // The collation of a shard column, as describe() found it.
  Column column_of(const protocol::FieldDescription& f, const ColumnCollations* collations,
                   bool schema_has_others) const;
  // describe()'s steps; each returns why the shards' columns cannot be merged ("" if they can).
  // Aggregate mode: the merged row's columns (output_columns_) from the shards' `n` columns.
  std::string describe_outputs(int n);
  // The merged column of aggregate `a` from its shards' partial column.
  static std::string merge_partial(const Aggregate& a, Column& partial);
  // GROUP BY and DISTINCT: whether equal values from different shards meet.
  std::string check_equality(int n);
  std::string check_order(const std::vector<Column>& sort_columns) const;
  protocol::RowDescription client_description(const protocol::RowDescription& desc) const;
  const Collation& collation_of(const Column& col) const {
    return col.collation ? *col.collation : collation_;
  }
  struct Acc {  // one aggregate's running state in one group
    int64_t count = 0;
    std::optional<int64_t> int_sum;
    std::optional<Decimal> num_sum;
    std::optional<double> float_sum;
    std::optional<std::string> best;  // min/max
    std::optional<bool> flag;         // bool_and/bool_or
    bool any = false;
  };
  struct Group {
    Row keys;  // the group's shard row (group-key and constant columns)
    std::vector<Acc> accs;
  };

  // ORDER BY merge: each shard's pending row as it sent it (its slot's buffers are reused
  // row after row), with its columns' bytes in it.
  struct Head {
    bool present = false;
    std::string body;                    // the DataRow body
    std::vector<protocol::Value> cells;  // views into body
    std::size_t visible_end = 0;         // where the columns the client sees end in body
    std::optional<int64_t> key;          // the first sort key, when an integer in text
  };
  void step();
  // Passes a shard's row on as it is (without pgshard's helper columns).
  void emit_head(const Head& head);
  bool head_before(const Head& a, const Head& b) const;
  void emit(Row row);
  void finish_aggregate();
  void accumulate(Group& g, const std::vector<protocol::Value>& values);
  std::optional<std::string> final_value(const Group& g, int output);
  std::optional<std::string> encode_integer(int32_t type, int64_t v, int16_t format) const;
  // A cast count or sum (Aggregate::cast_type) applied to the merged total.
  std::optional<std::string> cast_total(const Aggregate& a, const Acc& acc, const Column& col);
  template <typename Cells>
  int compare_rows(const Cells& a, const Cells& b, const std::vector<Column>& columns) const;
  std::optional<bool> evaluate(const Predicate& p, const Row& row) const;
  std::optional<int> compare_operand(const Row& row, int value, const std::optional<std::string>& c,
                                     int other_value) const;
  // Ends the merge with an error; `sqlstate` as PostgreSQL would report it (0A000: pgshard
  // cannot merge this).
  void fail(std::string message, std::string sqlstate = "0A000");

  const MergePlan& plan_;
  const Collation& collation_;
  std::optional<int64_t> limit_, offset_;
  int shards_;
  bool described_ = false;
  std::vector<SortKey> order_;  // the plan's keys with hidden columns resolved
  std::vector<Column> shard_columns_;
  std::vector<Column> output_columns_;  // aggregate mode: the merged row's columns
  int visible_ = 0;
  std::vector<bool> ended_;
  std::vector<Head> heads_;  // ORDER BY merge: the pending row of each shard
  std::unordered_map<std::string, std::size_t> group_index_;
  std::vector<Group> groups_;
  std::unordered_set<std::string> seen_;  // DISTINCT
  std::optional<Row> last_distinct_on_;
  bool exact_groups_ = true;    // group keys may meet across shards: exact keys only
  bool exact_distinct_ = true;  // likewise DISTINCT rows
  int64_t skipped_ = 0;
  uint64_t sent_ = 0;
  bool complete_ = false;
  std::string out_;
  std::string error_;
  std::string error_code_;
};

}  // namespace pgshard::merge
