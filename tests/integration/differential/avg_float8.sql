select avg(ratio) as a, avg(ratio * 2) as b, count(*) from metrics where ratio <> 'NaN'
