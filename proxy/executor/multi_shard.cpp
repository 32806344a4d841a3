// Multi-shard execution for a session: a statement fanned out to several shards with
// concatenated rows and summed tags, split multi-row INSERTs, and COPY FROM STDIN split by
// key. Members of Session, kept apart from the single-shard relay in session.cpp.
#include <spdlog/spdlog.h>

#include "protocol/codec.hpp"
#include "protocol/messages.hpp"
#include "proxy/router/placement.hpp"
#include "proxy/server/server.hpp"
#include "proxy/session/copy_split.hpp"
#include "proxy/session/params.hpp"
#include "proxy/session/session.hpp"

namespace pgshard::session {

namespace proto = protocol;
namespace sqlstate = protocol::sqlstate;

namespace {

constexpr std::size_t kReadChunk = 16 * 1024;

// Shards agree on a result shape when names, types and formats match; table OIDs and
// column numbers differ from shard to shard and do not count.
bool same_columns(std::string_view a_frame, std::string_view b_frame) {
  auto a = proto::RowDescription::parse(a_frame.substr(5));
  auto b = proto::RowDescription::parse(b_frame.substr(5));
  if (!a || !b || a->fields.size() != b->fields.size()) return false;
  for (std::size_t i = 0; i < a->fields.size(); ++i) {
    const auto& x = a->fields[i];
    const auto& y = b->fields[i];
    if (x.name != y.name || x.type_oid != y.type_oid || x.format != y.format) return false;
  }
  return true;
}

}  // namespace

// Reads one server's replies, handing each frame to `on_frame` until it returns true.
// Returns false when the connection failed.
template <typename F>
awaitable<bool> Session::read_replies(pool::Lease& lease, F on_frame) {
  for (;;) {
    auto d = proto::decode_frame(lease->rbuf.view(), config_.listen.max_message_size);
    if (d.status == proto::DecodeStatus::kError) co_return false;
    if (d.status == proto::DecodeStatus::kNeedMore) {
      std::size_t room;
      char* at = lease->rbuf.prepare(kReadChunk, &room);
      auto [ec, n] = co_await lease->socket().async_read_some(asio::buffer(at, room), use_nothrow);
      if (ec) co_return false;
      lease->rbuf.commit(n);
      continue;
    }
    const proto::Frame f = d.frame;
    if (f.type == proto::msg::kReadyForQuery) lease->status = f.body.empty() ? 'I' : f.body[0];
    bool stop = on_frame(f, std::string_view(lease->rbuf.data(), d.consumed));
    lease->rbuf.consume(d.consumed);
    if (stop) co_return true;
  }
}

awaitable<void> Session::copy_in_split(const router::Route& route) {
  // COPY FROM STDIN into a sharded table: every shard opens the same COPY inside a
  // transaction, rows are sent to the shard their key names, and all shards commit only if
  // every one of them accepted its rows.
  co_await drain();
  std::string out;
  auto fail = [&](const proto::ErrorInfo& e) -> awaitable<void> {
    proto::write_error(out, e);
    out += proto::ready_for_query(transaction_status());
    co_await write_client(out);
  };
  if (transaction_status() != 'I') {
    co_await fail(
        proto::error(sqlstate::kFeatureNotSupported,
                     "COPY into a sharded table inside a transaction is not supported yet"));
    co_return;
  }
  if (active_ && user_->pool_mode == config::PoolMode::kTransaction) release(active_);
  const auto& spec = *route.copy_in;
  const auto& table = config_.sharded_tables[static_cast<std::size_t>(route.copy_table)];
  const int n = static_cast<int>(config_.shards.size());
  std::vector<pool::Lease> leases;
  for (int shard : route.shards) {
    auto got = co_await worker_.pool(shard, *user_).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      co_await fail(proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
      co_return;
    }
    leases.push_back(std::move(std::get<pool::Lease>(got)));
  }
  std::optional<proto::ErrorInfo> error;
  auto error_from = [&](std::string_view body) {
    if (error) return;
    auto e = proto::ErrorFields::parse(body);
    error = proto::error(e ? e->code() : sqlstate::kInternalError,
                         e ? std::string(e->message()) : "malformed error");
  };
  // Without a column list the key's position comes from the table's definition.
  int key_index = spec.key_column;
  if (key_index < 0) {
    std::string q;
    proto::Query{"SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(" +
                 quote_literal(spec.table) +
                 ") AND attnum > 0 AND NOT attisdropped ORDER BY attnum"}
        .write(q);
    co_await asio::async_write(leases[0]->socket(), asio::buffer(q), use_nothrow);
    int index = 0;
    bool ok = co_await read_replies(leases[0], [&](const proto::Frame& f, std::string_view) {
      if (f.type == proto::msg::kDataRow) {
        auto row = proto::DataRow::parse(f.body);
        if (row && !row->values.empty() && row->values[0] == table.column) key_index = index;
        ++index;
      }
      return f.type == proto::msg::kReadyForQuery;
    });
    if (!ok) leases[0]->broken = true;
    if (key_index < 0) {
      co_await fail(
          proto::error(sqlstate::kUndefinedObject,
                       "cannot find column \"" + table.column + "\" of table " + spec.table));
      co_return;
    }
  }
  // Open the COPY on every shard.
  std::string copy_in_response;
  for (auto& lease : leases) {
    std::string batch;
    int skip = 1;
    if (lease->synced_fingerprint != params_fingerprint_) {
      auto sync = sync_statements(client_params_, lease->params);
      if (!sync.empty()) {
        proto::Query{sync}.write(batch);
        ++skip;
      }
      for (const auto& [k, v] : client_params_) lease->params[k] = v;
      lease->synced_fingerprint = params_fingerprint_;
    }
    proto::Query{"BEGIN"}.write(batch);
    batch += pending_;
    co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    bool ok = co_await read_replies(lease, [&](const proto::Frame& f, std::string_view raw) {
      if (f.type == proto::msg::kReadyForQuery) return skip-- == 0;  // 0: the COPY failed
      if (skip > 0) return false;
      if (f.type == proto::msg::kErrorResponse) error_from(f.body);
      if (f.type == proto::msg::kCopyInResponse) {
        if (copy_in_response.empty()) copy_in_response.assign(raw);
        return true;
      }
      return false;
    });
    if (!ok) {
      lease->broken = true;
      if (!error)
        error = proto::error(sqlstate::kConnectionFailure, "lost a shard while starting COPY");
    }
  }
  std::string frame;
  auto send_all = [&](char type, std::string_view body) -> awaitable<void> {
    frame.clear();
    proto::MessageWriter(frame).begin(type).bytes(body).finish();
    for (auto& lease : leases)
      if (lease->status == 'T' && !lease->broken)
        co_await asio::async_write(lease->socket(), asio::buffer(frame), use_nothrow);
  };
  bool client_ok = true;
  if (!error) {
    // Stream the client's rows to their shards.
    co_await write_client(copy_in_response);
    CopyRowSplitter splitter(spec, key_index);
    std::vector<std::string> bufs(static_cast<std::size_t>(n));
    auto route_row = [&](std::string_view row, const std::optional<std::string>& key, bool header) {
      if (header) {
        for (auto& b : bufs) b.append(row);
        return;
      }
      int shard = 0;  // NULL or invalid keys: shard 0 reports PostgreSQL's own error
      if (key) shard = router::place_key(table, *key, n).shard.value_or(0);
      bufs[static_cast<std::size_t>(shard)].append(row);
    };
    auto flush = [&](std::size_t threshold) -> awaitable<void> {
      for (std::size_t i = 0; i < bufs.size(); ++i) {
        if (bufs[i].size() <= threshold || bufs[i].empty()) continue;
        frame.clear();
        proto::CopyData{bufs[i]}.write(frame);
        bufs[i].clear();
        auto& lease = leases[i];
        if (lease->status == 'T' && !lease->broken)
          co_await asio::async_write(lease->socket(), asio::buffer(frame), use_nothrow);
      }
    };
    bool done = false;
    while (!done) {
      auto d = proto::decode_frame(in_.view(), config_.listen.max_message_size);
      if (d.status == proto::DecodeStatus::kNeedMore) {
        if (!co_await read_client()) {
          client_ok = false;
          co_await send_all(proto::msg::kCopyFail, std::string_view("client went away\0", 17));
          break;
        }
        continue;
      }
      if (d.status == proto::DecodeStatus::kError) {
        client_ok = false;
        co_await send_all(proto::msg::kCopyFail, std::string_view("protocol violation\0", 19));
        break;
      }
      const char type = d.frame.type;
      std::string body(d.frame.body);
      in_.consume(d.consumed);
      switch (type) {
        case proto::msg::kCopyData:
          splitter.feed(body, route_row);
          co_await flush(64 * 1024);
          break;
        case proto::msg::kCopyDone:
          splitter.finish(route_row);
          co_await flush(0);
          co_await send_all(proto::msg::kCopyDone, {});
          done = true;
          break;
        case proto::msg::kCopyFail:
          co_await send_all(proto::msg::kCopyFail, body);
          done = true;
          break;
        case proto::msg::kFlush:
        case proto::msg::kSync:
          break;  // ignored during COPY, as PostgreSQL does
        default:
          client_ok = false;
          co_await send_all(proto::msg::kCopyFail, std::string_view("unexpected message\0", 19));
          done = true;
      }
    }
  }
  // Collect each shard's outcome, then commit everywhere or nowhere.
  uint64_t total = 0;
  for (auto& lease : leases) {
    if (lease->status != 'T' || lease->broken) continue;
    bool ok = co_await read_replies(lease, [&](const proto::Frame& f, std::string_view) {
      if (f.type == proto::msg::kErrorResponse) error_from(f.body);
      if (f.type == proto::msg::kCommandComplete) {
        auto c = proto::CommandComplete::parse(f.body);
        if (c && c->tag.starts_with("COPY "))
          total += std::strtoull(std::string(c->tag.substr(5)).c_str(), nullptr, 10);
      }
      return f.type == proto::msg::kReadyForQuery;
    });
    if (!ok) {
      lease->broken = true;
      if (!error) error = proto::error(sqlstate::kConnectionFailure, "lost a shard during COPY");
    }
  }
  const char* end_verb = error ? "ROLLBACK" : "COMMIT";
  for (auto& lease : leases) {
    if (lease->broken || lease->status == 'I') continue;
    std::string q;
    proto::Query{end_verb}.write(q);
    co_await asio::async_write(lease->socket(), asio::buffer(q), use_nothrow);
    bool committed = false;
    bool ok = co_await read_replies(lease, [&](const proto::Frame& f, std::string_view) {
      if (f.type == proto::msg::kCommandComplete)
        committed = proto::CommandComplete::parse(f.body)->tag == end_verb;
      if (f.type == proto::msg::kErrorResponse) error_from(f.body);
      return f.type == proto::msg::kReadyForQuery;
    });
    if (!ok || !committed) lease->broken = true;
  }
  if (!client_ok) co_return;
  if (error) {
    co_await fail(*error);
    co_return;
  }
  proto::CommandComplete{"COPY " + std::to_string(total)}.write(out);
  out += proto::ready_for_query('I');
  co_await write_client(out);
}

awaitable<void> Session::fan_out(const router::Route& route, bool simple, char boundary) {
  // Multi-shard execution, first form: the shards run the statement one after another and
  // their replies are concatenated; tags are summed. Only where that is exactly what one
  // PostgreSQL would return, and only outside transactions; everything else is refused.
  co_await drain();
  std::string out;
  std::string names;
  for (int s : route.shards) names += (names.empty() ? "" : ", ") + config_.shards[s].name;
  auto refuse = [&](std::string message, std::string hint) -> awaitable<void> {
    proto::write_error(
        out, proto::error(sqlstate::kFeatureNotSupported, std::move(message), {}, std::move(hint)));
    if (boundary == proto::msg::kFlush)
      discard_until_sync_ = true;
    else
      out += proto::ready_for_query(transaction_status());
    co_await write_client(out);
  };
  if (!simple) {
    co_await refuse(
        "statement needs shards " + names + " (" + route.reason +
            "); multi-shard statements are supported in the simple query protocol only so far",
        "add the shard key to the WHERE clause, or a /* pgshard: shard=NAME */ hint");
    co_return;
  }
  if (transaction_status() != 'I') {
    co_await refuse("statement needs shards " + names + " inside a transaction; not supported yet",
                    "run it outside the transaction, or add the shard key");
    co_return;
  }
  if (!route.write && !route.concat_safe) {
    co_await refuse(route.merge_blocker + " across shards (" + names + ") is not supported yet",
                    "add the shard key to the WHERE clause so one shard answers");
    co_return;
  }
  if (active_ && user_->pool_mode == config::PoolMode::kTransaction) release(active_);

  // Each shard's statement: the client's, or its part of a split INSERT.
  std::vector<std::pair<int, std::string>> jobs;
  if (route.per_shard_sql.empty()) {
    for (int shard : route.shards) jobs.emplace_back(shard, pending_);
  } else {
    for (const auto& [shard, sql] : route.per_shard_sql) {
      std::string q;
      proto::Query{sql}.write(q);
      jobs.emplace_back(shard, std::move(q));
    }
  }
  // Writes keep every shard's transaction open until all of them succeeded, then commit
  // (or roll back) everywhere: a failure on one shard undoes the others. This is not
  // two-phase commit: a crash between the COMMITs can still leave shards apart.
  const bool atomic = route.write;
  std::vector<std::pair<int, pool::Lease>> held;
  std::string first_desc;  // RowDescription every shard must agree on
  bool described = false, failed = false, empty = false, copying_out = false;
  uint64_t total = 0;
  std::string verb;
  for (const auto& [shard, query] : jobs) {
    auto got = co_await worker_.pool(shard, *user_).acquire();
    if (auto* err = std::get_if<std::string>(&got)) {
      proto::write_error(out, proto::error(sqlstate::kSqlclientUnableToEstablish, *err));
      failed = true;
      break;
    }
    auto lease = std::move(std::get<pool::Lease>(got));
    std::string batch;
    if (lease->synced_fingerprint != params_fingerprint_) {
      auto sync = sync_statements(client_params_, lease->params);
      if (!sync.empty()) proto::Query{sync}.write(batch);
      for (const auto& [k, v] : client_params_) lease->params[k] = v;
      lease->synced_fingerprint = params_fingerprint_;
    }
    int skip = batch.empty() ? 0 : 1;
    if (atomic) {
      proto::Query{"BEGIN"}.write(batch);
      ++skip;
    }
    batch += query;
    auto [wec, wn] = co_await asio::async_write(lease->socket(), asio::buffer(batch), use_nothrow);
    bool done = false, shard_failed = false;
    while (!wec && !done) {
      auto d = proto::decode_frame(lease->rbuf.view(), config_.listen.max_message_size);
      if (d.status == proto::DecodeStatus::kNeedMore) {
        std::size_t room;
        char* at = lease->rbuf.prepare(kReadChunk, &room);
        auto [ec, n] =
            co_await lease->socket().async_read_some(asio::buffer(at, room), use_nothrow);
        if (ec) break;
        lease->rbuf.commit(n);
        continue;
      }
      if (d.status == proto::DecodeStatus::kError) break;
      const auto f = d.frame;
      std::string_view raw(lease->rbuf.data(), d.consumed);
      if (skip > 0) {
        if (f.type == proto::msg::kReadyForQuery) --skip;
      } else {
        switch (f.type) {
          case proto::msg::kRowDescription:
            if (!described) {
              first_desc.assign(raw);
              described = true;
              out.append(raw);
            } else if (!same_columns(first_desc, raw)) {
              proto::write_error(out, proto::error(sqlstate::kFeatureNotSupported,
                                                   "shards disagree on the result columns (shard " +
                                                       config_.shards[shard].name + ")"));
              shard_failed = true;
            }
            break;
          case proto::msg::kCommandComplete:
            if (auto c = proto::CommandComplete::parse(f.body)) {
              // "SELECT 3", "UPDATE 2", "INSERT 0 5" carry a count; "CREATE TABLE" does not.
              std::string_view tag = c->tag;
              auto sp = tag.rfind(' ');
              auto last = sp == tag.npos ? std::string_view() : tag.substr(sp + 1);
              bool counted = !last.empty() && last.find_first_not_of("0123456789") == last.npos;
              verb = std::string(counted ? tag.substr(0, tag.find(' ')) : tag);
              if (counted) total += std::strtoull(std::string(last).c_str(), nullptr, 10);
            }
            break;
          case proto::msg::kEmptyQueryResponse:
            empty = true;
            break;
          case proto::msg::kCopyOutResponse:
            // COPY TO from several shards: one copy stream for the client.
            if (!copying_out) out.append(raw);
            copying_out = true;
            break;
          case proto::msg::kCopyDone:
            break;
          case proto::msg::kErrorResponse:
            out.append(raw);
            shard_failed = true;
            break;
          case proto::msg::kParameterStatus:
            break;
          case proto::msg::kReadyForQuery:
            lease->status = f.body.empty() ? 'I' : f.body[0];
            done = true;
            break;
          default:
            out.append(raw);
        }
      }
      lease->rbuf.consume(d.consumed);
      // Stream rows on instead of holding a whole shard's answer.
      if (out.size() > (256u << 10) && !client_gone_) {
        co_await write_client(out);
        out.clear();
      }
    }
    if (!done) {
      lease->broken = true;
      proto::write_error(out, proto::error(sqlstate::kConnectionFailure,
                                           "server connection to shard " +
                                               config_.shards[shard].name + " was lost"));
      failed = true;
      break;
    }
    if (atomic) held.emplace_back(shard, std::move(lease));
    if (shard_failed) {
      failed = true;
      break;
    }
  }
  // Finish the held transactions: COMMIT everywhere when all succeeded, else ROLLBACK.
  std::vector<std::string> committed;
  for (auto& [shard, lease] : held) {
    const char* end_verb = failed ? "ROLLBACK" : "COMMIT";
    std::string end;
    proto::Query{end_verb}.write(end);
    bool ok = false;
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(end), use_nothrow);
    if (!ec)
      co_await read_replies(lease, [&](const proto::Frame& f, std::string_view) {
        if (f.type == proto::msg::kCommandComplete) {
          auto c = proto::CommandComplete::parse(f.body);
          ok = c && c->tag == end_verb;
        }
        return f.type == proto::msg::kReadyForQuery;
      });
    if (!ok) lease->broken = true;
    if (!failed && ok) committed.push_back(config_.shards[shard].name);
    if (!failed && !ok) {
      failed = true;
      std::string note;
      for (auto& c : committed) note += (note.empty() ? "" : ", ") + c;
      proto::write_error(
          out, proto::error(
                   sqlstate::kConnectionFailure,
                   "COMMIT failed on shard " + config_.shards[shard].name +
                       (note.empty() ? std::string() : " after shard(s) " + note + " committed"),
                   {}, "the shards may now disagree; check and repair"));
    }
  }
  if (!failed && copying_out) proto::write_empty(out, proto::msg::kCopyDone);
  if (!failed) {
    if (empty) {
      proto::write_empty(out, proto::msg::kEmptyQueryResponse);
    } else if (!verb.empty()) {
      std::string tag = verb == "INSERT" ? "INSERT 0 " + std::to_string(total)
                        : (verb == "SELECT" || verb == "UPDATE" || verb == "DELETE" ||
                           verb == "COPY" || verb == "FETCH" || verb == "MOVE" || verb == "MERGE")
                            ? verb + " " + std::to_string(total)
                            : verb;
      proto::CommandComplete{tag}.write(out);
    }
  }
  out += proto::ready_for_query('I');
  co_await write_client(out);
}

