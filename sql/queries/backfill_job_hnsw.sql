-- Remembered with the job, so that whoever finishes it (the producer, or `--resume`) builds the index.
UPDATE dejavu_backfill_jobs SET hnsw_rebuild = $2 WHERE id = $1
