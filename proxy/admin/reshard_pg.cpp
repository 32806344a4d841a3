// libpq helpers of the `pgshard reshard` commands.
#include "proxy/admin/reshard_pg.hpp"

#include "proxy/runtime/maintenance.hpp"

namespace pgshard::admin {

namespace {

std::string trimmed(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

}  // namespace

PgResult pg_query(PGconn* c, const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> values;
  for (const auto& p : params) values.push_back(p.c_str());
  PGresult* r = PQexecParams(c, sql.c_str(), static_cast<int>(values.size()), nullptr,
                             values.data(), nullptr, nullptr, 0);
  PgResult out;
  const auto status = PQresultStatus(r);
  if (status == PGRES_TUPLES_OK) {
    for (int i = 0; i < PQntuples(r); ++i) {
      out.rows.emplace_back();
      for (int j = 0; j < PQnfields(r); ++j) out.rows.back().emplace_back(PQgetvalue(r, i, j));
    }
  } else if (status != PGRES_COMMAND_OK) {
    out.error = trimmed(r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    if (out.error.empty()) out.error = "statement failed";
  }
  PQclear(r);
  return out;
}

PgConnection pg_connect(const config::Config& cfg, const config::Shard& shard,
                        const std::string& application_name, std::string* error) {
  PgConnection c(PQconnectdb(runtime::maintenance_conninfo(cfg, shard, application_name).c_str()),
                 PQfinish);
  if (PQstatus(c.get()) != CONNECTION_OK) {
    if (error) *error = trimmed(PQerrorMessage(c.get()));
    c.reset();
    return c;
  }
  PQsetNoticeProcessor(
      c.get(), [](void*, const char*) {}, nullptr);
  return c;
}

}  // namespace pgshard::admin
