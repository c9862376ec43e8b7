-- Chunks `--resume` enqueues again.
SELECT chunk_no FROM dejavu_backfill_chunks WHERE job_id = $1 AND NOT done ORDER BY chunk_no
