-- The total overflows numeric(4,0): 22003, as on PostgreSQL
select sum(amount)::numeric(4,0) as s from orders where user_id < 5
