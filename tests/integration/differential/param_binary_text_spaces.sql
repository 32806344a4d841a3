-- binary-params
-- params:  -3 
select id from metrics where user_id = $1::bigint
