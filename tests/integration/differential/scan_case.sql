select id, case when qty > 4 then 'big' else 'small' end as size from orders where user_id % 50 = 0
