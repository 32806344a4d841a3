-- binary-params
-- params: +12
select id from metrics where user_id = $1::int8
