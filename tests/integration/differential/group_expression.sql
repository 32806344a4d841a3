select qty % 3 as bucket, count(*) from orders group by qty % 3
