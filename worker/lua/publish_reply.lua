-- Publish a reply at most once per request id, and keep it for a producer that listens late.
-- KEYS[1] replied marker; KEYS[2] reply list; ARGV[1] ttl seconds; ARGV[2] reply JSON.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then
    return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
