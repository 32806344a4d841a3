// PostgreSQL's hash-partitioning maths, so a shard index equals the partition PostgreSQL's
// PARTITION BY HASH would choose (satisfies_hash_partition() proves placement).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace pgshard::router {

// partition.h: HASH_PARTITION_SEED.
inline constexpr uint64_t kHashPartitionSeed = 0x7A5B22367996DCFDULL;

// src/common/hashfn.c
uint64_t hash_bytes_extended(const unsigned char* k, std::size_t len, uint64_t seed);
uint64_t hash_uint32_extended(uint32_t k, uint64_t seed);
// hashfn.h
inline uint64_t hash_combine64(uint64_t a, uint64_t b) {
  a ^= b + 0x49a0f4dd15e5a8e3ULL + (a << 54) + (a >> 7);
  return a;
}

// The per-type extended hash functions of the default hash operator classes.
uint64_t hashint8extended(int64_t v, uint64_t seed);
uint64_t hashint4extended(int32_t v, uint64_t seed);
uint64_t hashtextextended(std::string_view v, uint64_t seed);
uint64_t uuid_hash_extended(const unsigned char (&uuid)[16], uint64_t seed);

// Parses the text form of a key of `type` as PostgreSQL's input function would (integers
// with surrounding spaces and range checks, uuid with or without hyphens and braces).
// Returns the row hash compute_partition_hash_value() computes for a one-column key.
std::optional<uint64_t> partition_hash(config::KeyType type, std::string_view text);

// The remainder PostgreSQL uses with modulus `n` for a single-key hash partition.
inline int hash_to_index(uint64_t row_hash, int n) {
  return static_cast<int>(row_hash % static_cast<uint64_t>(n));
}

std::optional<int64_t> parse_int(std::string_view text, int64_t lo, int64_t hi);
bool parse_uuid(std::string_view text, unsigned char (&out)[16]);

}  // namespace pgshard::router
