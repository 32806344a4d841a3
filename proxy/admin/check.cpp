#include "proxy/admin/check.hpp"

#include <libpq-fe.h>

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "proxy/runtime/maintenance.hpp"
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

// One shard's sequence behind a generated column of a sharded table.
struct Sequence {
  std::string shard;
  std::string name;  // schema-qualified
  long long start = 1, increment = 1, min = 1, max = 0;
  std::optional<long long> last;  // nullopt: never used
  // The values it has handed out so far, as a closed range (empty when unused).
  std::optional<std::pair<long long, long long>> used() const {
    if (!last) return std::nullopt;
    return std::make_pair(std::min(start, *last), std::max(start, *last));
  }
};

// Whether two sequences can ever hand out the same value: their bounds overlap and, with
// equal steps, they start in the same residue class.
bool can_collide(const Sequence& a, const Sequence& b) {
  if (a.max < b.min || b.max < a.min) return false;
  if (a.increment == b.increment && a.increment != 0 && (a.start - b.start) % a.increment != 0)
    return false;
  return true;
}

// Values the home sequence (the first shard's, which pgshard draws from) may still hand out
// that another shard's sequence has already handed out.
bool home_reaches(const Sequence& home, const Sequence& other) {
  const auto used = other.used();
  if (!used || !can_collide(home, other)) return false;
  const long long next = home.last ? *home.last : home.start - home.increment;
  return home.increment > 0 ? used->second > next : used->first < next;
}

// Generated columns (sequences) of sharded tables: through pgshard their values come from
// the first shard's sequence, unique everywhere; each other shard keeps a copy that writes
// bypassing pgshard use. Reports copies that can collide, and values already overlapping.
int check_sequences(const config::Config& cfg,
                    const std::map<std::string, std::vector<Sequence>>& found, std::ostream& out) {
  int problems = 0;
  constexpr long long kStep = 100;  // residue classes: room for 100 shards
  for (const auto& [column, seqs] : found) {
    if (seqs.size() < 2 || seqs.front().shard != cfg.shards.front().name) continue;
    const Sequence& home = seqs.front();
    std::string behind, colliding;
    long long top = home.last.value_or(home.start);
    for (std::size_t i = 1; i < seqs.size(); ++i) {
      const auto& s = seqs[i];
      if (s.last) top = std::max(top, *s.last);
      if (home_reaches(home, s))
        behind += (behind.empty() ? "" : ", ") + s.shard + "'s " + s.name + " is at " +
                  std::to_string(*s.last);
      if (can_collide(home, s)) colliding += (colliding.empty() ? "" : ", ") + s.shard;
    }
    if (!behind.empty()) {
      out << "ERROR sharded table column " << column << ": values already overlap: " << home.shard
          << "'s sequence " << home.name << " (the one pgshard draws from) is at "
          << (home.last ? std::to_string(*home.last) : "its start") << ", " << behind
          << "; rows with equal values may exist on several shards. Fix: on " << home.shard
          << ": SELECT setval('" << home.name << "', " << top
          << "); renumber rows whose values repeat across shards\n";
      ++problems;
    }
    if (colliding.empty()) continue;
    const long long base = (top / kStep + 1) * kStep;
    out << "NOTE sharded table column " << column << ": the sequence " << home.name << " on "
        << colliding << " can hand out the same values as " << home.shard
        << "'s. Through pgshard values come from " << home.shard
        << "'s sequence, unique across shards; writes that bypass pgshard use each shard's "
           "own sequence. To keep those unique too: ";
    for (std::size_t i = 0; i < seqs.size(); ++i)
      out << (i ? "; " : "") << "on " << seqs[i].shard << ": ALTER SEQUENCE " << seqs[i].name
          << " INCREMENT BY " << kStep << " START WITH " << base + static_cast<long long>(i)
          << " RESTART WITH " << base + static_cast<long long>(i);
    out << "\n";
  }
  return problems;
}

std::string describe(const Columns& c) {
  std::string out;
  for (const auto& [n, t] : c) out += (out.empty() ? "" : ", ") + n + " " + t;
  return out;
}

