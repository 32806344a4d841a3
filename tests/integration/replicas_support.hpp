// What the [replicas] test files share (replicas_test.cpp, replicas_readonly_test.cpp):
// proxies whose shards have streaming replicas, SHOW REPLICAS, tables made on the shards.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "harness.hpp"

namespace harness {

// A proxy whose shard 0 has `replica_port` as its replica, its hosts checked every 100 ms.
ProxyOptions with_replica(int replica_port, const std::string& replication);
// SHOW REPLICAS as maps from column name to value, one per row.
std::vector<std::map<std::string, std::string>> replicas(const Proxy& p);
// The one replica's state ("rows: N" when there is not exactly one).
std::string replica_state(const Proxy& p);
// The port the statement `sql` (which selects inet_server_port() first) ran on.
int ran_on(PGconn* c, const std::string& sql);
// A proxy reading from shard 0's replica, and users in transaction and session pooling.
ProxyOptions reading_replica(int replica_port, const std::string& consistency);
// Table `name` (id, v) on shard 0's primary with the row (1, 0), made afresh.
void one_row_table(Cluster& cluster, const std::string& name);
// Ten times: a write of row 1 of `table` (one_row_table) on shard 0, then its read (in a
// transaction `begin` opens, if any) through a proxy reading the replica `replica`; how
// many reads did not see the write.
int stale_reads(int replica, const std::string& table, const std::string& consistency,
                const std::string& begin);
// Table `name` (id bigint) on every shard, shard i holding ids 1..i+2.
void fan_table(Cluster& cluster, const std::string& name);
// Shards 0 and 1 read from replicas r0 and r1 (eventual), `table` sharded by id; started
// once both replicas are up.
ProxyOptions two_replicas(int r0, int r1, const std::string& table, const std::string& extra);
bool both_replicas_up(const Proxy& proxy);

}  // namespace harness
