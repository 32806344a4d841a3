-- error: 0A000
select count(*) from metrics group by doc
