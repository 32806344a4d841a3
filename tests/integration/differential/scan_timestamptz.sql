select id, placed_at from orders where placed_at < timestamptz '2024-01-10 00:00:00+00'
