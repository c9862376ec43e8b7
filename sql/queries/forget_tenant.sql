-- Every entry of a tenant (index {entries}_tenant).
DELETE FROM {entries} WHERE tenant = $1
