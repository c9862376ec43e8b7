-- Take up to ARGV[1] more lookup messages off the queue for a batch (worker.batch), each with the bookkeeping kombu
-- does for a message it delivers (worker.broker): its unacked copy, indexed by the time it was taken, and its
-- request's taken mark, in one atomic step: a node that dies at any point leaves each message on the queue or
-- held, never lost. Anything but a lookup due now (another task, a retry's countdown, a message that is not a
-- Kombu envelope) goes back where it was, for kombu to deliver, and ends the batch.
-- KEYS[1] the queue; KEYS[2] the unacked hash; KEYS[3] its index.
-- ARGV[1] how many; ARGV[2] now; ARGV[3] the lookup task's name; ARGV[4] the taken mark's key prefix;
-- ARGV[5] the mark; ARGV[6] its TTL in seconds (0: no mark).
-- Returns the messages taken, in queue order.
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
    local raw = redis.call('RPOP', KEYS[1])
    if not raw then
        break
    end
    local ok, msg = pcall(cjson.decode, raw)
    local headers = ok and type(msg) == 'table' and msg.headers
    local props = ok and type(msg) == 'table' and msg.properties
    local info = type(props) == 'table' and props.delivery_info
    if type(headers) ~= 'table' or type(info) ~= 'table' or headers.task ~= ARGV[3]
        or type(headers.id) ~= 'string' or type(props.delivery_tag) ~= 'string'
        or (headers.eta ~= nil and headers.eta ~= cjson.null) then
        redis.call('RPUSH', KEYS[1], raw)
        break
    end
    redis.call('ZADD', KEYS[3], ARGV[2], props.delivery_tag)
    -- kombu's unacked copy: [message, exchange, routing key], restored to the queue if it is never acked.
    redis.call('HSET', KEYS[2], props.delivery_tag,
        '[' .. raw .. ',' .. cjson.encode(info.exchange or '') .. ',' .. cjson.encode(info.routing_key or '') .. ']')
    if tonumber(ARGV[6]) > 0 then
        redis.call('SET', ARGV[4] .. headers.id, ARGV[5], 'EX', ARGV[6])
    end
    taken[#taken + 1] = raw
end
return taken
