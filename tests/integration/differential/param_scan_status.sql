-- params: paid|3
select id, user_id from orders where status = $1 and qty = $2
