-- Store a cache entry hash only if it is absent (first write wins, as in Postgres), with a TTL; but never a
-- blocklisted question/answer pair (feedback), nor content read before a forget of the entry or its tenant
-- finished (a write-back queued while the forget ran would bring the entry back). One script: no check can
-- go stale before the write.
-- KEYS[1] entry key; KEYS[2] the entry id's blocklist hash; KEYS[3] entry tombstone; KEYS[4] tenant tombstone.
-- ARGV[1] ttl seconds; ARGV[2] as_of (Unix time the content was read); ARGV[3] answer hash; ARGV[4] tenant;
-- ARGV[5..] field, value pairs. Returns 1 stored, 0 already present, -1 blocked, -2 forgotten.
-- Blocklist fields are '<tenant>/<answer hash>'; an empty tenant blocks the pair for any tenant.
for _, owner in ipairs({'', ARGV[4]}) do
    if redis.call('HEXISTS', KEYS[2], owner .. '/' .. ARGV[3]) == 1 then
        return -1
    end
end
local as_of = tonumber(ARGV[2])
for i = 3, 4 do
    local forgotten_at = redis.call('GET', KEYS[i])
    if forgotten_at and as_of <= tonumber(forgotten_at) then
        return -2
    end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
