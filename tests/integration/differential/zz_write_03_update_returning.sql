update orders set note = 'checked' where qty = 0 and status = 'paid' returning id, user_id, note
