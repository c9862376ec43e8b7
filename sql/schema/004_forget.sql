-- Feedback's blocklist: question/answer pairs never stored again, in any embedding profile's table. The entry
-- id names the scope and the question. tenant '' blocks the pair for whichever tenant owns that entry id (an
-- operator's feedback); a tenant's name blocks it for that tenant only (the gateway's: a caller never reaches
-- another tenant's entries, even by naming their ids).
CREATE TABLE IF NOT EXISTS dejavu_blocked (
    entry_id    text NOT NULL,
    answer_hash text NOT NULL,
    tenant      text NOT NULL,
    reason      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entry_id, answer_hash, tenant)
);

-- Backfill: rows of a chunk left out because their question/answer pair is blocklisted.
ALTER TABLE dejavu_backfill_chunks ADD COLUMN IF NOT EXISTS blocked integer;
