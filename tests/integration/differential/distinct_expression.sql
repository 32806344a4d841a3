-- ordered
select distinct qty % 4 as r from orders order by r
