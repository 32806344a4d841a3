// The route the parser's analysis gives a statement: the target it names (any shard, every
// shard, the unsharded policy...), or the shards its key values are placed on, with the
// lookups (directory, catalog, generated keys) a route may need first and the INSERT split
// into one statement per shard.
#include <algorithm>
#include <boost/container/flat_set.hpp>
#include <boost/container/small_vector.hpp>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <optional>

#include "protocol/codec.hpp"
#include "proxy/router/hashing.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/router/router_internal.hpp"

namespace pgshard::router::detail {

namespace {

// The shards a statement's keys name, in order, each once (no allocation for a few).
using ShardSet =
    boost::container::flat_set<int, std::less<int>, boost::container::small_vector<int, 8>>;

std::string shard_list(const ShardSet& shards, const config::Config& cfg) {
  std::string out;
  for (int i : shards)
    out += (out.empty() ? "" : ", ") + cfg.shards[static_cast<std::size_t>(i)].name;
  return out;
}

// The statement on several shards: a schema change runs shard by shard, anything else fans
// out, its replies combined as the analysis says.
void spread(Route& r, const Analysis& a, std::vector<int> shards) {
  if (r.ddl) {
    r.action = Ddl{std::move(shards), a.replicated};
    return;
  }
  auto& f = r.action.emplace<FanOut>();
  f.shards = std::move(shards);
  f.merge = a.merge;
  f.merge_blocker = a.merge_blocker;
  f.concat_safe = a.concat_safe;
  f.replicated = a.replicated;
  f.copy_out_header = a.copy_out_header;
}

// Whether every shard holds a copy of what a statement on several shards touches.
bool replicated(const Route& r) {
  if (const auto* f = std::get_if<FanOut>(&r.action)) return f->replicated;
  if (const auto* d = std::get_if<Ddl>(&r.action)) return d->replicated;
  return false;
}

std::vector<int> all_shards(const config::Config& cfg) {
  std::vector<int> shards(cfg.shards.size());
  for (std::size_t i = 0; i < shards.size(); ++i) shards[i] = static_cast<int>(i);
  return shards;
}

// Every shard (with one shard, a plain forward there).
void every_shard(Route& r, const Analysis& a, const config::Config& cfg) {
  if (cfg.shards.size() > 1)
    spread(r, a, all_shards(cfg));
  else
    r.action = Forward{0};
}

bool is_integer(config::KeyType t) {
  return t == config::KeyType::kInt2 || t == config::KeyType::kInt4 || t == config::KeyType::kInt8;
}

bool param_is_null(const protocol::Bind& bind, int n) {
  return n >= 1 && static_cast<std::size_t>(n) <= bind.params.size() &&
         !bind.params[static_cast<std::size_t>(n - 1)];
}

// The type the statement's Parse declared for parameter `n` (0: unspecified or unknown).
int32_t declared_type(const Context& ctx, int n) {
  if (!ctx.param_types || n < 1 || static_cast<std::size_t>(n) > ctx.param_types->size()) return 0;
  return (*ctx.param_types)[static_cast<std::size_t>(n - 1)];
}

Route refuse(std::string message, std::string hint = {}) {
  Route r;
  r.action = Refuse{protocol::error(protocol::sqlstate::kFeatureNotSupported, std::move(message),
                                    {}, std::move(hint))};
  return r;
}

// A write whose key's bytes are not those the shards hash (key_bytes_as_stored).
Route foreign_key_refusal(std::string_view client_encoding) {
  return refuse(foreign_key_message(client_encoding), "use client_encoding UTF8");
}

// The generated columns (other than the key) an INSERT of `rows` VALUES rows leaves to the
// database, with how many rows do: left out of the column list (every row), DEFAULT in
// their place, or (without a column list) rows that stop before the column.
std::vector<GenerateKeys::Column> columns_to_generate(const Analysis& a,
                                                      const std::vector<GeneratedColumn>& generated,
                                                      std::size_t rows) {
  std::vector<GenerateKeys::Column> out;
  for (const auto& g : generated) {
    int count = 0;
    if (!a.positional.empty()) {
      const auto at = static_cast<std::size_t>(g.position);
      for (const auto& row : a.positional)
        count += at >= row.size() || (row[at] && row[at]->kind == KeyValue::Kind::kGenerate);
    } else {
      const auto named = std::find(a.insert_columns.begin(), a.insert_columns.end(), g.name);
      count = named == a.insert_columns.end()
                  ? static_cast<int>(rows)
                  : a.insert_defaults[static_cast<std::size_t>(named - a.insert_columns.begin())];
    }
    if (count > 0) out.push_back({g, count, !a.positional.empty()});
  }
  return out;
}

// A read of tables every shard holds alike: the client's shard, else the next in turn.
int reference_read_shard(const config::Config& cfg, const Context& ctx) {
  const int n = static_cast<int>(cfg.shards.size());
  if (ctx.attached) return *ctx.attached;
  return ctx.round_robin ? static_cast<int>((*ctx.round_robin)++ % n) : 0;
}

// What the route takes from the analysis whatever the target: what the statement is and
// what it does to the session.
void take_statement(Route& r, const Analysis& a, const config::Config& cfg, const Context& ctx) {
  r.write = a.write || a.ddl;
  take_replica_safety(r, a, cfg);
  r.ddl = a.ddl;
  r.takes_snapshot = a.takes_snapshot;
  r.transaction_modes = a.transaction_modes;
  if (ctx.reasons) r.reason = a.reason;
  take_session_effects(r, a);
}

// Tables outside the map, by the `unsharded` policy.
void route_unsharded(const Analysis& a, const config::Config& cfg, const Context& ctx, Route& r) {
  switch (cfg.unsharded.policy) {
    case config::Unsharded::Policy::kReject:
      r = refuse("statement uses tables that are not in pgshard's shard map (unsharded: reject)",
                 "add the tables to sharded_tables or reference_tables, set unsharded, or use a "
                 "shard hint");
      return;
    case config::Unsharded::Policy::kShard:
      r.action = Forward{cfg.unsharded.shard};
      if (ctx.reasons)
        r.reason = "unsharded table: shard " +
                   cfg.shards[static_cast<std::size_t>(cfg.unsharded.shard)].name;
      return;
    case config::Unsharded::Policy::kAll:
      // Every shard keeps a copy of the table, as of a reference table: writes go to
      // all (one shard's reply stands), reads to one.
      if (!r.write) {
        r.action = Forward{reference_read_shard(cfg, ctx)};
        if (ctx.reasons) r.reason = "unsharded table read (unsharded: all): one shard";
        return;
      }
      if (ctx.reasons) r.reason = "unsharded table write (unsharded: all): every shard";
      if (cfg.shards.size() == 1) {
        r.action = Forward{0};
      } else if (a.copy_in) {
        r.action = CopyIn{all_shards(cfg), *a.copy_in, -1};
      } else {
        spread(r, a, all_shards(cfg));
        if (auto* f = std::get_if<FanOut>(&r.action)) f->replicated = true;
        if (auto* d = std::get_if<Ddl>(&r.action)) d->replicated = true;
      }
      return;
  }
}

// Every target but kKeys: where it sends the statement.
void route_target(const Analysis& a, const config::Config& cfg, const Context& ctx, Route& r) {
  const int fallback = ctx.attached.value_or(0);
  switch (a.target) {
    case Analysis::Target::kUnparsed:
      // PostgreSQL reports its own syntax error; send it where unsharded statements go.
      r.action =
          Forward{cfg.unsharded.policy == config::Unsharded::Policy::kShard ? cfg.unsharded.shard
                                                                            : fallback};
      return;
    case Analysis::Target::kSequenceHome:
      r.action = Forward{0};
      return;
    case Analysis::Target::kInsertSelect:
      // Run: the session runs the SELECT and puts its rows in, then routes again. Only
      // described: any shard describes it alike.
      if (ctx.describe_only) {
        r.action = Forward{fallback};
        return;
      }
      r.action = InsertSelect{};
      return;
    case Analysis::Target::kAnyShard:
      r.action = Forward{fallback};
      return;
    case Analysis::Target::kReferenceRead:
      r.action = Forward{reference_read_shard(cfg, ctx)};
      return;
    case Analysis::Target::kAllShards:
      every_shard(r, a, cfg);
      return;
    case Analysis::Target::kError:
      r = refuse(a.error, a.hint);
      return;
    case Analysis::Target::kUnsharded:
      route_unsharded(a, cfg, ctx, r);
      return;
    case Analysis::Target::kCopyIn:
      if (cfg.shards.size() == 1) {
        r.action = Forward{0};  // one shard: plain forwarding
        return;
      }
      r.action = CopyIn{all_shards(cfg), *a.copy_in, a.copy_in->replicate ? -1 : a.table};
      std::get<CopyIn>(r.action).split.client_encoding = ctx.client_encoding;
      return;
    case Analysis::Target::kKeys:
      return;
  }
}

// A lookup of the table's columns in the catalog before the statement can be routed.
void look_up_columns(const Analysis& a, Route& r) {
  r = Route{};
  r.action = Lookup{{}, {a.table}};
}

// INSERT without a column list: each row's key sits at the key column's place in the
// table's column order, which the session reads from the catalog first. False when the
// route is settled without the keys (a lookup, a refusal, or no such table).
bool positional_keys(const Analysis& a, const config::ShardedTable& table, const Context& ctx,
                     Route& r, std::vector<KeyValue>& keys) {
  const auto position =
      ctx.columns ? ctx.columns->key_position(table.qualified_name()) : std::nullopt;
  if (!position) {
    look_up_columns(a, r);
    return false;
  }
  if (*position < 0) {
    // No such table (or column) on the shards: PostgreSQL says which.
    r.action = Forward{ctx.attached.value_or(0)};
    return false;
  }
  for (const auto& row : a.positional) {
    const auto at = static_cast<std::size_t>(*position);
    if (at >= row.size()) {
      r = refuse("INSERT into sharded table \"" + table.table + "\" must set its shard key \"" +
                     table.column + "\" (column " + std::to_string(at + 1) +
                     " of the table; this row has " + std::to_string(row.size()) + " values)",
                 "give every row a value for " + table.column);
      return false;
    }
    if (!row[at]) {
      r = refuse("the shard key of an INSERT must be a constant or a parameter",
                 "compute the key in the application");
      return false;
    }
    keys.push_back(*row[at]);
  }
  return true;
}

// Rows that leave the key, or another generated column, to the column's default: the
// session gets one generated value for each from the sequence's home, puts them in the
// statement and routes it again (a statement only described runs nowhere: any shard
// describes it). True when the route is such a lookup (or the catalog's first).
bool generates_values(const Analysis& a, const std::vector<KeyValue>& keys,
                      const config::ShardedTable& table, const Context& ctx, Route& r) {
  const auto generate = std::count_if(keys.begin(), keys.end(), [](const KeyValue& k) {
    return k.kind == KeyValue::Kind::kGenerate;
  });
  std::vector<GenerateKeys::Column> columns;
  // (A Query string of several statements is sent as it is: its INSERT is not rewritten.)
  if (a.insert && a.statements == 1 && !ctx.describe_only && ctx.columns && !keys.empty()) {
    const auto* generated = ctx.columns->generated(table.qualified_name());
    if (!generated) {
      look_up_columns(a, r);
      return true;
    }
    columns = columns_to_generate(a, *generated, keys.size());
  }
  if (!generate && columns.empty()) return false;
  if (ctx.describe_only) {
    r.action = Forward{ctx.attached.value_or(0)};
    return true;
  }
  r = Route{};
  r.action = GenerateKeys{a.table, static_cast<int>(generate), std::move(columns)};
  return true;
}

// Where a statement's key values put its rows: each key read from its literal or from the
// request's Bind, and placed by the table's sharding function.
struct KeyPlacement {
  KeyPlacement(const config::ShardedTable& t, int index, const config::Config& cfg,
               const Context& context)
      : table(t), table_index(index), n(static_cast<int>(cfg.shards.size())), ctx(context) {}

