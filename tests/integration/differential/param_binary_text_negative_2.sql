-- binary-params
-- params: -17
select id from metrics where user_id = $1::bigint
