-- binary-params
-- params: -1|-2|-20
select id from metrics where user_id in ($1::bigint, $2::bigint, $3::bigint)
