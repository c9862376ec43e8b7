-- The stored rows a chunk warms into Redis: what the table holds after the merge, whoever wrote it.
SELECT id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding
FROM {entries}
WHERE id = ANY($1::text[])
