-- The blocklisted question/answer pairs among a chunk's entry ids, for its tenant: such rows are not loaded.
SELECT entry_id, answer_hash FROM dejavu_blocked WHERE entry_id = ANY($1::text[]) AND tenant IN ('', $2)
