-- Held until the forget commits: write-backs of this entry wait (lock_writes.sql).
SELECT pg_advisory_xact_lock(2, hashtext($1))
