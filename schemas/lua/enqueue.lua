-- Enqueue a task message unless the queue is already too deep, in messages or in bytes (backpressure, in one round
-- trip), numbering it in the queue's count and marking the request queued there, so that its producer can tell
-- later whether it was taken off the queue (producer.resend). Producers enqueue requests with it, lookup nodes hand
-- misses on to the LLM queue.
-- KEYS[1] queue list; KEYS[2] the queue's enqueued counter; KEYS[3] the request's queued marker;
-- KEYS[4] (optional) the request's taken mark, cleared: the node that held it has handed it on.
-- ARGV[1] limit in messages (0: no limit); ARGV[2] message; ARGV[3] marker TTL in seconds; ARGV[4] limit in bytes
-- (0: no limit), against Redis's estimate of the list's memory (MEMORY USAGE, a few elements sampled).
-- Returns {new depth, place}, or {minus the current depth, 0} when the message was refused (an empty list never is).
local depth = redis.call('LLEN', KEYS[1])
local limit = tonumber(ARGV[1])
if limit > 0 and depth >= limit then
    return {-depth, 0}
end
local max_bytes = tonumber(ARGV[4])
if max_bytes > 0 and depth > 0 then
    local used = redis.call('MEMORY', 'USAGE', KEYS[1], 'SAMPLES', 5)
    if used and used + string.len(ARGV[2]) > max_bytes then
        return {-depth, 0}
    end
end
local place = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[3], KEYS[1] .. ':' .. place, 'EX', ARGV[3])
if KEYS[4] then
    redis.call('DEL', KEYS[4])
end
return {redis.call('LPUSH', KEYS[1], ARGV[2]), place}
