-- Nearest stored question in one scope; the similarity threshold is applied by the caller, so the
-- ORDER BY stays an index scan (a distance bound in WHERE would defeat the HNSW index).
SELECT id, question, answer, embedding, meta, 1 - (embedding <=> $1) AS similarity
FROM {entries}
WHERE scope_id = $2
ORDER BY embedding <=> $1
LIMIT 1
