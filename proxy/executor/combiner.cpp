#include "proxy/executor/combiner.hpp"

#include "protocol/messages.hpp"
#include "proxy/router/router.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace msg = protocol::msg;
namespace sqlstate = protocol::sqlstate;

namespace {

// Shards agree on a result shape when names, types and formats match; table OIDs and
// column numbers differ from shard to shard and do not count.
bool same_columns(std::string_view a_body, std::string_view b_body) {
  auto a = proto::RowDescription::parse(a_body);
  auto b = proto::RowDescription::parse(b_body);
  if (!a || !b || a->fields.size() != b->fields.size()) return false;
  for (std::size_t i = 0; i < a->fields.size(); ++i) {
    const auto& x = a->fields[i];
    const auto& y = b->fields[i];
    if (x.name != y.name || x.type_oid != y.type_oid || x.format != y.format) return false;
  }
  return true;
}

bool is_row(char type) {
  return type == msg::kDataRow || type == msg::kCopyData;
}

}  // namespace

Combiner::Combiner(int legs, CombineOptions options)
    : options_(std::move(options)),
      legs_(static_cast<std::size_t>(legs)),
      held_(options_.row_legs.empty() ? 0 : static_cast<std::size_t>(legs)) {}

void Combiner::stop(proto::ErrorInfo e) {
  if (!failure_) failure_ = std::move(e);
}

void Combiner::fail(int i, const std::string& problem, bool timed_out) {
  auto& leg = legs_[static_cast<std::size_t>(i)];
  if (leg.failed || leg.done) return;
  leg.failed = true;
  leg.has_head = false;
  const auto& name = options_.shard_names[static_cast<std::size_t>(i)];
  // A COPY stream cut short would be a corrupt file, not a partial answer.
  if (options_.partial && !copy_out_) {
    missing_.push_back(name);
    end_rows(i);
  } else if (!error_sent_) {
    stop(proto::error(timed_out ? sqlstate::kQueryCanceled : sqlstate::kConnectionFailure,
                      "shard " + name + " " + problem, {},
                      "set pgshard.partial_results = on to answer from the other shards"));
  }
}

void Combiner::end_rows(int i) {
  auto& leg = legs_[static_cast<std::size_t>(i)];
  if (!merger_ || leg.rows_ended) return;
  leg.rows_ended = true;
  merger_->end_of_rows(i);
}

void Combiner::deliver(std::string_view frames) {
  // Rows for the client, cut at Execute's row limit (the rest are dropped: suspended).
  if (options_.max_rows == 0) {
    out_.append(frames);
    return;
  }
  while (!frames.empty()) {
    auto d = proto::decode_frame(frames);
    if (d.status != proto::DecodeStatus::kFrame) break;
    if (delivered_ < options_.max_rows)
      out_.append(frames.substr(0, d.consumed));
    else
      suspended_ = true;
    ++delivered_;
    frames.remove_prefix(d.consumed);
  }
}

std::vector<const std::string*> Combiner::match_rows_by_key() const {
  const auto& legs = options_.row_legs;
  std::vector<const std::string*> slot(legs.size(), nullptr);
  auto columns = proto::RowDescription::parse(columns_);
  if (options_.row_keys.size() != legs.size() || !columns) return {};
  std::size_t col = columns->fields.size();
  for (std::size_t c = 0; c < columns->fields.size(); ++c)
    if (columns->fields[c].name == options_.key_column && columns->fields[c].table_oid != 0)
      col = c;
  if (col == columns->fields.size()) return {};
  const bool binary = columns->fields[col].format == 1;
  for (std::size_t l = 0; l < held_.size(); ++l) {
    std::vector<std::size_t> mine;  // this leg's VALUES rows, in order
    std::set<std::string_view> keys;
    bool repeats = false;
    for (std::size_t i = 0; i < legs.size(); ++i)
      if (static_cast<std::size_t>(legs[i]) == l) {
        mine.push_back(i);
        repeats = !keys.insert(options_.row_keys[i]).second || repeats;
      }
    // A shard returns its rows in the order of its VALUES rows, skipping some: each row
    // answers the next VALUES row with its key. With a key repeated, which one was skipped
    // cannot be told.
    if (repeats && held_[l].size() != mine.size()) return {};
    std::size_t next = 0;
    for (const auto& raw : held_[l]) {
      auto row = proto::DataRow::parse(std::string_view(raw).substr(5));
      if (!row || row->values.size() <= col || !row->values[col]) return {};
      std::optional<std::string> text(std::string(*row->values[col]));
      if (binary) text = router::binary_text(*row->values[col], options_.key_type);
      if (!text) return {};
      const auto key = router::key_identity(options_.key_type, *text);
      while (next < mine.size() && options_.row_keys[mine[next]] != key) ++next;
      if (next == mine.size()) return {};
      slot[mine[next++]] = &raw;
    }
  }
  return slot;
}

