// Collations the merge of rows from several shards orders text by: the shards' database
// collation, read once per worker, and the columns with other collations, per catalog generation.
#include "protocol/messages.hpp"
#include "proxy/executor/executor.hpp"
#include "proxy/executor/fan_out_parts.hpp"
#include "proxy/pool/server_fate.hpp"
#include "proxy/runtime/worker.hpp"

namespace pgshard::executor {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

awaitable<std::shared_ptr<const merge::ColumnCollations>> column_collations(
    Client& c, int shard, pool::ServerConn& conn, const merge::Collation& database) {
  const uint64_t generation = c.worker().shared().catalog_generation.load();
  if (auto known = c.worker().column_collations(shard, generation)) co_return known;
  // Table columns (not the catalogs') whose collation is not the database's ("name"
  // columns are always "C").
  auto read = std::make_shared<merge::ColumnCollations>();
  const bool ok = co_await conn.run_own(
      "SELECT a.attrelid::pg_catalog.int8, a.attnum, c.collname, c.collprovider, "
      "c.collisdeterministic, c.collcollate, r.relname FROM pg_catalog.pg_attribute a "
      "JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation "
      "JOIN pg_catalog.pg_class r ON r.oid = a.attrelid "
      "JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace "
      "WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attcollation <> 100 "
      "AND a.atttypid <> 'pg_catalog.name'::pg_catalog.regtype "
      "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
      "AND n.nspname NOT LIKE 'pg\\_toast%'",
      c.config().listen.max_message_size, [&](std::string_view body) {
        auto row = proto::DataRow::parse(body);
        if (!row || row->values.size() < 7 || !row->values[0] || !row->values[1]) return;
        auto text = [&](std::size_t i) {
          return row->values[i] ? std::string(*row->values[i]) : std::string();
        };
        read->relations.emplace(text(6));
        auto e = merge::collation_entry(text(2), text(3), text(4) == "t", text(5), database);
        if (!e) return;  // orders as the database's collation does
        read->columns[{static_cast<uint32_t>(std::stoll(text(0))),
                       static_cast<int16_t>(std::stoi(text(1)))}] = std::move(*e);
      });
  if (!ok) {
    pool::report(conn, pool::ServerFailure::kIoError);
    co_return nullptr;
  }
  c.worker().set_column_collations(shard, generation, read);
  co_return read;
}

awaitable<const merge::Collation*> shard_collation(Client& c, pool::ServerConn& conn,
                                                   std::string* error) {
  if (const auto* known = c.worker().collation()) co_return known;
  std::string name;
  const bool ok = co_await conn.run_own(
      "SELECT datcollate FROM pg_database WHERE datname = current_database()",
      c.config().listen.max_message_size, [&](std::string_view body) {
        if (auto row = proto::DataRow::parse(body); row && !row->values.empty() && row->values[0])
          name = std::string(*row->values[0]);
      });
  if (!ok || name.empty()) {
    pool::report(conn, pool::ServerFailure::kIoError);
    *error = "could not read the shard's collation";
    co_return nullptr;
  }
  const auto* opened = c.worker().set_collation(name);
  if (!opened)
    *error = "the shards' collation \"" + name + "\" is not available on the pgshard host";
  co_return opened;
}

}  // namespace pgshard::executor
