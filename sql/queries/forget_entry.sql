-- One entry; with $2, only if it belongs to that tenant. The answers go on the blocklist for feedback.
DELETE FROM {entries} WHERE id = $1 AND ($2::text IS NULL OR tenant = $2) RETURNING tenant, answer
