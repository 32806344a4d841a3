select bool_and(active), bool_or(active) from users
