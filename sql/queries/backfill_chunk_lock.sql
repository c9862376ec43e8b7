-- Held until the chunk's transaction ends: a second delivery of the chunk waits, then sees it done.
SELECT done FROM dejavu_backfill_chunks WHERE job_id = $1 AND chunk_no = $2 FOR UPDATE