  void read(const std::vector<KeyValue>& keys);

  const config::ShardedTable& table;
  const int table_index;
  const int n;  // shards
  const Context& ctx;
  ShardSet shards;
  bool unknown = false;  // a parameter we do not have (Describe without Bind)
  std::string placement_error;
  // INSERT: the shard of each VALUES row (no allocation for a few).
  boost::container::small_vector<int, 8> row_shard;
  std::vector<std::pair<int, std::string>> lookups;
  std::string keys_text;
  std::string buckets_text;  // the keys' buckets (tables with buckets:), for EXPLAIN (ROUTE)
  int undecodable = 0;       // the parameter number of a key we could not read
  // An integer key written as a number that is not integral (3.2, 2.5e0): PostgreSQL
  // compares it as numeric (no row) or, cast to the key's type, rounds it; the text alone
  // does not say which row it finds.
  std::string inexact;
  // A key whose bytes in the client's encoding are not those the shards hash (non-ASCII
  // text in LATIN1...): its shard is not known.
  bool foreign_bytes = false;
  // Each key's text, literal or a Bind parameter's value, in row order (a split INSERT).
  std::vector<std::string> key_texts;

 private:
  void add(std::string_view text);
  void add_known(const std::string& text);
};

namespace {

// A number as PostgreSQL reads a numeric constant: [sign] digits [. digits] [e [sign] digits].
bool is_number(std::string_view t) {
  std::size_t i = 0;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
  std::size_t digits = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i, ++digits;
  if (i < t.size() && t[i] == '.') {
    ++i;
    while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i, ++digits;
  }
  if (digits == 0) return false;
  if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
    ++i;
    if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
    std::size_t exp = 0;
    while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i, ++exp;
    if (exp == 0) return false;
  }
  return i == t.size();
}

// The integer a number's text is equal to (42.0, 4.2e1, 420e-1), if it is one that fits
// in 64 bits; nullopt for anything else.
std::optional<std::string> integral_number(std::string_view t) {
  if (!is_number(t) || t.size() > 64) return std::nullopt;
  const std::string text(t);
  char* end = nullptr;
  errno = 0;
  const long double v = std::strtold(text.c_str(), &end);
  if (errno != 0 || end != text.c_str() + text.size()) return std::nullopt;
  if (v != std::floor(v) || v < -9.2e18L || v > 9.2e18L) return std::nullopt;
  return std::to_string(static_cast<long long>(v));
}

}  // namespace

void KeyPlacement::add(std::string_view text) {
  if (!key_bytes_as_stored(ctx.client_encoding, text)) {
    foreign_bytes = true;
    row_shard.push_back(-1);
    return;
  }
  auto p = place_key(table, text, n, ctx.directory, table_index);
  if (p.needs_lookup) {
    lookups.emplace_back(table_index, config::canonical_key(table.type, text));
    return;
  }
  if (!p.shard && p.error.empty() && is_integer(table.type)) {
    // 42.0 and 4.2e1 compare equal to the integer 42 in PostgreSQL.
    if (const auto v = integral_number(text)) {
      p = place_key(table, *v, n, ctx.directory, table_index);
    } else if (is_number(text)) {
      inexact = std::string(text);
      row_shard.push_back(-1);
      return;
    }
  }
  row_shard.push_back(p.shard.value_or(-1));
  if (p.shard)
    shards.insert(*p.shard);
  else if (!p.error.empty())
    placement_error = p.error;
  else
    unknown = true;  // not a valid key: PostgreSQL will say so on any shard
}

// A key whose text is known (a literal, a parameter's value): a row of its own.
void KeyPlacement::add_known(const std::string& text) {
  key_texts.push_back(text);
  add(text);
  if (!ctx.reasons) return;
  keys_text += (keys_text.empty() ? "" : ",") + text;
  if (const auto b = bucket_of(table, text))
    buckets_text += (buckets_text.empty() ? "" : ",") + std::to_string(*b);
}

void KeyPlacement::read(const std::vector<KeyValue>& keys) {
  for (const auto& k : keys) {
    if (k.kind == KeyValue::Kind::kLiteral) {
      add_known(k.literal);
    } else if (!ctx.bind) {
      unknown = true;
    } else if (param_is_null(*ctx.bind, k.param)) {
      unknown = true;  // key = NULL matches no row
    } else if (k.kind == KeyValue::Kind::kParam) {
      if (auto v = param_text(*ctx.bind, k.param, table.type, declared_type(ctx, k.param)))
        add_known(*v);
      else
        undecodable = k.param;
    } else if (auto vs = array_param(*ctx.bind, k.param, table.type)) {
      for (const auto& v : *vs) add(v);
      if (vs->empty()) unknown = true;
    } else {
      undecodable = k.param;
    }
  }
}

// What the keys settle before their shards count: a key that cannot be read, directory
// entries to look up, a key no shard takes, or no key to place by. False: the shards decide.
bool placement_settles(KeyPlacement& p, const Analysis& a, const config::Config& cfg, Route& r) {
  if (p.foreign_bytes) {
    // Never guessed: reads go everywhere, writes are refused (the row would be stored by
    // its UTF8 bytes on a shard chosen by its client-encoding bytes).
    if (r.write) {
      r = foreign_key_refusal(p.ctx.client_encoding);
      return true;
    }
    every_shard(r, a, cfg);
    return true;
  }
  if (!p.inexact.empty()) {
    // Never guessed: reads go everywhere (each shard answers PostgreSQL's comparison or
    // cast for its rows), writes are refused (an INSERT's row could land anywhere).
    if (r.write) {
      r = refuse("cannot tell the shard of key " + p.inexact + " of " + p.table.table +
                     ": it is not an integer, and PostgreSQL compares it as numeric or rounds it "
                     "when cast",
                 "write the key as an integer");
      return true;
    }
    every_shard(r, a, cfg);
    return true;
  }
  if (p.undecodable) {
    // A key we cannot read is never guessed: reads go everywhere, writes are refused.
    if (r.write) {
      r = refuse("cannot read the shard key from parameter $" + std::to_string(p.undecodable) +
                     " (its binary format is not one pgshard decodes for " +
                     config::to_string(p.table.type) + ")",
                 "send the parameter in text format");
      return true;
    }
    every_shard(r, a, cfg);
    return true;
  }
  if (!p.lookups.empty()) {
    r = Route{};
    r.action = Lookup{std::move(p.lookups), {}};
    return true;
  }
  if (!p.placement_error.empty() && r.write) {
    r = Route{};
    r.action = Refuse{protocol::error("23514", p.placement_error, {},
                                      "add a range or list entry for it, or a default shard")};
    return true;
  }
  if (p.shards.empty()) {
    // Nothing to place by: the statement cannot match rows (NULL or invalid key) or is only
    // being described; any shard gives PostgreSQL's answer.
    r.action = Forward{p.ctx.attached.value_or(0)};
    if (p.ctx.reasons && p.unknown) r.reason += " (key not known yet)";
    return true;
  }
  return false;
}

// UPDATE ... SET key = value that would move rows to another shard: refused.
bool moves_rows(const Analysis& a, const KeyPlacement& p, const config::Config& cfg, Route& r) {
  if (!a.new_key) return false;
  std::optional<std::string> text;
  if (a.new_key->kind == KeyValue::Kind::kLiteral)
    text = a.new_key->literal;
  else if (p.ctx.bind)
    text = param_text(*p.ctx.bind, a.new_key->param, p.table.type,
                      declared_type(p.ctx, a.new_key->param));
  if (!text) return false;
  if (!key_bytes_as_stored(p.ctx.client_encoding, *text)) {
    r = foreign_key_refusal(p.ctx.client_encoding);
    return true;
  }
  auto moved = place_key(p.table, *text, p.n).shard;
  if (!moved || (p.shards.size() == 1 && *moved == *p.shards.begin())) return false;
  r = refuse("UPDATE would move rows of \"" + p.table.table + "\" to another shard (" +
                 p.table.column + " = " + *text + " belongs on shard " +
                 cfg.shards[static_cast<std::size_t>(*moved)].name + ")",
             "delete the row and insert it again with the new key");
  return true;
}

// Rows for several shards: one INSERT per shard, built by the deparser. Every row's key must
// be known: a literal, or a parameter whose value this Bind carries (the parts are built
// again for each Bind). Refused when it cannot be split.
void split_rows(std::string_view sql, std::size_t keys, const KeyPlacement& p,
                const config::Config& cfg, Route& r) {
  std::optional<std::vector<std::pair<int, std::string>>> parts;
  if (p.key_texts.size() == keys && p.row_shard.size() == keys &&
      std::find(p.row_shard.begin(), p.row_shard.end(), -1) == p.row_shard.end())
    parts = split_insert(sql, p.row_shard);
  if (!parts) {
    r = refuse("INSERT rows belong on different shards (" + shard_list(p.shards, cfg) +
                   ") and this INSERT cannot be split (parameters or expressions)",
               "insert the rows in separate statements");
    return;
  }
  auto* fan_out = std::get_if<FanOut>(&r.action);  // (an INSERT is no schema change)
  if (!fan_out) return;
  auto& f = *fan_out;
  f.per_shard_sql = std::move(*parts);
  f.insert_row_shards.assign(p.row_shard.begin(), p.row_shard.end());
  for (const auto& k : p.key_texts) f.insert_row_keys.push_back(key_identity(p.table.type, k));
  f.insert_key_column = p.table.column;
  f.insert_key_type = p.table.type;
  if (p.ctx.reasons) r.reason += ": split into one INSERT per shard";
}

// kKeys: the shards the statement's key values are placed on.
void route_by_keys(const Analysis& a, std::string_view sql, const config::Config& cfg,
                   const Context& ctx, Route& r) {
  const auto& table = cfg.sharded_tables[static_cast<std::size_t>(a.table)];
  std::vector<KeyValue> positional;
  if (!a.positional.empty() && !positional_keys(a, table, ctx, r, positional)) return;
  const auto& keys = a.positional.empty() ? a.keys : positional;
  if (generates_values(a, keys, table, ctx, r)) return;
  KeyPlacement p(table, a.table, cfg, ctx);
  p.read(keys);
  if (placement_settles(p, a, cfg, r) || moves_rows(a, p, cfg, r)) return;
  if (ctx.reasons)
    r.reason += " " + table.column + "=" + p.keys_text + " (" + config::to_string(table.type) +
                " " + config::to_string(table.function) +
                (p.buckets_text.empty()
                     ? std::string()
                     : ", bucket " + p.buckets_text + " of " + std::to_string(table.buckets)) +
                ")";
  if (p.shards.size() == 1) {
    r.action = Forward{*p.shards.begin()};
    return;
  }
  spread(r, a, std::vector<int>(p.shards.begin(), p.shards.end()));
  if (a.insert) split_rows(sql, keys.size(), p, cfg, r);
}

Route by_parser_placed(const std::shared_ptr<const Analysis>& a, std::string_view sql,
                       const config::Config& cfg, const Context& ctx) {
  // (One named result, returned once: the Route, large, is built in the caller's place.)
  Route r;
  r.names_unique_id = a->names_unique_id;
  if (a->unique_ids > 0) {
    // Run: the ids are put in first. Only described: any shard describes it alike.
    if (ctx.describe_only)
      r.action = Forward{ctx.attached.value_or(0)};
    else
      r.action = UniqueIds{};
  } else {
    take_statement(r, *a, cfg, ctx);
    if (a->target == Analysis::Target::kKeys)
      route_by_keys(*a, sql, cfg, ctx, r);
    else
      route_target(*a, cfg, ctx, r);
  }
  return r;
}

}  // namespace

