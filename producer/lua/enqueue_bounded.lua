-- Enqueue unless the queue is already too deep (backpressure at the producer, in one round trip).
-- KEYS[1] queue list; ARGV[1] limit (0: no limit); ARGV[2] message.
-- Returns the new depth, or minus the current depth when the message was refused.
local depth = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[1])
if limit > 0 and depth >= limit then
    return -depth
end
return redis.call('LPUSH', KEYS[1], ARGV[2])
