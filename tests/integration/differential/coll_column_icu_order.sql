-- error: 0A000
select user_id, handle from profiles order by handle, user_id