namespace {

// Whether every function outside pg_catalog the statement calls is in read_safe_functions.
bool calls_read_safe(const Analysis& a, const config::Config& cfg) {
  const auto& safe = cfg.replication.read_safe_functions;
  return std::all_of(a.user_functions.begin(), a.user_functions.end(), [&](const auto& f) {
    return std::find(safe.begin(), safe.end(), f) != safe.end();
  });
}

}  // namespace

bool may_run_on_replica(const Analysis& a, const config::Config& cfg) {
  return a.reads_only && !a.write && !a.ddl && !a.pins && a.settings.empty() &&
         calls_read_safe(a, cfg);
}

void take_replica_safety(Route& r, const Analysis& a, const config::Config& cfg) {
  r.read_only = may_run_on_replica(a, cfg);
  r.side_effects = a.side_effects || !calls_read_safe(a, cfg);
  r.unqualified_calls = a.unqualified_calls;
}

std::shared_ptr<const Analysis> analysis_of(std::string_view sql, const config::Config& cfg,
                                            const Context& ctx) {
  if (ctx.analysis) return *ctx.analysis;
  if (ctx.cache) return ctx.cache->get(sql, cfg);
  return std::make_shared<const Analysis>(analyze_statement(sql, cfg));
}

// (Most statements have none of these: an empty vector is not copied, a call each.)
template <typename Vector>
void copy_unless_both_empty(Vector& to, const Vector& from) {
  if (!from.empty() || !to.empty()) to = from;
}

