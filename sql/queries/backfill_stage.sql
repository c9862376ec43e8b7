-- Per connection, emptied at every commit: COPY lands here, then one INSERT ... SELECT merges it.
CREATE TEMP TABLE IF NOT EXISTS backfill_stage_{entries} (LIKE {entries} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS
