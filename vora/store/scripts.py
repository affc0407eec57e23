"""Lua scripts that make each multi-step session write atomic."""

from __future__ import annotations

# Shared helper: end one session of an identity. Only a session a socket was ever admitted to
# (ADMIT_SOCKET set attachedAt) leaves a tombstone with the reason: only a socket's lease renewal
# ever reads one (vora.ws.leases), and a session that never had a socket has no lease anywhere.
# Returns whether the session had been attached.
_END_SESSION = """
local function end_session(prefix, sid, reason, tombstone_ms)
  local skey = prefix .. ARGV[1] .. sid
  local stored = redis.call('HMGET', skey, 'tokenHash', 'attachedAt')
  if stored[1] then
    redis.call('DEL', prefix .. ARGV[2] .. stored[1])
  end
  redis.call('DEL', skey)
  redis.call('ZREM', prefix .. 'sessions', sid)
  if stored[2] then
    redis.call('SET', prefix .. ARGV[3] .. sid, reason, 'PX', tombstone_ms)
    return true
  end
  return false
end
"""

# Shared helper: a GCRA rate limiter (a token bucket in one key). The key holds the theoretical
# arrival time (ms) of the next request: a limit of N per window lets N through at once, then one
# every window/N ms. rate_wait says how many ms the caller must wait (0: it may go now) and the new
# arrival time to store; rate_take stores it. A refused request stores nothing, so hammering a
# limit never pushes it further away.
_RATE_LIMIT = """
local function rate_wait(key, now, interval, window)
  if interval <= 0 then
    return 0, nil
  end
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local next_tat = tat + interval
  local wait = next_tat - window - now
  if wait > 0 then
    return wait, nil
  end
  return 0, next_tat
end
local function rate_take(key, now, next_tat)
  if next_tat then
    redis.call('SET', key, string.format('%d', next_tat), 'PX', string.format('%d', next_tat - now))
  end
end
local function redis_now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
"""

