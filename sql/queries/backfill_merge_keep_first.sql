-- keep-first: a row already stored in the scope stays (whoever stored it: an earlier backfill or the LLM).
INSERT INTO {entries}
    (id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding)
SELECT DISTINCT ON (id)
    id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding
FROM backfill_stage_{entries}
ORDER BY id
ON CONFLICT DO NOTHING
RETURNING id, true AS inserted