void Combiner::deliver_in_values_order() {
  std::vector<std::size_t> expected(held_.size(), 0);
  for (int l : options_.row_legs)
    if (l >= 0 && static_cast<std::size_t>(l) < expected.size())
      ++expected[static_cast<std::size_t>(l)];
  bool complete = true;
  for (std::size_t l = 0; l < held_.size(); ++l)
    complete = complete && held_[l].size() == expected[l];
  if (complete) {
    std::vector<std::size_t> next(held_.size(), 0);
    for (int l : options_.row_legs) {
      auto& rows = held_[static_cast<std::size_t>(l)];
      deliver(rows[next[static_cast<std::size_t>(l)]++]);
    }
  } else if (auto slots = match_rows_by_key(); !slots.empty()) {
    // Some rows returned nothing (ON CONFLICT DO NOTHING, a BEFORE trigger skipping a
    // row): the key values tell which.
    for (const auto* row : slots)
      if (row) deliver(*row);
  } else {
    // Which rows were skipped cannot be told: each shard's rows come in turn.
    for (const auto& rows : held_)
      for (const auto& r : rows) deliver(r);
  }
  for (auto& rows : held_) rows.clear();
}

int Combiner::pump_merge() {
  // The merger asks for the rows it needs, one at a time.
  for (int s; (s = merger_->wants()) >= 0;) {
    auto& leg = legs_[static_cast<std::size_t>(s)];
    if (!live(leg)) return -1;
    if (!leg.has_head) return s;
    if (leg.type == msg::kDataRow) {
      merger_->add_row(s, leg.body());
      leg.has_head = false;
    } else {
      end_rows(s);
    }
    merged_.clear();
    merger_->take(merged_);
    deliver(merged_);
  }
  return -1;
}

int Combiner::wants() {
  for (;;) {
    if (failure_) return -1;
    if (phase_ == Phase::kMerge) {
      if (int s = pump_merge(); s >= 0 && !failure_) return s;
      if (!merger_->error().empty()) {
        stop(proto::error(merger_->error_code(), merger_->error()));
        return -1;
      }
      // LIMIT reached: the rest of each shard's rows is not needed.
      for (auto& leg : legs_)
        if (live(leg) && leg.has_head && leg.type == msg::kDataRow) {
          leg.has_head = false;
          leg.skipping = true;
        }
      phase_ = Phase::kRound;
    }
    if (phase_ == Phase::kRows) {
      // Each shard's rows in turn, until its next reply that is not a row.
      const int n = static_cast<int>(legs_.size());
      while (rows_leg_ < n) {
        auto& leg = legs_[static_cast<std::size_t>(rows_leg_)];
        if (!live(leg) || (leg.has_head && !is_row(leg.type))) {
          if (copy_out_) copy_out_->end(rows_leg_);
          ++rows_leg_;
          continue;
        }
        if (!leg.has_head) return rows_leg_;
        if (copy_out_ && leg.type == msg::kCopyData)
          copy_out_->data(rows_leg_, leg.body(), out_);  // (COPY has no Execute row limit)
        else if (!options_.row_legs.empty())
          held_[static_cast<std::size_t>(rows_leg_)].push_back(leg.head);
        else if (!options_.replicated || rows_leg_ == rows_source_)
          deliver(leg.head);
        leg.has_head = false;
      }
      if (!options_.row_legs.empty()) deliver_in_values_order();
      phase_ = Phase::kRound;
    }
    // A round: every live leg's next reply.
    bool any = false;
    for (std::size_t i = 0; i < legs_.size(); ++i) {
      if (!live(legs_[i])) continue;
      any = true;
      if (!legs_[i].has_head) return static_cast<int>(i);
    }
    if (!any) return -1;
    resolve();
  }
}