void Session::answer_extended(std::string_view answer, std::string& out) {
  // pgshard answers an extended-protocol batch itself (EXPLAIN (ROUTE)): every message
  // gets the reply PostgreSQL would send. `answer` is RowDescription, rows, CommandComplete.
  auto first = proto::decode_frame(answer);
  std::string_view desc = first.status == proto::DecodeStatus::kFrame
                              ? answer.substr(0, first.consumed)
                              : std::string_view();
  std::string_view rows = answer.substr(desc.size());
  std::vector<int32_t> param_types;
  for (std::string_view rest = pending_; !rest.empty();) {
    auto d = proto::decode_frame(rest);
    if (d.status != proto::DecodeStatus::kFrame) break;
    rest.remove_prefix(d.consumed);
    switch (d.frame.type) {
      case proto::msg::kParse:
        if (auto p = proto::Parse::parse(d.frame.body)) param_types = p->param_types;
        proto::write_empty(out, proto::msg::kParseComplete);
        break;
      case proto::msg::kBind:
        proto::write_empty(out, proto::msg::kBindComplete);
        break;
      case proto::msg::kDescribe:
        if (auto dsc = proto::Describe::parse(d.frame.body); dsc && dsc->kind == 'S')
          proto::ParameterDescription{param_types}.write(out);
        out.append(desc);
        break;
      case proto::msg::kExecute:
        out.append(rows);
        break;
      case proto::msg::kClose:
        proto::write_empty(out, proto::msg::kCloseComplete);
        break;
      case proto::msg::kSync:
        out += proto::ready_for_query(transaction_status());
        break;
      default:
        break;
    }
  }
}

