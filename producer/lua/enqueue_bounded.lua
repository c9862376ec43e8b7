-- Enqueue unless the queue is already too deep, in messages or in bytes (backpressure at the producer, in one
-- round trip).
-- KEYS[1] queue list; ARGV[1] limit in messages (0: no limit); ARGV[2] message; ARGV[3] limit in bytes (0 or
-- absent: no limit), against Redis's estimate of the list's memory (MEMORY USAGE, a few elements sampled).
-- Returns the new depth, or minus the current depth when the message was refused (never 0: an empty list is
-- never refused).
local depth = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[1])
if limit > 0 and depth >= limit then
    return -depth
end
local max_bytes = tonumber(ARGV[3] or '0')
if max_bytes > 0 and depth > 0 then
    local used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', 5)
    if used and used + string.len(ARGV[2]) > max_bytes then
        return -depth
    end
end
return redis.call('LPUSH', KEYS[1], ARGV[2])
