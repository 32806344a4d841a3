-- error: 0A000
select avg(ratio::real) from metrics
