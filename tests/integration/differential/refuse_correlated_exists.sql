-- error: 0A000
-- A correlated subquery is not analysed for co-location yet; refused, not guessed.
select u.id from users u where exists (select 1 from orders o where o.user_id = u.id and o.qty = 0)