# KEYS: sessions index, new session hash, new token key, the identity's setup limiter, event stream,
#       sequence counter, and (not on Cluster, where they lie in another slot) the user's set of
#       identities, which must hold the identity, and the user's setup limiter.
# ARGV: session suffix, token suffix, ended suffix, prefix, session id, token hash,
#       subject, ttl (ms), cap per user, tombstone ttl (ms), control channel, identity,
#       cap per identity, limiter window (ms), identity limiter interval (ms, 0: off),
#       user limiter interval (ms, 0: off), then field/value pairs of the session hash.
#       createdAt is Redis' own time.
# Returns {'ok', the newest entry before the session's creation ('' for none), the oldest retained
# entry id ('' for none), the sequence counter ('' when there is none), evicted ids...}: what the
# session's first socket's start position needs, read as ADMIT_SOCKET reads it for a first socket
# (so the position is the one that socket would be told), or {'not-owner'} (nothing written) when the
# set given does not hold the identity, {'rate', 'user' or 'identity', ms to wait} (nothing written)
# when a setup limiter is spent, or {'full'} (nothing written) when the identity holds its cap of
# sessions even after the caller's own oldest ones made room: a user never evicts another's session.
# The terminate notice names only the evicted sessions a socket was ever admitted to.
CREATE_SESSION = (
    _END_SESSION
    + _RATE_LIMIT
    + """
if KEYS[7] and redis.call('SISMEMBER', KEYS[7], ARGV[12]) == 0 then
  return {'not-owner'}
end
local prefix = ARGV[4]
local sid = ARGV[5]
local subject = ARGV[7]
-- Redis' clock, so that createdAt compares with stream ids on any instance.
local now = redis_now_ms()
-- Only a setup by an owner that succeeds counts: nobody else can spend an identity's limit.
local window = tonumber(ARGV[14])
local identity_wait, identity_next = rate_wait(KEYS[4], now, tonumber(ARGV[15]), window)
local user_wait, user_next = 0, nil
if KEYS[8] then
  user_wait, user_next = rate_wait(KEYS[8], now, tonumber(ARGV[16]), window)
end
if user_wait > 0 or identity_wait > 0 then
  if user_wait >= identity_wait then
    return {'rate', 'user', string.format('%d', user_wait)}
  end
  return {'rate', 'identity', string.format('%d', identity_wait)}
end
local ttl = tonumber(ARGV[8])
local cap = tonumber(ARGV[9])
local tombstone_ms = tonumber(ARGV[10])
local identity_cap = tonumber(ARGV[13])
local own = {}
local total = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local owner = redis.call('HGET', prefix .. ARGV[1] .. member, 'sub')
  if not owner then
    redis.call('ZREM', KEYS[1], member)
  else
    total = total + 1
    if owner == subject then own[#own + 1] = member end
  end
end
local evicting = math.max(0, #own + 1 - cap)
if total - evicting + 1 > identity_cap then
  return {'full'}
end
rate_take(KEYS[4], now, identity_next)
if KEYS[8] then
  rate_take(KEYS[8], now, user_next)
end
local fields = {}
for i = 17, #ARGV do fields[#fields + 1] = ARGV[i] end
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
-- Where the session's first socket starts: after the entry before its creation (ADMIT_SOCKET reads
-- the same for a first socket). Keys of another type (a damaged layout) read as empty, as there.
local preceding, oldest, published = '', '', ''
local counter = redis.pcall('GET', KEYS[6])
if type(counter) == 'string' then
  published = counter
end
if redis.call('TYPE', KEYS[5])['ok'] == 'stream' then
  local entry = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1)[1]
  if entry then
    oldest = entry[1]
  end
  entry = redis.call('XREVRANGE', KEYS[5], string.format('(%d-0', now), '-', 'COUNT', 1)[1]
  if entry then
    preceding = entry[1]
  end
end
-- own is in creation order (the index is sorted by it): the caller's oldest go first.
local result = {'ok', preceding, oldest, published}
-- Only a session that ever admitted a socket (ADMIT_SOCKET sets attachedAt, atomically on this slot)
-- can have a socket or an upgrade in flight anywhere: announcing the others would wake every worker
-- of every instance for nothing, once per setup of a client that never connects.
local announced = {}
for i = 1, evicting do
  if end_session(prefix, own[i], 'replaced', tombstone_ms) then
    announced[#announced + 1] = own[i]
  end
  result[#result + 1] = own[i]
end
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
if #announced > 0 then
  redis.call('PUBLISH', ARGV[11], cjson.encode({action = 'terminate', identity = ARGV[12],
    sessions = announced, reason = 'replaced'}))
end
return result
"""
)

# KEYS: the user's set of identities, the user's setup limiter (one slot: the user's hash tag).
# ARGV: identity, limiter window (ms), user limiter interval (ms, 0: off).
# On Cluster, where CREATE_SESSION cannot reach the user's keys: check ownership and count the
# setup against the user's limit in one round trip. Returns {'ok'}, {'not-owner'} or
# {'rate', 'user', ms to wait}; only 'ok' writes.
OWN_AND_COUNT_SETUP = (
    _RATE_LIMIT
    + """
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  return {'not-owner'}
end
local now = redis_now_ms()
local wait, next_tat = rate_wait(KEYS[2], now, tonumber(ARGV[3]), tonumber(ARGV[2]))
if wait > 0 then
  return {'rate', 'user', string.format('%d', wait)}
end
rate_take(KEYS[2], now, next_tat)
return {'ok'}
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
# The entry id is <milliseconds>-<sequence number>: it grows with the sequence even if Redis' clock
# steps back, and a client's lastEventId tells how many events it had. The counter stays a plain
# integer (INCR), which every instance of a rolling upgrade reads and writes alike.
# Redis CPU per event is what publishing costs the deployment, so an event runs INCR, PEXPIRE,
# TIME, XADD, PEXPIRE and PUBLISH, and nothing else while the clock moves forward: XADD itself
# refuses an id at or below the stream's last one, and only then is that id read (the stream's
# last-generated-id, which XADD compares with, even when its entries are gone) and its
# milliseconds reused. Trimming by age (MINID ~, whole stream nodes) runs on every
# AGE_TRIM_EVERY-th sequence number: an entry past the age stays for at most that many publishes
# more than with a trim per event, and a stream without events for the max age still expires whole.
PUBLISH_EVENT = """
local AGE_TRIM_EVERY = 16
local seq = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local id = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], string.format('%d-%d', now_ms, seq),
  'type', ARGV[1], 'seq', seq, 'ts', ARGV[2], 'data', ARGV[3])
