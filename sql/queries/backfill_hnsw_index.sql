-- The HNSW index on a profile's table, with the definition to build it again after a bulk load.
SELECT schemaname, indexname, indexdef
FROM pg_indexes
WHERE tablename = $1 AND indexdef LIKE '%USING hnsw%'
LIMIT 1
