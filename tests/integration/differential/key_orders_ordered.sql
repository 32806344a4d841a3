-- ordered
select id, amount from orders where user_id = 8 order by id
