select g, o.id from generate_series(1, 6) g join orders o on o.user_id = g
