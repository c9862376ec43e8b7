-- One job's progress, read by the producer's progress bar and summary.
SELECT count(*) FILTER (WHERE done) AS chunks_done,
       coalesce(sum(rows) FILTER (WHERE done), 0) AS rows_done,
       coalesce(sum(inserted), 0) AS inserted,
       coalesce(sum(updated), 0) AS updated,
       coalesce(sum(present), 0) AS present,
       coalesce(sum(warmed), 0) AS warmed,
       coalesce(sum(blocked), 0) AS blocked,
       coalesce(sum(embed_ms), 0) AS embed_ms,
       coalesce(sum(total_ms), 0) AS total_ms
FROM dejavu_backfill_chunks
WHERE job_id = $1
