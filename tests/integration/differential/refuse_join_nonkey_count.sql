-- error: 0A000
-- Orders and users joined on orders' id, not its shard key: pairs across shards would be lost.
select count(*) from orders o join users u on u.id = o.id
