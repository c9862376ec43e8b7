-- Writers of entries (write-backs, backfill chunks) hold these shared locks until they commit; a forget takes
-- its tenant's or its entry's exclusively (forget_lock_*.sql). So a forget waits for the writes under way and
-- deletes what they wrote, and a write that starts during a forget waits and then sees its tombstone.
-- Class 1 keys a tenant, class 2 an entry id; a hashtext collision only makes one wait for the other.
SELECT pg_advisory_xact_lock_shared(1, hashtext($1))
UNION ALL
SELECT pg_advisory_xact_lock_shared(2, hashtext(id)) FROM unnest($2::text[]) AS id
