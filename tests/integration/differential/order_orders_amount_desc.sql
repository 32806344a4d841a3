-- ordered
select id, user_id, amount from orders order by amount desc, id desc, user_id
