-- ordered
-- params: {8,15,22}
select id from orders where user_id = any($1::bigint[]) order by id, user_id
