-- binary-params
-- params: -9
select id from metrics where user_id = $1::int
