-- Each shard's sum rounded to int, then added, would be off by the roundings.
select sum(amount)::int from orders