using Rows = std::vector<std::vector<std::string>>;
using Connection = std::unique_ptr<PGconn, void (*)(PGconn*)>;

// The rows of `sql` with one text parameter (none when `param` is empty); none on error.
Rows ask(PGconn* c, const char* sql, const std::string& param) {
  const char* params[] = {param.c_str()};
  PGresult* r = PQexecParams(c, sql, param.empty() ? 0 : 1, nullptr,
                             param.empty() ? nullptr : params, nullptr, nullptr, 0);
  Rows rows;
  if (PQresultStatus(r) == PGRES_TUPLES_OK)
    for (int i = 0; i < PQntuples(r); ++i) {
      rows.emplace_back();
      for (int j = 0; j < PQnfields(r); ++j) rows.back().emplace_back(PQgetvalue(r, i, j));
    }
  PQclear(r);
  return rows;
}

constexpr const char* kColumnsSql =
    "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
    "where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped "
    "order by a.attnum";

// Sequences behind each sharded table's columns: owned by a column (serial, identity)
// or named by its default (nextval('...')).
constexpr const char* kSequencesSql =
    "with cols as (select a.attnum, a.attname from pg_attribute a where a.attrelid = "
    "to_regclass($1) and a.attnum > 0 and not a.attisdropped), seqs as ("
    "select c.attname, d.objid as seq from cols c join pg_depend d on d.classid = "
    "'pg_class'::regclass and d.refclassid = 'pg_class'::regclass and d.refobjid = "
    "to_regclass($1) and d.refobjsubid = c.attnum and d.deptype in ('a', 'i') "
    "union select c.attname, d.refobjid from cols c join pg_attrdef ad on ad.adrelid = "
    "to_regclass($1) and ad.adnum = c.attnum join pg_depend d on d.classid = "
    "'pg_attrdef'::regclass and d.objid = ad.oid and d.refclassid = 'pg_class'::regclass) "
    "select s.attname, quote_ident(n.nspname) || '.' || quote_ident(k.relname), "
    "q.seqstart, q.seqincrement, q.seqmin, q.seqmax, "
    "coalesce(pg_sequence_last_value(k.oid)::text, '') "
    "from seqs s join pg_class k on k.oid = s.seq and k.relkind = 'S' "
    "join pg_namespace n on n.oid = k.relnamespace join pg_sequence q on q.seqrelid = k.oid "
    "order by 1, 2";

// A host's system identifier (a streaming replica has its primary's), whether it is in
// recovery, its timeline when out of it (from the WAL file it writes, as the health check
// reads it), and in recovery its WAL receiver: "<status> <timeline received>", "?" without
// the privilege to see it (pg_read_all_stats), none when no receiver runs.
constexpr const char* kHostSql =
    "select system_identifier::text, pg_is_in_recovery(), case when pg_is_in_recovery() "
    "then '' else ('x' || substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8))"
    "::bit(32)::int::text end, case when pg_is_in_recovery() then (select case when status "
    "is null then '?' else status || ' ' || received_tli end from pg_stat_wal_receiver) "
    "end from pg_control_system()";

// libpq's last error on `c`, without its trailing newlines.
std::string message(PGconn* c) {
  std::string err = PQerrorMessage(c);
  while (!err.empty() && err.back() == '\n') err.pop_back();
  return err;
}

// check_live over the shards one by one: each problem one ERROR line.
class LiveCheck {
 public:
  LiveCheck(const config::Config& cfg, std::ostream& out) : cfg_(cfg), out_(out) {}

  int run() {
    for (const auto& shard : cfg_.shards) check_shard(shard);
    problems_ += check_sequences(cfg_, sequences_, out_);
    if (problems_ == 0)
      out_ << "OK: " << cfg_.shards.size() << " shards answer; " << cfg_.sharded_tables.size()
           << " sharded tables with their keys and the same columns on every shard"
           << (cfg_.two_phase_commit ? "; two-phase commit possible" : "")
           << (replicas_ ? "; every replica (" + std::to_string(replicas_) +
                               ") replicates its shard's primary"
                         : "")
           << "\n";
    else
      out_ << problems_ << " problem" << (problems_ == 1 ? "" : "s") << " found\n";
    return problems_;
  }

