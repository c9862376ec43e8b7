UPDATE dejavu_backfill_chunks
SET done = true, payload = NULL, inserted = $3, updated = $4, present = $5, warmed = $6, blocked = $10,
    embed_ms = $7, total_ms = $8, worker = $9, finished_at = now()
WHERE job_id = $1 AND chunk_no = $2
