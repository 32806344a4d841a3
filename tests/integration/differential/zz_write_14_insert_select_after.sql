-- The copied rows, read back by the same keys and in a report
select user_id, count(*), sum(price), min(sku) from order_items where sku like 'COPY-%'
group by user_id order by user_id
