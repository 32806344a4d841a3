select status from orders group by status having count(distinct user_id) > 10
