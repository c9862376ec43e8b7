-- Rows already in the table, for the HNSW size rule (worker.backfill.rebuild_hnsw).
SELECT count(*) FROM {entries}