awaitable<std::string> Session::resolve_directory(
    const std::vector<std::pair<int, std::string>>& lookups) {
  for (const auto& [table, key] : lookups) {
    const auto& t = config_.sharded_tables[static_cast<std::size_t>(table)];
    auto got = co_await worker_.directory_pool(table, *user_).acquire();
    if (auto* err = std::get_if<std::string>(&got)) co_return *err;
    auto lease = std::move(std::get<pool::Lease>(got));
    std::string q;
    proto::Query{"SELECT shard FROM " + t.directory_table + " WHERE key = " + quote_literal(key)}
        .write(q);
    auto [ec, n] = co_await asio::async_write(lease->socket(), asio::buffer(q), use_nothrow);
    std::optional<std::string> shard_name;
    std::string failure;
    bool ok = !ec && co_await read_replies(lease, [&](const proto::Frame& f, std::string_view) {
      if (f.type == proto::msg::kDataRow) {
        auto row = proto::DataRow::parse(f.body);
        if (row && !row->values.empty() && row->values[0])
          shard_name = std::string(*row->values[0]);
      } else if (f.type == proto::msg::kErrorResponse) {
        auto e = proto::ErrorFields::parse(f.body);
        failure = e ? std::string(e->message()) : "malformed error";
      }
      return f.type == proto::msg::kReadyForQuery;
    });
    if (!ok) {
      lease->broken = true;
      co_return "lost the connection to the directory of table " + t.table;
    }
    if (!failure.empty()) co_return "directory lookup for table " + t.table + " failed: " + failure;
    int shard = -1;
    if (shard_name) {
      shard = config_.shard_index(*shard_name);
      if (shard < 0)
        co_return "the directory of table " + t.table + " puts key " + key +
            " on unknown shard \"" + *shard_name + "\"";
    }
    worker_.directory().put(table, key, shard, t.directory_ttl);
  }
  co_return std::string();
}

}  // namespace pgshard::session
