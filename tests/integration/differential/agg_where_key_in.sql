select count(*), sum(amount) from orders where user_id in (1, 2, 3, 4, 5, 6)
