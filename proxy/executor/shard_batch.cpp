// The shards' version of a client's extended-protocol batch run across shards (ShardBatch).
#include <set>

#include "protocol/codec.hpp"
#include "protocol/errors.hpp"
#include "protocol/messages.hpp"
#include "proxy/executor/fan_out_parts.hpp"
#include "proxy/merge/merger.hpp"
#include "proxy/router/text.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

using Owner = pool::Replies::Owner;
using Action = pool::Replies::Action;

// The client's extended batch as the shards get it: statement names prefixed (and closed
// again before Sync, so no shard keeps them), a Parse ahead of any Bind or Describe of a
// statement this batch did not parse, and a Describe ahead of Execute so the merge knows
// the column types. The replies those cause are expected hidden.
class ShardBatch {
 public:
  ShardBatch(Client& c, std::string_view messages, const merge::MergePlan* plan,
             std::string_view override_sql, std::string& request, pool::Replies& expected)
      : c_(c),
        messages_(messages),
        plan_(plan),
        override_sql_(override_sql),
        request_(request),
        expected_(expected) {}
  // False when the batch cannot run across shards (`names`): `why` and `hint` say so.
  bool build(std::optional<int64_t>& limit, std::optional<int64_t>& offset, int32_t& max_rows,
             const std::string& names, std::string& why, std::string& hint);

 private:
  static std::string shard_name(std::string_view name) {
    return name.empty() ? std::string() : "pgshard_fan." + std::string(name);
  }
  std::string_view shard_text(std::string_view sql) const;
  // A split INSERT's part may leave out rows holding some of the client's parameters:
  // those are declared (text, or bytea for binary values) so the Bind still fits.
  std::vector<int32_t> shard_types(const std::vector<int32_t>& declared) const;
  void parse_first(std::string_view name);
  void bind(proto::Bind& b, std::optional<int64_t>& limit, std::optional<int64_t>& offset);
  void describe(const proto::Describe& d);
  void sync(std::string_view raw);

  Client& c_;
  std::string_view messages_;  // the client's batch
  const merge::MergePlan* plan_;
  std::string_view override_sql_;
  std::string& request_;
  pool::Replies& expected_;
  std::set<std::string, std::less<>> parsed_;
  std::set<std::string, std::less<>> described_portals_;
  std::vector<std::string> fan_names_;     // statements to close before Sync
  std::optional<proto::Bind> first_bind_;  // the batch's first Bind (split INSERTs)
};

std::vector<int32_t> ShardBatch::shard_types(const std::vector<int32_t>& declared) const {
  if (override_sql_.empty() || !first_bind_) return declared;
  return router::declared_types(override_sql_, declared, *first_bind_);
}

std::string_view ShardBatch::shard_text(std::string_view sql) const {
  if (!override_sql_.empty()) return override_sql_;
  if (plan_ && !plan_->shard_sql.empty() &&
      c_.worker().analysis_cache().get(sql, c_.config())->merge.get() == plan_)
    return plan_->shard_sql;
  return sql;
}

void ShardBatch::parse_first(std::string_view name) {
  if (parsed_.contains(name)) return;
  const std::string renamed = shard_name(name);  // Parse holds views: keep the name alive
  if (!name.empty()) {
    // A batch that failed on this server skipped its Close (an error skips to Sync): the
    // name may still be there. Closing a name that does not exist is no error.
    proto::Close{'S', renamed}.write(request_);
    expected_.expect_close(Owner::kClient, Action::kHide);
  }
  proto::Parse{renamed, shard_text(c_.stored_text(name)), shard_types(c_.stored_types(name))}.write(
      request_);
  expected_.expect_parse(Owner::kClient, Action::kHide);
  parsed_.insert(std::string(name));
  if (!name.empty()) fan_names_.push_back(renamed);
}

void ShardBatch::bind(proto::Bind& b, std::optional<int64_t>& limit,
                      std::optional<int64_t>& offset) {
  parse_first(b.statement);
  const std::string n = shard_name(b.statement);
  b.statement = n;
  // Helper columns come after the client's; they travel as text.
  if (plan_ && plan_->hidden > 0 && b.result_formats.size() > 1)
    b.result_formats.resize(b.result_formats.size() + static_cast<std::size_t>(plan_->hidden), 0);
  if (plan_) {
    auto resolve = [&](const merge::Bound& bound) -> std::optional<int64_t> {
      if (bound.value) return bound.value;
      if (bound.param <= 0) return std::nullopt;
      auto text = router::param_text(b, bound.param, config::KeyType::kInt8);
      if (!text) return std::nullopt;
      return std::strtoll(text->c_str(), nullptr, 10);
    };
    limit = resolve(plan_->limit);
    offset = resolve(plan_->offset);
  }
  b.write(request_);
}

