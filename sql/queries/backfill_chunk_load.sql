SELECT j.profile, j.tenant, j.model, j.system_hash, j.context_hash, j.on_duplicate, c.done, c.payload
FROM dejavu_backfill_chunks c JOIN dejavu_backfill_jobs j ON j.id = c.job_id
WHERE c.job_id = $1 AND c.chunk_no = $2
