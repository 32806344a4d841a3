-- error: 0A000
-- Intervals are not decoded by the merge yet ('1 day' = '24:00:00' in PostgreSQL): refused.
select min(placed_at - timestamptz '2024-01-01 00:00:00+00'), max(placed_at - timestamptz '2024-01-01 00:00:00+00') from orders