void Combiner::add(int i, const proto::Frame& f, std::string_view raw, bool hidden) {
  auto& leg = legs_[static_cast<std::size_t>(i)];
  if (f.type == msg::kNoticeResponse || f.type == msg::kNotificationResponse) {
    // The same notice from every shard reaches the client once.
    if (notices_seen_.insert(std::string(raw)).second) out_.append(raw);
    return;
  }
  if (f.type == msg::kParameterStatus) return;
  if (leg.draining && f.type != msg::kReadyForQuery) return;
  if (leg.skipping && f.type == msg::kDataRow) return;
  leg.skipping = false;
  leg.head.assign(raw);
  leg.type = f.type;
  leg.hidden = hidden;
  leg.has_head = true;
}

void Combiner::resolve() {
  std::vector<int> now;
  for (std::size_t i = 0; i < legs_.size(); ++i)
    if (live(legs_[i])) now.push_back(static_cast<int>(i));
  auto at = [&](int i) -> Leg& { return legs_[static_cast<std::size_t>(i)]; };
  // A shard's error ends the statement: PostgreSQL skips to the end of the request.
  for (int i : now) {
    if (at(i).type != msg::kErrorResponse) continue;
    if (!error_sent_) out_.append(at(i).head);
    error_sent_ = true;
    for (int j : now) {
      if (at(j).type == msg::kReadyForQuery) continue;
      at(j).has_head = false;
      at(j).draining = true;
    }
    return;  // the next round sees ReadyForQuery everywhere
  }
  bool rows = false;
  for (int i : now) rows = rows || is_row(at(i).type);
  if (rows) {
    phase_ = merger_ ? Phase::kMerge : Phase::kRows;
    rows_leg_ = 0;
    rows_source_ = now.front();
    return;
  }
  const char type = at(now.front()).type;
  for (int i : now)
    if (at(i).type != type)
      stop(proto::error(sqlstate::kInternalError,
                        "shards answered the statement differently (shard " +
                            options_.shard_names[static_cast<std::size_t>(i)] + ")"));
  if (failure_) return;
  resolve_same(type);
  if (failure_) return;
  for (int i : now) {
    if (type == msg::kReadyForQuery) at(i).done = true;
    at(i).has_head = false;
    at(i).draining = false;
  }
}

void Combiner::resolve_same(char type) {
  std::vector<Leg*> now;
  for (auto& leg : legs_)
    if (live(leg)) now.push_back(&leg);
  const Leg& first = *now.front();
  switch (type) {
    case msg::kRowDescription:
      describe_rows(first);
      return;
    case msg::kCommandComplete:
      complete_statement(now);
      return;
    case msg::kReadyForQuery:
      return;  // the executor writes the client's, after its own end of the statement
    case msg::kCopyOutResponse:
      copy_out_.emplace(static_cast<int>(legs_.size()), first.body(), options_.copy_header);
      break;
    case msg::kCopyDone:
      if (copy_out_) {
        if (!copy_out_->error().empty()) {
          stop(proto::error(sqlstate::kInternalError, copy_out_->error()));
          return;
        }
        copy_out_->finish(out_);
        copy_out_.reset();
      }
      break;
    case msg::kCopyInResponse:
    case msg::kCopyBothResponse:
      // COPY FROM STDIN needs the client's rows, which a fan-out does not read: it runs
      // through executor::copy_in_split or on one shard. Never wait here for data.
      stop(proto::error(sqlstate::kFeatureNotSupported,
                        "COPY FROM STDIN cannot run on several shards this way", {},
                        "send it as a simple Query outside a transaction block"));
      return;
    default:
      break;  // NoData, BindComplete, ParameterDescription, EmptyQuery, CopyOut/Done: once
  }
  out_.append(first.head);
}

