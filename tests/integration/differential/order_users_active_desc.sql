-- ordered
select id, active from users order by active desc, id
