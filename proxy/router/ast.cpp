// Helpers over libpg_query's protobuf parse tree shared by the analysis and the merge
// planner: a generic walk, structural equality, and names.
#include "proxy/router/ast.hpp"

#include <cstring>

namespace pgshard::router {

namespace ast {

using Node = PgQuery__Node;

// Calls `visit` on every message of the tree (generic over protobuf-c reflection), so no
// statement form can hide a table from us.
std::optional<std::string> deparse(const PgQuery__ParseResult* tree) {
  std::string packed(pg_query__parse_result__get_packed_size(tree), '\0');
  pg_query__parse_result__pack(tree, reinterpret_cast<uint8_t*>(packed.data()));
  PgQueryProtobuf pb{packed.size(), packed.data()};
  auto d = pg_query_deparse_protobuf(pb);
  std::optional<std::string> out;
  if (!d.error && d.query) out = std::string(d.query);
  pg_query_free_deparse_result(d);
  return out;
}

void walk(const ProtobufCMessage* m, const std::function<void(const ProtobufCMessage*)>& visit) {
  if (!m) return;
  visit(m);
  const auto* d = m->descriptor;
  const char* base = reinterpret_cast<const char*>(m);
  for (unsigned i = 0; i < d->n_fields; ++i) {
    const auto& f = d->fields[i];
    if (f.type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f.label == PROTOBUF_C_LABEL_REPEATED) {
      auto n = *reinterpret_cast<const size_t*>(base + f.quantifier_offset);
      auto arr = *reinterpret_cast<ProtobufCMessage* const* const*>(base + f.offset);
      for (size_t k = 0; k < n; ++k) walk(arr[k], visit);
    } else {
      if ((f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
          *reinterpret_cast<const uint32_t*>(base + f.quantifier_offset) != f.id)
        continue;
      walk(*reinterpret_cast<ProtobufCMessage* const*>(base + f.offset), visit);
    }
  }
}

namespace {

std::size_t scalar_size(ProtobufCType t) {
  switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
      return 8;
    case PROTOBUF_C_TYPE_BOOL:
      return sizeof(protobuf_c_boolean);
    default:
      return 4;
  }
}

}  // namespace

bool equal(const ProtobufCMessage* a, const ProtobufCMessage* b) {
  if (!a || !b) return a == b;
  if (a->descriptor != b->descriptor) return false;
  const auto* d = a->descriptor;
  const char* pa = reinterpret_cast<const char*>(a);
  const char* pb = reinterpret_cast<const char*>(b);
  for (unsigned i = 0; i < d->n_fields; ++i) {
    const auto& f = d->fields[i];
    if (std::strcmp(f.name, "location") == 0) continue;
    if (f.flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
      auto ca = *reinterpret_cast<const uint32_t*>(pa + f.quantifier_offset);
      auto cb = *reinterpret_cast<const uint32_t*>(pb + f.quantifier_offset);
      if (ca != cb) return false;
      if (ca != f.id) continue;
    }
    if (f.label == PROTOBUF_C_LABEL_REPEATED) {
      auto na = *reinterpret_cast<const size_t*>(pa + f.quantifier_offset);
      auto nb = *reinterpret_cast<const size_t*>(pb + f.quantifier_offset);
      if (na != nb) return false;
      if (f.type == PROTOBUF_C_TYPE_MESSAGE) {
        auto xa = *reinterpret_cast<ProtobufCMessage* const* const*>(pa + f.offset);
        auto xb = *reinterpret_cast<ProtobufCMessage* const* const*>(pb + f.offset);
        for (size_t k = 0; k < na; ++k)
          if (!equal(xa[k], xb[k])) return false;
      } else if (f.type == PROTOBUF_C_TYPE_STRING) {
        auto xa = *reinterpret_cast<char* const* const*>(pa + f.offset);
        auto xb = *reinterpret_cast<char* const* const*>(pb + f.offset);
        for (size_t k = 0; k < na; ++k)
          if (std::strcmp(xa[k], xb[k]) != 0) return false;
      } else {
        auto xa = *reinterpret_cast<const char* const*>(pa + f.offset);
        auto xb = *reinterpret_cast<const char* const*>(pb + f.offset);
        if (na && std::memcmp(xa, xb, na * scalar_size(f.type)) != 0) return false;
      }
      continue;
    }
    switch (f.type) {
      case PROTOBUF_C_TYPE_MESSAGE:
        if (!equal(*reinterpret_cast<ProtobufCMessage* const*>(pa + f.offset),
                   *reinterpret_cast<ProtobufCMessage* const*>(pb + f.offset)))
          return false;
        break;
      case PROTOBUF_C_TYPE_STRING: {
        const char* sa = *reinterpret_cast<char* const*>(pa + f.offset);
        const char* sb = *reinterpret_cast<char* const*>(pb + f.offset);
        if (std::strcmp(sa ? sa : "", sb ? sb : "") != 0) return false;
        break;
      }
      case PROTOBUF_C_TYPE_BYTES:
        return false;  // not used by expression nodes
      default:
        if (std::memcmp(pa + f.offset, pb + f.offset, scalar_size(f.type)) != 0) return false;
    }
  }
  return true;
}

std::string_view str_of(const Node* n) {
  if (n && n->node_case == PG_QUERY__NODE__NODE_STRING) return n->string->sval;
  return {};
}

// Built-in aggregates (pg_aggregate in PostgreSQL 15); a user-defined aggregate is not
// recognised, which is why multi-shard reads are also checked for GROUP BY and friends.
bool is_aggregate(std::string_view name) {
  static constexpr std::string_view kNames[] = {"count",
                                                "sum",
                                                "avg",
                                                "min",
                                                "max",
                                                "bool_and",
                                                "bool_or",
                                                "every",
                                                "array_agg",
                                                "string_agg",
                                                "json_agg",
                                                "jsonb_agg",
                                                "json_object_agg",
                                                "jsonb_object_agg",
                                                "bit_and",
                                                "bit_or",
                                                "bit_xor",
                                                "stddev",
                                                "stddev_pop",
                                                "stddev_samp",
                                                "variance",
                                                "var_pop",
                                                "var_samp",
                                                "corr",
                                                "covar_pop",
                                                "covar_samp",
                                                "regr_avgx",
                                                "regr_avgy",
                                                "regr_count",
                                                "regr_intercept",
                                                "regr_r2",
                                                "regr_slope",
                                                "regr_sxx",
                                                "regr_sxy",
                                                "regr_syy",
                                                "percentile_cont",
                                                "percentile_disc",
                                                "mode",
                                                "rank",
                                                "dense_rank",
                                                "percent_rank",
                                                "cume_dist",
                                                "xmlagg",
                                                "range_agg",
                                                "range_intersect_agg"};
  for (auto k : kNames)
    if (k == name) return true;
  return false;
}

}  // namespace ast

}  // namespace pgshard::router
