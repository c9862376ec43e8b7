-- Admit one request of a tenant under its limits (producer.gateway.limits).
-- KEYS[1] the tenant's requests in flight (sorted set: request id -> the time it stops counting),
-- KEYS[2] its LLM answers this minute, KEYS[3] the tokens they spent this minute.
-- ARGV[1] now, ARGV[2] request id, ARGV[3] when it stops counting (its deadline, if its gateway never says),
-- ARGV[4] max in flight, ARGV[5] max LLM calls per minute, ARGV[6] max tokens per minute (0: no limit).
-- Returns 1: refused, too many in flight; else admitted (and counted in flight when there is such a limit):
-- 0, or 2 (calls) / 3 (tokens) when an LLM limit is used up, so that only a cached answer may be served.
local max_in_flight = tonumber(ARGV[4])
if max_in_flight > 0 then
    -- A gateway that died mid-request never released its own: they stop counting at their deadline.
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
    if redis.call('ZCARD', KEYS[1]) >= max_in_flight then
        return 1
    end
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
    local expiry = math.ceil(tonumber(ARGV[3])) + 1
    redis.call('EXPIREAT', KEYS[1], expiry, 'GT')
    redis.call('EXPIREAT', KEYS[1], expiry, 'NX')
end
local max_calls = tonumber(ARGV[5])
if max_calls > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= max_calls then
    return 2
end
local max_tokens = tonumber(ARGV[6])
if max_tokens > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= max_tokens then
    return 3
end
return 0
