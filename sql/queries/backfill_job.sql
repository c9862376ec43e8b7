SELECT id, profile, rows_read, rows_kept, duplicates_in_file, rejected, chunks, hnsw_rebuild, finished_at
FROM dejavu_backfill_jobs
WHERE id = $1
