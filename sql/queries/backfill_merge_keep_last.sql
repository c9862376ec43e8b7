-- keep-last: the file's answer replaces a stored one; an unchanged answer is not rewritten, so a re-run
-- updates nothing. xmax = 0 tells a fresh insert from an update. The replaced answer's meta (tool calls, usage,
-- when the LLM made it) goes with it: a backfilled answer is text, of unknown age.
INSERT INTO {entries} AS e
    (id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding)
SELECT DISTINCT ON (id)
    id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding
FROM backfill_stage_{entries}
ORDER BY id
ON CONFLICT (id) DO UPDATE
    SET question = EXCLUDED.question, answer = EXCLUDED.answer, embedding = EXCLUDED.embedding, meta = '{}'
    WHERE (e.question, e.answer) IS DISTINCT FROM (EXCLUDED.question, EXCLUDED.answer)
RETURNING e.id, (e.xmax = 0) AS inserted
