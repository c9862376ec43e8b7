-- Store a cache entry hash only if it is absent (first write wins, as in Postgres), with a TTL.
-- KEYS[1] entry key; ARGV[1] ttl seconds; ARGV[2..] field, value pairs.
if redis.call('EXISTS', KEYS[1]) == 1 then
    return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
