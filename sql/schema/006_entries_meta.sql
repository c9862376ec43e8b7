-- The rest of the assistant message besides its text (tool calls, finish reason), what it cost (usage) and when
-- the LLM made it, as JSON (schemas.cache.AnswerMeta). Rows stored before it, and backfilled rows, have '{}'.
ALTER TABLE {entries} ADD COLUMN IF NOT EXISTS meta text NOT NULL DEFAULT '{}';
