-- error: 0A000
select id from orders order by qty fetch first 3 rows with ties
