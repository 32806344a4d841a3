-- ordered
select user_id, bio from profiles order by bio, user_id
