-- Bulk loads (`dejavu backfill`): one row per job and one per chunk of rows, so that a backfill killed
-- mid-way resumes where it stopped and a chunk task that runs twice changes nothing. Shared by every
-- embedding profile; a job names the profile whose table ({entries}) it loads.
CREATE TABLE IF NOT EXISTS dejavu_backfill_jobs (
    id                 text PRIMARY KEY,
    profile            text NOT NULL,
    source             text NOT NULL,
    tenant             text NOT NULL,
    model              text NOT NULL,
    system_hash        text NOT NULL,
    context_hash       text NOT NULL,
    on_duplicate       text NOT NULL CHECK (on_duplicate IN ('keep-first', 'keep-last')),
    rows_read          integer NOT NULL,
    rows_kept          integer NOT NULL,
    duplicates_in_file integer NOT NULL,
    rejected           integer NOT NULL,
    chunks             integer NOT NULL,
    -- The HNSW index definition dropped before the load, to be built after it; NULL: kept and inserted into.
    hnsw_rebuild       text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    finished_at        timestamptz
);

CREATE TABLE IF NOT EXISTS dejavu_backfill_chunks (
    job_id      text NOT NULL REFERENCES dejavu_backfill_jobs (id) ON DELETE CASCADE,
    chunk_no    integer NOT NULL,
    rows        integer NOT NULL,
    -- The rows to load ([{line, id, q, a, warm}]); cleared once done, so a finished job keeps only counts.
    payload     jsonb,
    done        boolean NOT NULL DEFAULT false,
    inserted    integer,
    updated     integer,
    present     integer,
    warmed      integer,
    embed_ms    real,
    total_ms    real,
    worker      text,
    finished_at timestamptz,
    PRIMARY KEY (job_id, chunk_no)
);

CREATE INDEX IF NOT EXISTS dejavu_backfill_chunks_pending ON dejavu_backfill_chunks (job_id) WHERE NOT done;
