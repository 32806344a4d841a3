select count(*) from generate_series(1, 400) g left join orders o on o.user_id = g where o.qty in (1, 2)
