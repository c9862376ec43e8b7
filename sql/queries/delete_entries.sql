-- Entries by id (an evaluation deletes what it stored).
DELETE FROM {entries} WHERE id = ANY($1::text[])
