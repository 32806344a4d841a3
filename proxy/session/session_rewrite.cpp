// The rewrite actions: statements pgshard completes before routing them again with generated
// keys (GenerateKeys), the rows of an INSERT ... SELECT (InsertSelect), pgshard.unique_id()
// values (UniqueIds).
#include "protocol/messages.hpp"
#include "proxy/executor/capture.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/merge/value.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/runtime/unique_id.hpp"
#include "proxy/runtime/worker.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<std::string> Session::generate_keys(const router::GenerateKeys& generate) {
  // Values for the rows of an INSERT that leave the key, or another column drawing from a
  // sequence, to the column's default, taken from the sequences' home and put into the
  // statement the client sent; routing it again then places each row by its key.
  std::vector<std::string> keys;
  if (generate.count > 0) {
    std::string err = co_await executor::generate_keys(*this, generate.table, generate.count, keys);
    if (!err.empty()) co_return err;
  }
  std::vector<std::vector<std::string>> values(generate.columns.size());
  for (std::size_t i = 0; i < values.size(); ++i) {
    const auto& g = generate.columns[i];
    std::string err =
        co_await executor::generate_keys(*this, generate.table, g.count, values[i], g.column.name);
    if (!err.empty()) co_return err;
  }
  const auto& t = config_.sharded_tables[static_cast<std::size_t>(generate.table)];
  const int position = worker_.columns().key_position(t.qualified_name()).value_or(-1);
  if (!rewrite_statement(pending_, statements_, [&](std::string_view sql, const proto::Bind*) {
        std::optional<std::string> out(sql);
        if (!keys.empty()) out = router::with_generated_keys(*out, t.column, position, keys);
        for (std::size_t i = 0; i < values.size() && out; ++i) {
          const auto& g = generate.columns[i];
          out = router::with_generated_keys(*out, g.column.name,
                                            g.positional ? g.column.position : -1, values[i],
                                            g.column.always);
        }
        return out;
      }))
    co_return "an INSERT that leaves the shard key \"" + t.column +
        "\" or a generated column to its default could not be rewritten with generated "
        "values: set them";
  co_return std::string();
}

awaitable<std::string> Session::insert_select(std::string& code) {
  // INSERT INTO <sharded table> SELECT ...: the SELECT runs where it routes (in the client's
  // transaction where that has a server), its rows go in as VALUES, and routing again puts
  // each row on its key's shard: one INSERT, atomic across shards like any other.
  code = sqlstate::kFeatureNotSupported;
  static const std::vector<int32_t> kNoTypes;
  std::string sql;
  std::vector<std::string> params;  // the Bind's values, as SQL literals
  bool binary = false;
  rewrite_statement(pending_, statements_,
                    [&](std::string_view text, const proto::Bind* b) -> std::optional<std::string> {
                      sql = text;
                      const auto& types = b ? statements_.types(b->statement) : kNoTypes;
                      for (std::size_t i = 0; b && i < b->params.size(); ++i) {
                        const int32_t type = i < types.size() ? types[i] : 0;
                        const auto& v = b->params[i];
                        std::optional<std::string> text;
                        if (v && b->format_of(i) == 1) {
                          // Binary (psycopg 3 sends numbers so): decoded by its declared type.
                          text = merge::binary_to_text(type, *v);
                          binary = binary || !text;
                        } else if (v) {
                          text = std::string(*v);
                        }
                        params.push_back(router::sql_literal(text, static_cast<uint32_t>(type)));
                      }
                      return std::nullopt;  // only read here
                    });
  if (binary)
    co_return "INSERT ... SELECT with a parameter bound in binary format of a type pgshard does "
              "not decode (or undeclared) is not supported yet: bind it as text";
  auto select = router::insert_select_sql(sql);
  if (select && !params.empty()) select = router::with_parameter_values(*select, params);
  if (!select) co_return "INSERT ... SELECT could not be read";
  const router::Route r = router::route_query(*select, hints_, config_, routing_context());
  if (const auto* e = std::get_if<router::Refuse>(&r.action)) {
    code = e->error.code;
    co_return e->error.message;
  }
  if (!router::runs_on_shards(r))
    co_return "the SELECT of an INSERT ... SELECT must be a query pgshard routes to shards";
  executor::Captured got(100000, 64u << 20);
  if (router::shards_of(r).size() > 1) {
    // Several shards: the execution and merge a client's read gets (ORDER BY, LIMIT,
    // aggregates, GROUP BY...), its answer kept.
    co_await executor::capture_read(*this, *this, r, *select, got);
  } else {
    got.error_message = co_await executor::run_on_shard(
        *this, router::shards_of(r).front(), *select,
        [&](std::string_view body) { got.add_row(body); },
        [&](std::string_view body) { got.describe(body); }, got.error_code);
  }
  if (!got.error_message.empty() || !got.error_code.empty()) {
    code = got.error_code.empty() ? std::string(sqlstate::kInternalError) : got.error_code;
    co_return got.error_message.empty() ? "the SELECT of an INSERT ... SELECT failed"
                                        : got.error_message;
  }
  if (got.too_big) {
    code = sqlstate::kProgramLimitExceeded;
    co_return "INSERT ... SELECT of more than " + std::to_string(got.max_rows) + " rows or " +
        std::to_string(got.max_bytes >> 20) + " MiB through pgshard is not supported";
  }
  auto rewritten = router::with_select_rows(sql, got.types, got.rows);
  if (!rewritten ||
      !rewrite_statement(pending_, statements_,
                         [&](std::string_view, const proto::Bind*) { return rewritten; }))
    co_return "INSERT ... SELECT could not be rewritten with its rows";
  co_return std::string();
}

awaitable<std::string> Session::put_unique_ids() {
  // pgshard.unique_id() calls become this instance's ids, put into the statement the client
  // sent; routing it again then places it by them.
  std::string err = "pgshard.unique_id() could not be put into the statement";
  const auto node = co_await executor::node_for_ids(*this, err);
  if (!node) co_return err;
  const bool ok =
      rewrite_statement(pending_, statements_, [&](std::string_view sql, const proto::Bind*) {
        return router::with_unique_ids(sql, [&](bool js_safe) {
          auto id = worker_.shared().ids.next(*node, js_safe);
          if (!id)
            err = "pgshard.unique_id_53() needs a node below 64 (this instance's is " +
                  std::to_string(*node) + ")";
          return id;
        });
      });
  co_return ok ? std::string() : err;
}

}  // namespace pgshard::session
