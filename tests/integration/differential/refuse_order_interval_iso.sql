-- error: 0A000
-- Intervals are not decoded by the merge yet ('1 day' = '24:00:00' in PostgreSQL): refused.
-- set: intervalstyle = 'iso_8601'
-- ordered
select id, placed_at - timestamptz '2024-01-01 00:00:00+00' as age from orders order by age, id limit 10
