select id from orders o(user_id, id) where user_id = 3
