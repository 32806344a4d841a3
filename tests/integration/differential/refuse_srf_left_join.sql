-- error: 0A000
select g, count(o.id) from generate_series(1, 6) g left join orders o on o.user_id = g group by g
