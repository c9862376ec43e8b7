-- Publish a reply at most once per request id, and keep it for a producer that listens late; a chat reply also
-- adds to its tenant's usage counts for the day (worker.reply.usage_counts), once, with the reply.
-- KEYS[1] replied marker; KEYS[2] reply list; KEYS[3] (optional) usage hash; KEYS[4] (optional) the request's taken
-- mark (worker.broker), cleared: an answered request is held by no node.
-- ARGV[1] ttl seconds; ARGV[2] reply JSON; ARGV[3] usage hash ttl seconds; ARGV[4..] field, increment pairs.
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) == false then
    return 0
end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
if KEYS[3] then
    for i = 4, #ARGV, 2 do
        redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
    end
    redis.call('EXPIRE', KEYS[3], ARGV[3])
end
if KEYS[4] then
    redis.call('DEL', KEYS[4])
end
return 1
