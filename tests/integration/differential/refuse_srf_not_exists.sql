-- error: 0A000
-- One PostgreSQL says 0; each shard alone would say 200 minus its own users.
select count(*) from generate_series(1, 200) g where not exists (select 1 from users u where u.id = g)
