INSERT INTO dejavu_backfill_jobs
    (id, profile, source, tenant, model, system_hash, context_hash, on_duplicate,
     rows_read, rows_kept, duplicates_in_file, rejected, chunks)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
