-- The HNSW index on {entries}, except while a backfill that dropped it, to build it once after its load,
-- is unfinished (dejavu_backfill_jobs.hnsw_rebuild): a worker touching Postgres for the first time mid-load
-- would otherwise build it back at once, every row of the load would then be inserted into the graph, and
-- the build after the load would find nothing to do (seen in make bench: 273 instead of ~400 rows/s).
-- A job killed and not resumed leaves the table without the index until `dejavu backfill --resume` ends it.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM dejavu_backfill_jobs
        WHERE profile = '{profile}' AND hnsw_rebuild IS NOT NULL AND finished_at IS NULL
    ) THEN
        CREATE INDEX IF NOT EXISTS {entries}_embedding_hnsw
            ON {entries} USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 128);
    END IF;
END
$$;
