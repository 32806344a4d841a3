-- binary-params
-- params: -5
select id, num from metrics where user_id = $1::bigint
