-- text-error: 0A000
-- Timestamps printed in a non-ISO DateStyle cannot be compared from their text: refused
-- (0A000); binary results carry the value and merge.
-- set: datestyle = 'SQL, DMY'
-- ordered
select id, placed_at from orders order by placed_at, id limit 20
