-- Held until the forget commits: write-backs and backfill chunks of this tenant wait (lock_writes.sql).
SELECT pg_advisory_xact_lock(1, hashtext($1))
