-- Enqueue unless the queue is already too deep (backpressure at the producer, in one round trip), and note the
-- message's place in the queue's count, so that a producer can tell later whether it was taken (producer.resend).
-- KEYS[1] queue list, KEYS[2] the queue's enqueued counter, KEYS[3] the request's queued marker;
-- ARGV[1] limit (0: no limit); ARGV[2] message; ARGV[3] marker TTL in seconds.
-- Returns {new depth, place}, or {minus the current depth, 0} when the message was refused.
local depth = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[1])
if limit > 0 and depth >= limit then
    return {-depth, 0}
end
local place = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], place, 'EX', ARGV[3])
return {redis.call('LPUSH', KEYS[1], ARGV[2]), place}