void ShardBatch::describe(const proto::Describe& d) {
  std::string n(d.name);
  if (d.kind == 'S') {
    parse_first(d.name);
    n = shard_name(d.name);
  } else {
    described_portals_.insert(n);
  }
  proto::Describe{d.kind, n}.write(request_);
  expected_.expect_describe(Owner::kClient, Action::kForward);
}

void ShardBatch::sync(std::string_view raw) {
  // Shards keep nothing of the client's statements: close what was parsed here.
  for (const auto& n : fan_names_) {
    proto::Close{'S', n}.write(request_);
    expected_.expect_close(Owner::kClient, Action::kHide);
  }
  request_.append(raw);
  expected_.expect_ready(Owner::kClient);
}

bool ShardBatch::build(std::optional<int64_t>& limit, std::optional<int64_t>& offset,
                       int32_t& max_rows, const std::string& names, std::string& why,
                       std::string& hint) {
  request_.clear();
  expected_.clear();
  max_rows = 0;
  int executes = 0;
  if (!override_sql_.empty())
    for (const auto m : proto::frames(messages_))
      if (m.frame.type == proto::msg::kBind) {
        first_bind_ = proto::Bind::parse(m.frame.body);
        break;
      }
  for (const auto m : proto::frames(messages_)) {
    const auto& f = m.frame;
    switch (f.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(f.body)) {
          std::string n = shard_name(p->name);
          proto::Parse{n, shard_text(p->query), shard_types(p->param_types)}.write(request_);
          expected_.expect_parse(Owner::kClient, p->name.empty() && c_.injected_parse(p->query)
                                                     ? Action::kHide
                                                     : Action::kForward);
          parsed_.insert(std::string(p->name));
          if (!p->name.empty()) fan_names_.push_back(n);
        }
        break;
      case proto::msg::kBind:
        if (auto b = proto::Bind::parse(f.body)) bind(*b, limit, offset);
        break;
      case proto::msg::kDescribe:
        if (auto d = proto::Describe::parse(f.body)) describe(*d);
        break;
      case proto::msg::kExecute:
        if (auto e = proto::Execute::parse(f.body)) {
          ++executes;
          // A row limit (asyncpg's fetchrow, JDBC's fetch size): the shards run the portal
          // to the end; pgshard hands out max_rows rows and then PortalSuspended. The rest
          // of the portal is gone, so only a batch that ends it (Sync) may do this.
          if (e->max_rows != 0 && max_rows != 0) {
            why = "several row-limited Executes across shards (" + names + ") in one batch";
            hint = "fetch all rows, or add the shard key";
            return false;
          }
          if (e->max_rows != 0) max_rows = e->max_rows;
          // The merge needs the columns' types even when the client did not ask.
          if (!described_portals_.contains(e->portal)) {
            proto::Describe{'P', e->portal}.write(request_);
            expected_.expect_describe(Owner::kClient, Action::kHide);
          }
          proto::Execute{e->portal, 0}.write(request_);
        }
        break;
      case proto::msg::kClose:
        if (auto cl = proto::Close::parse(f.body)) {
          proto::Close{cl->kind, cl->kind == 'S' ? shard_name(cl->name) : std::string(cl->name)}
              .write(request_);
          expected_.expect_close(Owner::kClient, Action::kForward);
        }
        break;
      case proto::msg::kSync:
        sync(m.raw);
        break;
      default:
        request_.append(m.raw);
    }
  }
  if (plan_ && executes > 1) {
    why = "several multi-shard statements in one pipelined batch";
    hint = "send a Sync after each statement";
    return false;
  }
  return true;
}

}  // namespace

bool build_extended(Client& c, std::string_view messages, const merge::MergePlan* plan,
                    std::string_view override_sql, std::string& request, pool::Replies& expected,
                    std::optional<int64_t>& limit, std::optional<int64_t>& offset,
                    int32_t& max_rows, std::string& out, const std::string& names) {
  std::string why, hint;
  ShardBatch batch(c, messages, plan, override_sql, request, expected);
  if (batch.build(limit, offset, max_rows, names, why, hint)) return true;
  proto::write_error(out, proto::error(sqlstate::kFeatureNotSupported, why, {}, hint));
  return false;
}

}  // namespace pgshard::executor
