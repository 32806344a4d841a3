-- ordered
-- params: 5
select id, amount from orders where qty = $1 order by amount, id, user_id
