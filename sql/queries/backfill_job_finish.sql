UPDATE dejavu_backfill_jobs SET finished_at = coalesce(finished_at, now()) WHERE id = $1
