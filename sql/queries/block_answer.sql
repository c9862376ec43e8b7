INSERT INTO dejavu_blocked (entry_id, answer_hash, tenant, reason) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING
