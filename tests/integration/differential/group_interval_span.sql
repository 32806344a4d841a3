-- interval '1 day' and '24:00:00' (and '1 mon' and '30 days') are one group
select count(*) as n from metrics group by span
