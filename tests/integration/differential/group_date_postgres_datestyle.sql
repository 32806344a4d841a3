-- text-error: 0A000
-- Dates printed in a non-ISO DateStyle cannot be compared from their text: refused
-- (0A000); binary results carry the value and merge.
-- set: datestyle = 'Postgres, MDY'
-- ordered
select created, count(*) from users group by created order by created limit 10