 private:
  void problem(const std::string& line) {
    out_ << "ERROR " << line << "\n";
    ++problems_;
  }

  void check_shard(const config::Shard& shard) {
    // A shard with several hosts is checked on the one out of recovery, wherever the map
    // lists it (a failover moves the primary); the others must replicate it.
    int primary = 0;
    if (shard.host_count() > 1) {
      primary = survey_hosts(shard);
      if (primary < 0) return;
    }
    const auto& url = shard.host(primary);
    const std::string at = "shard " + shard.name + " (" + url.text() + ")";
    Connection c(
        PQconnectdb(runtime::maintenance_conninfo(cfg_, shard, url, "pgshard-check").c_str()),
        PQfinish);
    if (PQstatus(c.get()) != CONNECTION_OK) {
      problem(at + ": cannot connect: " + message(c.get()));
      return;
    }
    if (cfg_.two_phase_commit) {
      auto rows = ask(c.get(), "select current_setting('max_prepared_transactions')::int", "");
      if (rows.empty() || rows[0][0] == "0")
        problem(at +
                ": max_prepared_transactions is 0; two_phase_commit needs it above 0 "
                "(or set two_phase_commit: false)");
    }
    for (const auto& t : cfg_.sharded_tables) check_sharded_table(c.get(), at, shard, t);
    for (const auto& t : cfg_.sharded_tables) collect_sequences(c.get(), shard, t);
    for (const auto& ref : cfg_.reference_tables)
      if (ask(c.get(), kColumnsSql, ref).empty())
        problem(at + ": reference table " + ref + " does not exist");
  }

  // Every host of the shard: exactly one out of recovery (the primary, returned; -1 when
  // none or several), the others in recovery with its system identifier, streaming on its
  // timeline (a replica left on an old primary's timeline, or not streaming, reads the past).
  int survey_hosts(const config::Shard& shard) {
    struct Seen {
      std::string at, system, recovery, timeline, receiver;
    };
    std::vector<std::optional<Seen>> seen;
    std::vector<int> primaries;
    for (int i = 0; i < shard.host_count(); ++i) {
      const auto& url = shard.host(i);
      Seen h{"shard " + shard.name + (i ? " replica (" : " (") + url.text() + ")", {}, {}, {}, {}};
      Connection c(
          PQconnectdb(runtime::maintenance_conninfo(cfg_, shard, url, "pgshard-check").c_str()),
          PQfinish);
      const bool connected = PQstatus(c.get()) == CONNECTION_OK;
      const auto rows = connected ? ask(c.get(), kHostSql, "") : Rows();
      if (rows.empty()) {
        problem(h.at + (connected ? ": cannot read its role: " : ": cannot connect: ") +
                message(c.get()));
        seen.emplace_back();
        continue;
      }
      h.system = rows[0][0];
      h.recovery = rows[0][1];
      h.timeline = rows[0][2];
      h.receiver = rows[0][3];
      if (h.recovery != "t") primaries.push_back(i);
      seen.emplace_back(std::move(h));
    }
    // As pgshard decides (runtime::choose_writer): of several out of recovery, one on a
    // higher timeline than every other takes the writes; the others are old primaries.
    if (primaries.size() > 1) {
      auto host = [&](int i) -> const Seen& { return *seen[static_cast<std::size_t>(i)]; };
      auto tl = [&](int i) { return host(i).timeline.empty() ? 0L : std::stol(host(i).timeline); };
      std::stable_sort(primaries.begin(), primaries.end(),
                       [&](int a, int b) { return tl(a) > tl(b); });
      if (tl(primaries[0]) > tl(primaries[1])) {
        const Seen& newest = host(primaries[0]);
        for (std::size_t k = 1; k < primaries.size(); ++k)
          problem(host(primaries[k]).at + ": out of recovery on timeline " +
                  host(primaries[k]).timeline + ", older than " + newest.at + "'s " +
                  newest.timeline +
                  " (an old primary: make it a standby of the new one, or remove it)");
        primaries.resize(1);
      }
    }
    if (primaries.size() != 1) {
      std::string names;
      for (const int i : primaries)
        names += (names.empty() ? "" : " and ") + seen[static_cast<std::size_t>(i)]->at;
      problem("shard " + shard.name +
              (primaries.empty() ? ": no host is out of recovery (no primary answers)"
                                 : ": more than one host is out of recovery, none on a higher "
                                   "timeline: " +
                                       names + " (pgshard refuses the shard's writes)"));
      return -1;
    }
    const auto& p = *seen[static_cast<std::size_t>(primaries[0])];
    for (const auto& h : seen) {
      if (!h || &*h == &p) continue;
      if (h->system != p.system)
        problem(h->at + ": not a replica of the shard's primary: its system identifier is " +
                h->system + ", the primary's " + p.system + " (" + p.at +
                "; a server of another cluster: fix its URL in the map)");
      else if (h->receiver.empty())
        problem(h->at + ": in recovery but not streaming from any primary (the primary is " + p.at +
                ")");
      else if (h->receiver != "?" && h->receiver != "streaming " + p.timeline)
        problem(h->at + ": its WAL receiver is '" + h->receiver + "', not streaming timeline " +
                p.timeline + " of the primary " + p.at +
                " (it follows an old primary: reads from it would go back in time)");
      else
        ++replicas_;
    }
    return primaries[0];
  }