if type(id) == 'table' then
  -- Refused: the clock stepped back below the stream's last id (any other error, such as a key
  -- of another type, is raised by the XINFO or the XADD below).
  local ms = now_ms
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      ms = math.max(ms, tonumber(string.match(info[i + 1], '^(%d+)-')))
    end
  end
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], string.format('%d-%d', ms, seq),
    'type', ARGV[1], 'seq', seq, 'ts', ARGV[2], 'data', ARGV[3])
end
if seq % AGE_TRIM_EVERY == 0 then
  local oldest_ms = now_ms - tonumber(ARGV[5])
  if oldest_ms > 0 then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', oldest_ms))
  end
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

# KEYS: WebSocket token key, socket presence set, event stream, sequence counter.
# ARGV: identity prefix, session suffix, socket member separator, now (ms), socket id,
#       lease deadline (ms), presence ttl (ms), most sockets per session, '1' when the client resumes.
# Admit a socket in one round trip: find the token's session, count the session's open sockets
# (on any instance: members whose lease deadline is after now) and record one more, and read
# what the socket's start position needs. Returns {0} when the token or its session is gone,
# {3} when the session already has its most sockets open (nothing recorded for either), else
# {1 for the session's first socket ever or 2 for a later one, session id, the session hash as
# a field/value list, the oldest retained entry id ('' for none), the sequence counter ('' when
# there is none), the newest entry id ('' for none), Redis' time in ms ('' unless resuming), the
# newest entry before the session's creation ('' for none; read only for a first socket that
# does not resume)}. Resuming reads the clock too so that a lastEventId after anything the
# stream ever held shows; the rest also spell the position every socket is told it starts after.
ADMIT_SOCKET = """
local sid = redis.call('GET', KEYS[1])
if not sid then
  return {0}
end
local skey = ARGV[1] .. ARGV[2] .. sid
local fields = redis.call('HGETALL', skey)
if #fields == 0 then
  return {0}
end
local member_prefix = sid .. ARGV[3]
local now = ARGV[4]
local open = 0
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. now, '+inf')) do
  if string.sub(member, 1, #member_prefix) == member_prefix then
    open = open + 1
  end
end
if open >= tonumber(ARGV[8]) then
  return {3}
end
redis.call('ZADD', KEYS[2], ARGV[6], member_prefix .. ARGV[5])
if redis.call('PTTL', KEYS[2]) < tonumber(ARGV[7]) then
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
local attached = 2
if redis.call('HSETNX', skey, 'attachedAt', now) == 1 then
  attached = 1
end
local oldest, published, newest, now_ms, preceding = '', '', '', '', ''
-- Keys of another type (a damaged layout) read as empty: the socket's catch-up then refuses it (1011).
local stream = redis.call('TYPE', KEYS[3])['ok'] == 'stream'
local counter = redis.pcall('GET', KEYS[4])
if type(counter) == 'string' then
  published = counter
end
local entry
if stream then
  entry = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  if entry then
    oldest = entry[1]
  end
  entry = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
  if entry then
    newest = entry[1]
  end
end
if ARGV[9] == '1' then
  -- Redis' clock: the one that stamps the ids of the events published next.
  local time = redis.call('TIME')
  now_ms = tostring(tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000))
elseif attached == 1 and stream then
  -- A first socket starts with the session's creation: the entry before it is where it starts after.
  local created = redis.call('HGET', skey, 'createdAt')
  if created and tonumber(created) and tonumber(created) > 0 then
    entry = redis.call('XREVRANGE', KEYS[3], '(' .. created .. '-0', '-', 'COUNT', 1)[1]
    if entry then
      preceding = entry[1]
    end
  end
end
return {attached, sid, fields, oldest, published, newest, now_ms, preceding}
"""

