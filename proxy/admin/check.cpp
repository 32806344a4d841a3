#include "proxy/admin/check.hpp"

#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "proxy/txn/recovery.hpp"

namespace pgshard::admin {

namespace {

using Columns = std::vector<std::pair<std::string, std::string>>;  // (name, type), in order

// The types a key of `t` may have on the shards (format_type's spelling).
bool key_type_matches(config::KeyType t, const std::string& type) {
  switch (t) {
    case config::KeyType::kInt2:
      return type == "smallint";
    case config::KeyType::kInt4:
      return type == "integer";
    case config::KeyType::kInt8:
      return type == "bigint";
    case config::KeyType::kText:
      return type == "text";
    case config::KeyType::kVarchar:
      return type.rfind("character varying", 0) == 0;
    case config::KeyType::kUuid:
      return type == "uuid";
  }
  return false;
}

std::string describe(const Columns& c) {
  std::string out;
  for (const auto& [n, t] : c) out += (out.empty() ? "" : ", ") + n + " " + t;
  return out;
}

}  // namespace

int check_live(const config::Config& cfg, std::ostream& out) {
  int problems = 0;
  auto problem = [&](const std::string& line) {
    out << "ERROR " << line << "\n";
    ++problems;
  };
  // Per table: the first shard's columns, to compare the others with.
  std::map<std::string, std::pair<std::string, Columns>> first_seen;
  for (const auto& shard : cfg.shards) {
    const std::string at = "shard " + shard.name + " (" + shard.primary.text() + ")";
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(
        PQconnectdb(txn::maintenance_conninfo(cfg, shard, "pgshard-check").c_str()), PQfinish);
    if (PQstatus(c.get()) != CONNECTION_OK) {
      std::string err = PQerrorMessage(c.get());
      while (!err.empty() && err.back() == '\n') err.pop_back();
      problem(at + ": cannot connect: " + err);
      continue;
    }
    auto ask = [&](const char* sql,
                   const std::string& param) -> std::vector<std::vector<std::string>> {
      const char* params[] = {param.c_str()};
      PGresult* r = PQexecParams(c.get(), sql, param.empty() ? 0 : 1, nullptr,
                                 param.empty() ? nullptr : params, nullptr, nullptr, 0);
      std::vector<std::vector<std::string>> rows;
      if (PQresultStatus(r) == PGRES_TUPLES_OK)
        for (int i = 0; i < PQntuples(r); ++i) {
          rows.emplace_back();
          for (int j = 0; j < PQnfields(r); ++j) rows.back().emplace_back(PQgetvalue(r, i, j));
        }
      PQclear(r);
      return rows;
    };
    if (cfg.two_phase_commit) {
      auto rows = ask("select current_setting('max_prepared_transactions')::int", "");
      if (rows.empty() || rows[0][0] == "0")
        problem(at +
                ": max_prepared_transactions is 0; two_phase_commit needs it above 0 "
                "(or set two_phase_commit: false)");
    }
    const char* columns_sql =
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
        "where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped "
        "order by a.attnum";
    for (const auto& t : cfg.sharded_tables) {
      const auto name = t.qualified_name();
      Columns cols;
      for (auto& row : ask(columns_sql, name)) cols.emplace_back(row[0], row[1]);
      if (cols.empty()) {
        problem(at + ": sharded table " + name + " does not exist");
        continue;
      }
      const std::string* key_type = nullptr;
      for (const auto& [n, type] : cols)
        if (n == t.column) key_type = &type;
      if (!key_type)
        problem(at + ": sharded table " + name + " has no key column " + t.column);
      else if (!key_type_matches(t.type, *key_type))
        problem(at + ": sharded table " + name + " key column " + t.column + " is " + *key_type +
                ", the map says " + config::to_string(t.type));
      auto [it, fresh] = first_seen.emplace(name, std::make_pair(shard.name, cols));
      if (!fresh && it->second.second != cols)
        problem(at + ": sharded table " + name + " columns differ from shard " + it->second.first +
                ": (" + describe(cols) + ") vs (" + describe(it->second.second) + ")");
    }
    for (const auto& ref : cfg.reference_tables)
      if (ask(columns_sql, ref).empty())
        problem(at + ": reference table " + ref + " does not exist");
  }
  if (problems == 0)
    out << "OK: " << cfg.shards.size() << " shards answer; " << cfg.sharded_tables.size()
        << " sharded tables with their keys and the same columns on every shard"
        << (cfg.two_phase_commit ? "; two-phase commit possible" : "") << "\n";
  else
    out << problems << " problem" << (problems == 1 ? "" : "s") << " found\n";
  return problems;
}

}  // namespace pgshard::admin
