-- error: 0A000
-- Co-located in fact, but a derived table's columns are not traced to their table's shard key
-- yet: refused, not guessed.
select count(*), sum(o.amount) from (select user_id, amount from orders) o join users u on u.id = o.user_id