void Combiner::describe_rows(const Leg& first) {
  for (std::size_t i = 0; i < legs_.size(); ++i)
    if (live(legs_[i]) && !same_columns(first.body(), legs_[i].body()))
      stop(proto::error(
          sqlstate::kDatatypeMismatch,
          "shards disagree on the result columns (shard " + options_.shard_names[i] + ")", {},
          "make the table definitions the same on every shard"));
  if (failure_) return;
  if (!options_.row_legs.empty()) columns_.assign(first.body());
  if (options_.plan)
    start_merge(first);
  else if (!first.hidden)
    out_.append(first.head);
}

void Combiner::start_merge(const Leg& first) {
  merger_.emplace(*options_.plan, static_cast<int>(legs_.size()), *options_.collation,
                  options_.limit, options_.offset);
  for (std::size_t i = 0; i < legs_.size(); ++i)
    if (legs_[i].failed) end_rows(static_cast<int>(i));
  std::string err;
  const auto at = static_cast<std::size_t>(&first - legs_.data());
  auto body = merger_->describe(
      first.body(), &err,
      at < options_.column_collations.size() ? options_.column_collations[at] : nullptr);
  if (!body) {
    stop(proto::error(sqlstate::kFeatureNotSupported, err, {},
                      "add the shard key to the WHERE clause so one shard answers"));
    return;
  }
  if (!first.hidden) proto::MessageWriter(out_).begin(msg::kRowDescription).bytes(*body).finish();
}

void Combiner::complete_statement(const std::vector<Leg*>& now) {
  if (merger_) {
    if (!finish_merge()) return;
  } else {
    end_portal(summed_tag(now));
    total_ = 0;
    counted_ = false;
  }
  delivered_ = 0;
  suspended_ = false;
}

bool Combiner::finish_merge() {
  for (std::size_t i = 0; i < legs_.size(); ++i) end_rows(static_cast<int>(i));
  merged_.clear();
  merger_->take(merged_);
  deliver(merged_);
  if (!merger_->error().empty()) {
    stop(proto::error(merger_->error_code(), merger_->error()));
    return false;
  }
  end_portal("SELECT " + std::to_string(merger_->rows_sent()));
  merger_.reset();
  return true;
}

std::string Combiner::summed_tag(const std::vector<Leg*>& now) {
  // "SELECT 3", "UPDATE 2", "INSERT 0 5" carry a count; "CREATE TABLE" does not.
  for (const Leg* leg : now) {
    auto c = proto::CommandComplete::parse(leg->body());
    if (!c) continue;
    const auto sp = c->tag.rfind(' ');
    const auto last = sp == c->tag.npos ? std::string_view() : c->tag.substr(sp + 1);
    counted_ = !last.empty() && last.find_first_not_of("0123456789") == last.npos;
    verb_ = std::string(counted_ ? c->tag.substr(0, c->tag.find(' ')) : c->tag);
    if (counted_) total_ += std::strtoull(std::string(last).c_str(), nullptr, 10);
    if (options_.replicated) break;  // every shard changed its copy of the same rows
  }
  if (!counted_) return verb_;
  return verb_ == "INSERT" ? "INSERT 0 " + std::to_string(total_)
                           : verb_ + " " + std::to_string(total_);
}

void Combiner::end_portal(const std::string& tag) {
  if (suspended_)
    proto::write_empty(out_, msg::kPortalSuspended);
  else
    proto::CommandComplete{tag}.write(out_);
}

}  // namespace pgshard::executor
