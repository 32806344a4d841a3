-- error: 0A000
select o1.id, o2.id from orders o1 join orders o2 on o1.id = o2.id + 1