void take_session_effects(Route& r, const Analysis& a) {
  copy_unless_both_empty(r.settings, a.settings);
  r.pins = a.pins;
  r.locks = a.locks;
  r.begin_modes = a.begin_modes;
  r.start_transaction = a.start_transaction;
  r.prepared_statements_view = a.prepared_statements_view;
  copy_unless_both_empty(r.user_functions, a.user_functions);
  r.signal_call = a.signal_call;
  copy_unless_both_empty(r.temp_tables, a.temp_tables);
  copy_unless_both_empty(r.schema_objects, a.schema_objects);
  r.drops = a.drops;
  r.txn = a.txn;
  if (!a.gid.empty()) r.gid = a.gid;
  r.controls_txn = a.controls_txn;
  r.cursor_op = a.cursor_op;
  if (a.cursor_op != Analysis::CursorOp::kNone) r.cursor = a.cursor;
  r.cursor_hold = a.cursor_hold;
  r.sql_prepare = a.sql_prepare;
  if (a.sql_prepare != Analysis::SqlPrepareOp::kNone) r.sql_prepared = a.sql_prepared;
  r.sql_prepare_held = a.sql_prepare_held;
  r.sql_prepare_alone = a.sql_prepare_alone;
}

Route by_parser(std::string_view sql, const config::Config& cfg, const Context& ctx) {
  std::shared_ptr<const Analysis> a = analysis_of(sql, cfg, ctx);
  // (Every return names `r`: the Route, large, is built in the caller's place.)
  Route r = by_parser_placed(a, sql, cfg, ctx);
  if (a->statements > 1 && shards_of(r).size() > 1 && !std::holds_alternative<Ddl>(r.action)) {
    // Each statement would need its own merge (and one implicit transaction across the
    // shards); concatenating the shards' answers would be wrong, so refuse the whole Query.
    // DDL scripts run shard by shard and answer once (migrations send them whole).
    r = refuse("a Query of several statements that needs several shards is not supported",
               "send the statements one at a time, or keep them on one shard");
  }
  if (a->cursor_op == Analysis::CursorOp::kDeclare && shards_of(r).size() > 1 && !replicated(r)) {
    // A cursor lives in one server session; FETCH from one shard's cursor would return that
    // shard's rows only. Merged cursors are not done: refused, never part of the answer.
    r = refuse("DECLARE CURSOR over a query that needs several shards is not supported",
               "add the shard key to the cursor's query (or a shard hint), or run the query "
               "without a cursor");
  }
  return r;
}

}  // namespace pgshard::router::detail
