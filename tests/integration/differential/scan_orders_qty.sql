select id, user_id, qty from orders where qty > 6