# KEYS: the WebSocket token's key.
# ARGV: the identity's key prefix, session suffix.
# Returns the session id the token opens, or nil: read as ADMIT_SOCKET reads it (a token whose
# session hash is gone opens nothing), and nothing written.
LIVE_SESSION_ID = """
local sid = redis.call('GET', KEYS[1])
if not sid or redis.call('EXISTS', ARGV[1] .. ARGV[2] .. sid) == 0 then
  return false
end
return sid
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

# KEYS: a session's hold-up hash.
# ARGV: call id, hold-up JSON, key ttl (ms).
# Record a held-up call once (a re-delivered job finds the first record); returns the stored record.
CREATE_HOLDUP = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HGET', KEYS[1], ARGV[1])
"""

# KEYS: a session's hold-up hash.
# ARGV: call id, field name, value, '1' to update a call already taken too.
# Set one field of a held-up call (by default only while nobody has taken it); returns 1 when it was set.
UPDATE_HOLDUP = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
local holdup = cjson.decode(raw)
if holdup.takenBy and ARGV[4] ~= '1' then return 0 end
holdup[ARGV[2]] = tonumber(ARGV[3]) or ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(holdup))
return 1
"""

# KEYS: a session's hold-up hash.
# ARGV: job id, outcome, time (ms), call id ('' for every call of the session), reason ('' for none).
# Take held-up calls for one outcome, exactly once: a call already taken by another job is
# skipped, one taken by this same job (a re-delivery after a crash) is returned again.
# Returns a flat list of call id, hold-up JSON (with outcome, takenBy and takenAt set).
TAKE_HOLDUPS = """
local taken = {}
local calls
if ARGV[4] == '' then
  calls = redis.call('HKEYS', KEYS[1])
else
  calls = {ARGV[4]}
end
for _, call in ipairs(calls) do
  local raw = redis.call('HGET', KEYS[1], call)
  if raw then
    local holdup = cjson.decode(raw)
    if not holdup.takenBy then
      holdup.takenBy = ARGV[1]
      holdup.outcome = ARGV[2]
      holdup.takenAt = tonumber(ARGV[3])
      if ARGV[5] ~= '' then holdup.reason = ARGV[5] end
      raw = cjson.encode(holdup)
      redis.call('HSET', KEYS[1], call, raw)
    end
    if holdup.takenBy == ARGV[1] then
      taken[#taken + 1] = call
      taken[#taken + 1] = raw
    end
  end
end
return taken
"""

# KEYS: the deadline schedule, the job queue.
# ARGV: now (ms), most to move, queue max length.
# Move due hold-up deadlines into the job queue in one step: each is claimed by exactly one
# caller and, once queued, survives the crash of whoever processes it.
QUEUE_DUE_DEADLINES = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'kind', 'deadline', 'holdup', member)
end
return #due
"""

# KEYS: an identity's push counter.
# ARGV: limit, window (ms).
# Count one push in the identity's fixed window; returns 1 when it is within the limit.
COUNT_PUSH = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if count > tonumber(ARGV[1]) then
  return 0
end
return 1
"""

# KEYS: the push job queue.
# ARGV: max length, ttl (ms), then field/value pairs of the job.
# Queue one job; the queue expires a while after its last job, so one nobody consumes (no
# instance has a push gateway) does not stay in Redis. Consumers recreate their group.
ENQUEUE_JOB = """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
"""

# KEYS: the push job queue, the marker of the job's origin (in the queue's slot).
# ARGV: max length, ttl (ms), marker ttl (ms), then field/value pairs of the job.
# Queue one job unless the marker says it was queued already (nil then): a retried publish whose
# first try was stored queues its job once, whether or not the first try's caller heard of it.
ENQUEUE_JOB_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return false end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return id
"""


# Replace a user's identity set (KEYS[1]) with ARGV; returns {added ids..., '|', removed ids...}.
REPLACE_IDENTITIES = """
local wanted = {}
for i = 1, #ARGV do wanted[ARGV[i]] = true end
local removed = {}
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if wanted[member] then wanted[member] = nil else removed[#removed + 1] = member end
end
local reply = {}
for i = 1, #ARGV do
  if wanted[ARGV[i]] then reply[#reply + 1] = ARGV[i]; wanted[ARGV[i]] = nil end
end
if #removed > 0 then redis.call('SREM', KEYS[1], unpack(removed)) end
if #reply > 0 then redis.call('SADD', KEYS[1], unpack(reply)) end
reply[#reply + 1] = '|'
for i = 1, #removed do reply[#reply + 1] = removed[i] end
return reply
"""
