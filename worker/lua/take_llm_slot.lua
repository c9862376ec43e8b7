-- Take one of a fixed number of LLM call slots shared by every worker, or report that all are busy.
-- KEYS[1] sorted set of holders scored by lease expiry (ms); ARGV[1] holder token; ARGV[2] lease (ms);
-- ARGV[3] number of slots. Server time, so workers on machines with skewed clocks agree.
-- Returns 1 when the slot was taken, 0 when all are held.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- A holder that died without releasing frees its slot when its lease ends.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
