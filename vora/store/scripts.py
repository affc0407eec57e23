"""Lua scripts that make each multi-step session write atomic."""

from __future__ import annotations

# Shared helper: end one session of an identity, leaving a tombstone with the reason.
_END_SESSION = """
local function end_session(prefix, sid, reason, tombstone_ms)
  local skey = prefix .. ARGV[1] .. sid
  local token_hash = redis.call('HGET', skey, 'tokenHash')
  if token_hash then
    redis.call('DEL', prefix .. ARGV[2] .. token_hash)
  end
  redis.call('DEL', skey)
  redis.call('ZREM', prefix .. 'sessions', sid)
  redis.call('SET', prefix .. ARGV[3] .. sid, reason, 'PX', tombstone_ms)
end
"""

# KEYS: sessions index, new session hash, new token key.
# ARGV: session suffix, token suffix, ended suffix, prefix, session id, token hash,
#       (unused), ttl (ms), cap, tombstone ttl (ms), control channel, identity,
#       then field/value pairs of the session hash. createdAt is Redis' own time.
CREATE_SESSION = (
    _END_SESSION
    + """
local prefix = ARGV[4]
local sid = ARGV[5]
-- Redis' clock, so that createdAt compares with stream ids on any instance.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local ttl = tonumber(ARGV[8])
local cap = tonumber(ARGV[9])
local tombstone_ms = tonumber(ARGV[10])
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('EXISTS', prefix .. ARGV[1] .. member) == 0 then
    redis.call('ZREM', KEYS[1], member)
  end
end
local fields = {}
for i = 13, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], 'tokenHash', ARGV[6], 'createdAt', now, unpack(fields))
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('SET', KEYS[3], sid, 'PX', ttl)
-- Strictly increasing scores keep creation order even within one millisecond.
local score = now
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= score then
  score = tonumber(newest[2]) + 1
end
redis.call('ZADD', KEYS[1], score, sid)
local evicted = {}
while redis.call('ZCARD', KEYS[1]) > cap do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  end_session(prefix, oldest, 'replaced', tombstone_ms)
  evicted[#evicted + 1] = oldest
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if #evicted > 0 then
  redis.call('PUBLISH', ARGV[11], cjson.encode({action = 'terminate', identity = ARGV[12],
    sessions = evicted, reason = 'replaced'}))
end
return evicted
"""
)

# KEYS: sessions index.
# ARGV: session suffix, token suffix, ended suffix, prefix, subject ('' for every subject),
#       reason, tombstone ttl (ms), control channel, identity.
END_SUBJECT_SESSIONS = (
    _END_SESSION
    + """
local prefix = ARGV[4]
local ended = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local owner = redis.call('HGET', prefix .. ARGV[1] .. sid, 'sub')
  if owner and (ARGV[5] == '' or owner == ARGV[5]) then
    end_session(prefix, sid, ARGV[6], tonumber(ARGV[7]))
    ended[#ended + 1] = sid
  elseif not owner then
    redis.call('ZREM', KEYS[1], sid)
  end
end
if #ended > 0 then
  redis.call('PUBLISH', ARGV[8], cjson.encode({action = 'terminate', identity = ARGV[9],
    sessions = ended, reason = ARGV[6]}))
end
return ended
"""
)

# KEYS: sessions index.
# ARGV: session suffix, prefix, subject, subscription, control channel, identity.
SET_SUBSCRIPTION = """
local prefix = ARGV[2]
local updated = {}
for _, sid in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local skey = prefix .. ARGV[1] .. sid
  if redis.call('HGET', skey, 'sub') == ARGV[3] then
    redis.call('HSET', skey, 'events', ARGV[4])
    updated[#updated + 1] = sid
  end
end
if #updated > 0 then
  redis.call('PUBLISH', ARGV[5], cjson.encode({action = 'subscription', identity = ARGV[6],
    sessions = updated, events = ARGV[4]}))
end
return updated
"""

# KEYS: event stream, sequence counter.
# ARGV: type, timestamp, data (JSON), max length, max age (ms), sequence ttl (ms),
#       events channel, identity.
PUBLISH_EVENT = """
local seq = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
-- The entry id is <milliseconds>-<sequence number>: it grows with the sequence even if
-- Redis' clock steps back, and a client's lastEventId tells how many events it had.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ms = now_ms
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then
  local newest_ms = tonumber(string.match(newest[1], '^(%d+)-'))
  if newest_ms > ms then ms = newest_ms end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], string.format('%d-%d', ms, seq),
  'type', ARGV[1], 'seq', seq, 'ts', ARGV[2], 'data', ARGV[3])
local oldest_ms = now_ms - tonumber(ARGV[5])
if oldest_ms > 0 then
  redis.call('XTRIM', KEYS[1], 'MINID', '~', tostring(oldest_ms))
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[7], cjson.encode({identity = ARGV[8], id = id, seq = seq,
  type = ARGV[1], ts = ARGV[2], data = ARGV[3]}))
return {id, seq}
"""

# KEYS: sessions index.
# ARGV: session suffix, token suffix, ended suffix, prefix, session id, reason,
#       tombstone ttl (ms), control channel, identity.
END_ONE_SESSION = (
    _END_SESSION
    + """
if redis.call('EXISTS', ARGV[4] .. ARGV[1] .. ARGV[5]) == 0 then
  return 0
end
end_session(ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]))
redis.call('PUBLISH', ARGV[8], cjson.encode({action = 'terminate', identity = ARGV[9],
  sessions = {ARGV[5]}, reason = ARGV[6]}))
return 1
"""
)

# KEYS: session hash, socket presence set.
# ARGV: now (ms), socket member, lease deadline (ms), presence ttl (ms).
# Returns 0 when the session is gone, 1 for its first socket, 2 for a later one; the
# socket is in the presence set exactly when the session was there to attach to.
ATTACH_SOCKET = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[2])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[4]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
if redis.call('HSETNX', KEYS[1], 'attachedAt', ARGV[1]) == 1 then
  return 1
end
return 2
"""

# KEYS: event stream, sequence counter, idempotency record.
# ARGV: those of PUBLISH_EVENT, then the event's fingerprint and the record's retention (ms).
# Returns {id, seq, fingerprint, duplicate}: a key seen within its retention answers what it
# first published (and that event's fingerprint) and publishes nothing.
PUBLISH_EVENT_ONCE = (
    """
local stored = redis.call('HMGET', KEYS[3], 'id', 'seq', 'fp')
if stored[1] then
  return {stored[1], tonumber(stored[2]), stored[3], 1}
end
local function publish()
"""
    + PUBLISH_EVENT
    + """
end
local published = publish()
redis.call('HSET', KEYS[3], 'id', published[1], 'seq', published[2], 'fp', ARGV[9])
redis.call('PEXPIRE', KEYS[3], ARGV[10])
return {published[1], published[2], ARGV[9], 0}
"""
)
