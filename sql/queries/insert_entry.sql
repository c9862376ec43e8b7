-- First write wins: a second answer to the same question in the same scope is dropped. A blocklisted
-- question/answer pair (feedback) is not stored at all. $11: the answer's hash; $12: its meta (JSON).
WITH blocked AS (
    SELECT EXISTS (
        SELECT 1 FROM dejavu_blocked WHERE entry_id = $1 AND answer_hash = $11 AND tenant IN ('', $3)
    ) AS yes
), inserted AS (
    INSERT INTO {entries}
        (id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding, meta)
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10::vector, $12
    WHERE NOT (SELECT yes FROM blocked)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT (SELECT yes FROM blocked) AS blocked, EXISTS (SELECT 1 FROM inserted) AS inserted