  // The table exists, has its key column of the map's type, and the first shard's columns.
  void check_sharded_table(PGconn* c, const std::string& at, const config::Shard& shard,
                           const config::ShardedTable& t) {
    const auto name = t.qualified_name();
    Columns cols;
    for (auto& row : ask(c, kColumnsSql, name)) cols.emplace_back(row[0], row[1]);
    if (cols.empty()) {
      problem(at + ": sharded table " + name + " does not exist");
      return;
    }
    const std::string* key_type = nullptr;
    for (const auto& [n, type] : cols)
      if (n == t.column) key_type = &type;
    if (!key_type)
      problem(at + ": sharded table " + name + " has no key column " + t.column);
    else if (!key_type_matches(t.type, *key_type))
      problem(at + ": sharded table " + name + " key column " + t.column + " is " + *key_type +
              ", the map says " + config::to_string(t.type));
    auto [it, fresh] = first_seen_.emplace(name, std::make_pair(shard.name, cols));
    if (!fresh && it->second.second != cols)
      problem(at + ": sharded table " + name + " columns differ from shard " + it->second.first +
              ": (" + describe(cols) + ") vs (" + describe(it->second.second) + ")");
  }

  void collect_sequences(PGconn* c, const config::Shard& shard, const config::ShardedTable& t) {
    for (auto& row : ask(c, kSequencesSql, t.qualified_name())) {
      Sequence seq;
      seq.shard = shard.name;
      seq.name = row[1];
      try {
        seq.start = std::stoll(row[2]);
        seq.increment = std::stoll(row[3]);
        seq.min = std::stoll(row[4]);
        seq.max = std::stoll(row[5]);
        if (!row[6].empty()) seq.last = std::stoll(row[6]);
      } catch (const std::exception&) {
        continue;
      }
      sequences_[t.qualified_name() + "." + row[0]].push_back(std::move(seq));
    }
  }

  const config::Config& cfg_;
  std::ostream& out_;
  int problems_ = 0;
  int replicas_ = 0;  // replicas found replicating their shard's primary
  // Per table: the first shard's columns, to compare the others with.
  std::map<std::string, std::pair<std::string, Columns>> first_seen_;
  std::map<std::string, std::vector<Sequence>> sequences_;  // table.column -> shards' copies
};

}  // namespace

int check_live(const config::Config& cfg, std::ostream& out) {
  return LiveCheck(cfg, out).run();
}

}  // namespace pgshard::admin
