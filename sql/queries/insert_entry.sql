-- First write wins: a second answer to the same question in the same scope is dropped.
INSERT INTO {entries}
    (id, scope_id, tenant, model, system_hash, context_hash, question, question_hash, answer, embedding)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING
