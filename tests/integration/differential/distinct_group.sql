select distinct count(*) from orders group by user_id
