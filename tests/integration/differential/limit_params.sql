-- ordered
-- params: 6|4
select id, amount from orders order by amount desc, id, user_id limit $1 offset $2
