-- error: 0A000
select v.x, o.id from (values (1), (2), (999)) v(x) left join orders o on o.user_id = v.x
