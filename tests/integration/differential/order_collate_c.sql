-- ordered
select id, name from users order by name collate "C", id
