-- One table per embedding profile ({entries}), since vectors of different models never compare.
-- The entry id is derived from (scope_id, question_hash), so storing the same question twice in one
-- scope is one row; the UNIQUE constraint states that rule where the database enforces it.
CREATE TABLE IF NOT EXISTS {entries} (
    id            text PRIMARY KEY,
    scope_id      text NOT NULL,
    tenant        text NOT NULL,
    model         text NOT NULL,
    system_hash   text NOT NULL,
    context_hash  text NOT NULL,
    question      text NOT NULL,
    question_hash text NOT NULL,
    answer        text NOT NULL,
    embedding     vector({dim}) NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (scope_id, question_hash)
);

-- Its HNSW index: 005_entries_hnsw.sql, after the backfill jobs table it depends on.

CREATE INDEX IF NOT EXISTS {entries}_tenant ON {entries} (tenant);
