"""The Lua scripts the bus runs: each is atomic on the server and one round trip.

* `INSPECT`: for each event, is a result stored, and what was its last error.
* `CLAIM`: ``XAUTOCLAIM`` entries idle past ``claim_idle``, with their delivery counts;
  entries trimmed away meanwhile are acknowledged (there is nothing left to run).
* `COMMIT`: store results (``SET NX``: the first result wins, so an event has exactly one)
  and acknowledge, record errors and release entries for another delivery, dead-letter.
* `TOKEN_BUCKET`: the shared rate limiter of `redis_cache`.
"""

from __future__ import annotations

from typing import Final

__all__ = ["CLAIM", "COMMIT", "INSPECT", "TOKEN_BUCKET"]

INSPECT: Final = """
-- KEYS: result key, error key, for each event.  Returns exists, last error ('' if none).
local out = {}
for i = 1, #KEYS, 2 do
  out[#out + 1] = redis.call('EXISTS', KEYS[i])
  out[#out + 1] = redis.call('GET', KEYS[i + 1]) or ''
end
return out
"""

CLAIM: Final = """
-- KEYS[1]: stream.  ARGV: group, consumer, min idle (ms), cursor, count.
-- Returns cursor, number of lost (trimmed) entries, then id, deliveries, fields per entry.
-- JUSTID does not count a delivery: RETRYCOUNT then sets the count to one more, so the
-- count is exact whichever Redis version answers.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
local res = redis.call('XAUTOCLAIM', stream, group, consumer, ARGV[3], ARGV[4],
                       'COUNT', ARGV[5], 'JUSTID')
local out = {res[1], 0}
for _, id in ipairs(res[2]) do
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  local n = 1
  if pending[1] then n = tonumber(pending[1][4]) + 1 end
  local entry = redis.call('XRANGE', stream, id, id)
  if entry[1] then
    redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', n, 'JUSTID')
    out[#out + 1] = id
    out[#out + 1] = n
    out[#out + 1] = entry[1][2]
  else
    redis.call('XACK', stream, group, id)
    out[2] = out[2] + 1
  end
end
return out
"""

COMMIT: Final = """
-- KEYS: stream, results stream, dead-letter stream, then result key, error key per op.
-- ARGV: group, consumer, ttl (ms), results mode, maxlen, then 5 values per op:
--   kind, entry id, event id, payload, extra
-- done:    store the result (first one wins), acknowledge
-- dead:    the same, and append the dead-letter record (extra: JSON array of fields)
-- ack:     acknowledge only (a result was already stored)
-- retry:   keep the last error (payload); the entry becomes claimable after extra ms
-- release: hand the entry back unrun: idle payload ms, delivery count set to extra
-- Returns the number of results stored.
local stream, results, dead = KEYS[1], KEYS[2], KEYS[3]
local group, consumer, ttl, mode, maxlen = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local stored = 0
local k = 4
for a = 6, #ARGV, 5 do
  local kind, entry, event_id = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  local payload, extra = ARGV[a + 3], ARGV[a + 4]
  local rkey, ekey = KEYS[k], KEYS[k + 1]
  k = k + 2
  if kind == 'done' or kind == 'dead' then
    if redis.call('SET', rkey, payload, 'NX', 'PX', ttl) then
      stored = stored + 1
      if mode == 'stream' then
        redis.call('XADD', results, 'MAXLEN', '~', maxlen, '*',
                   'id', event_id, 'result', payload)
      end
      if kind == 'dead' then
        redis.call('XADD', dead, 'MAXLEN', '~', maxlen, '*', unpack(cjson.decode(extra)))
      end
    end
    redis.call('DEL', ekey)
    redis.pcall('XACK', stream, group, entry)
  elseif kind == 'ack' then
    redis.pcall('XACK', stream, group, entry)
  elseif kind == 'retry' then
    redis.call('SET', ekey, payload, 'PX', ttl)
    redis.pcall('XCLAIM', stream, group, consumer, 0, entry, 'IDLE', extra, 'JUSTID')
  elseif kind == 'release' then
    redis.pcall('XCLAIM', stream, group, consumer, 0, entry, 'IDLE', payload,
                'RETRYCOUNT', extra, 'JUSTID')
  end
end
return stored
"""

TOKEN_BUCKET: Final = """
-- KEYS[1]: bucket hash.  ARGV: capacity, refill per second, tokens wanted.
-- Takes the tokens if the bucket holds them; returns {1, 0} or {0, ms to wait}.
-- The server's clock is the only clock, so workers on skewed machines agree.
local capacity, rate, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil then tokens, at = capacity, now end
if now > at then tokens = math.min(capacity, tokens + (now - at) * rate / 1000) end
at = math.max(at, now)
local ttl = math.ceil(capacity / rate * 1000) + 1000
if tokens >= want then
  redis.call('HSET', KEYS[1], 'tokens', tokens - want, 'at', at)
  redis.call('PEXPIRE', KEYS[1], ttl)
  return {1, 0}
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', at)
redis.call('PEXPIRE', KEYS[1], ttl)
return {0, math.ceil((want - tokens) * 1000 / rate)}
"""
