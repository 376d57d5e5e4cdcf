-- cluster.lua -- every step of agentwire's cluster mode that touches a
-- user's stream, run on the user's shard as one atomic script (EVALSHA).
-- ARGV[1] names the operation; the others are described at each one.
--
-- Keys of user U (N is the byte length of U, so no user id can make another
-- user's key): aw:N:U:s  stream (hash: e epoch, q seq, r era)
--                 aw:N:U:h  retained events (list of "SEQ TS JSON", oldest first)
--                 aw:N:U:c  channel ("E SEQ EPOCH JSON" events, "C ..." controls)
--                 aw:N:U:i:KEY  idempotency receipt "SEQ EPOCH EVENT_ID"
--                 aw:N:U:r:RUN  run (hash: o open, t thread, n owner node, k open tools, e events, s start)
--                 aw:N:U:p  presence (hash: node -> "EXPIRY_MS JSON_ARRAY")
--                 aw:N:U:k  tickets (zset: ticket -> expiry)
-- Shard-wide:     aw:leases  open runs (zset: "U\nRUN" -> deadline)
--                 aw:t:ID    ticket ("USER\nTOKEN_EXPIRY_MS\nEXPIRY_MS")
local op = ARGV[1]

local function key(u, suffix)
  return 'aw:' .. #u .. ':' .. u .. ':' .. suffix
end

-- A JSON string as the nodes write one: ids hold no control characters, so
-- only the quote and the backslash are escaped (cjson would also escape '/').
local function jstr(s)
  return '"' .. string.gsub(s, '["\\]', '\\%0') .. '"'
end

-- The user's stream, started (or started again) when it does not exist or
-- was written before a restart of a non-durable server (era differs).
local function stream(u, era, cand, sttl)
  local sk = key(u, 's')
  local st = redis.call('HMGET', sk, 'e', 'q', 'r')
  if not st[1] or (era ~= '' and st[3] ~= era) then
    redis.call('DEL', key(u, 'h'))
    redis.call('HSET', sk, 'e', cand, 'q', 0, 'r', era)
    st = {cand, '0', era}
  end
  redis.call('PEXPIRE', sk, sttl)
  return st[1], tonumber(st[2])
end

-- Drops retained events past the length and older than the ttl.
local function trim(u, now, hmax, httl)
  local hk = key(u, 'h')
  local n = redis.call('LLEN', hk)
  if n > hmax then
    redis.call('LTRIM', hk, n - hmax, -1)
  end
  for _ = 1, 64 do
    local first = redis.call('LINDEX', hk, 0)
    if not first then break end
    local ts = tonumber(string.match(first, '^%d+ (%d+) '))
    if ts and ts >= now - httl then break end
    redis.call('LPOP', hk)
  end
end

-- Stamps, appends and publishes one event whose fields (without the
-- envelope) are the JSON object body. Returns seq, epoch.
local function append(u, era, cand, now, hmax, httl, sttl, eid, body)
  local epoch, seq = stream(u, era, cand, sttl)
  seq = seq + 1
  redis.call('HSET', key(u, 's'), 'q', seq)
  local head = '{"seq":' .. seq .. ',"epoch":"' .. epoch .. '","event_id":"' .. eid ..
               '","timestamp":' .. now .. ',"user_id":' .. jstr(u)
  local json
  if body == '{}' then json = head .. '}' else json = head .. ',' .. string.sub(body, 2) end
  local hk = key(u, 'h')
  redis.call('RPUSH', hk, seq .. ' ' .. now .. ' ' .. json)
  redis.call('PEXPIRE', hk, sttl)
  trim(u, now, hmax, httl)
  redis.call('PUBLISH', key(u, 'c'), 'E ' .. seq .. ' ' .. epoch .. ' ' .. json)
  return seq, epoch
end

-- The run-order gate (PROTOCOL section 2): nil when the event may go, else
-- the reason. `after` is called once the event is published.
local function lease_deadline(owner, now, lease, idle, started, rtimeout)
  local d = now + (owner ~= '' and lease or idle)
  return math.min(d, started + rtimeout)
end

local function gate(u, run, typ, thread, tool, owner, now, lease, idle, rtimeout, keep)
  local rk = key(u, 'r:' .. run)
  local lk = u .. '\n' .. run
  if typ == 'agent_started' then
    if redis.call('EXISTS', rk) == 1 then
      return 'run_id ' .. run .. ' was already used'
    end
    redis.call('HSET', rk, 'o', 1, 't', thread, 'n', owner, 'k', '[]', 'e', 1, 's', now)
    redis.call('PEXPIRE', rk, keep)
    redis.call('ZADD', 'aw:leases', lease_deadline(owner, now, lease, idle, now, rtimeout), lk)
    return nil
  end
  local st = redis.call('HMGET', rk, 'o', 't', 'k', 'n', 's')
  if st[1] ~= '1' then
    return typ .. ': no open run ' .. run
  end
  if thread ~= st[2] then
    return 'run ' .. run .. ' belongs to thread ' .. st[2]
  end
  if typ == 'tool_executing' or typ == 'tool_completed' then
    local tools = cjson.decode(st[3])
    if typ == 'tool_executing' then
      if #tools >= 64 then return 'run ' .. run .. ' has too many open tools' end
      tools[#tools + 1] = tool
    else
      local found = false
      for i = #tools, 1, -1 do
        if tools[i] == tool then
          table.remove(tools, i)
          found = true
          break
        end
      end
      if not found then
        return 'tool_completed answers no open tool_executing of ' .. tool
      end
    end
    redis.call('HSET', rk, 'k', #tools == 0 and '[]' or cjson.encode(tools))
  end
  redis.call('HINCRBY', rk, 'e', 1)
  if typ == 'agent_completed' then
    redis.call('HSET', rk, 'o', 0)
    redis.call('ZREM', 'aw:leases', lk)
  else
    redis.call('ZADD', 'aw:leases', 'XX',
               lease_deadline(st[4], now, lease, idle, tonumber(st[5]), rtimeout), lk)
  end
  return nil, st[4]
end

-- After a run closed: its owner node (if any) stops the agent.
local function closed(u, typ, run, owner)
  if typ == 'agent_completed' and owner and owner ~= '' then
    redis.call('PUBLISH', key(u, 'c'), 'C stop ' .. run)
  end
end

-- One event: ARGV[i .. i+8] are user, idempotency key or '', event id,
-- body, run id or '', type, thread, tool, owner node or ''; c the common
-- arguments.
local function pub1(i, c)
  local u, idem, eid, body = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local run, typ, thread, tool, owner = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7],
                                        ARGV[i + 8]
  local ik
  if idem ~= '' then
    ik = key(u, 'i:' .. idem)
    local prev = redis.call('GET', ik)
    if prev then
      local pseq, pepoch, peid = string.match(prev, '^(%d+) (%S+) (%S+)$')
      local cur = redis.call('HGET', key(u, 's'), 'e')
      if pseq and pepoch == cur then return {1, tonumber(pseq), pepoch, peid} end
    end
  end
  local run_owner
  if run ~= '' then
    local why
    why, run_owner = gate(u, run, typ, thread, tool, owner, c.now, c.lease, c.idle, c.rtimeout,
                          c.keep)
    if why then return {2, why} end
  end
  local seq, epoch = append(u, c.era, c.cand, c.now, c.hmax, c.httl, c.sttl, eid, body)
  if run ~= '' then closed(u, typ, run, run_owner) end
  if ik then redis.call('SET', ik, seq .. ' ' .. epoch .. ' ' .. eid, 'PX', c.ittl) end
  return {0, seq, epoch, eid}
end

if op == 'pub' then
  -- Publishes events in order (a batch's events of this shard): common
  -- arguments 2 era, 3 epoch candidate, 4 now, 5 history size, 6 history
  -- ttl, 7 stream ttl, 8 idempotency ttl, 9 lease, 10 run idle timeout,
  -- 11 run timeout, 12 run record ttl; then nine per event (pub1). Returns
  -- one answer per event: {0|1, seq, epoch, event id} or {2, why}.
  local c = {era = ARGV[2], cand = ARGV[3], now = tonumber(ARGV[4]), hmax = tonumber(ARGV[5]),
             httl = tonumber(ARGV[6]), sttl = ARGV[7], ittl = ARGV[8],
             lease = tonumber(ARGV[9]), idle = tonumber(ARGV[10]),
             rtimeout = tonumber(ARGV[11]), keep = ARGV[12]}
  local out = {}
  for i = 13, #ARGV - 8, 9 do out[#out + 1] = pub1(i, c) end
  return out
end

-- The server's own agent_completed for an open run (stop_agent, an agent
-- that ended without one, a dead owner, a timeout). {3} when not open.
local function finish(u, run, status, err, era, cand, now, hmax, httl, sttl, eid)
  local rk = key(u, 'r:' .. run)
  local st = redis.call('HMGET', rk, 'o', 't', 'n')
  redis.call('ZREM', 'aw:leases', u .. '\n' .. run)
  if st[1] ~= '1' then return {3} end
  redis.call('HSET', rk, 'o', 0)
  redis.call('HINCRBY', rk, 'e', 1)
  local body = '{"type":"agent_completed","thread_id":' .. cjson.encode(st[2]) ..
               ',"run_id":' .. cjson.encode(run) .. ',"status":' .. cjson.encode(status) ..
               ',"final_response":"","error":' .. cjson.encode(err) .. '}'
  local seq, epoch = append(u, era, cand, now, hmax, httl, sttl, eid, body)
  closed(u, 'agent_completed', run, st[3])
  return {0, seq, epoch, eid}
end

if op == 'fin' then
  -- 2 user, 3 run, 4 status, 5 error, 6 era, 7 epoch candidate, 8 now,
  -- 9 history size, 10 history ttl, 11 stream ttl, 12 event id
  return finish(ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], tonumber(ARGV[8]),
                tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11], ARGV[12])
end

if op == 'isopen' then
  -- 2 user, 3 run: 1 when the run is open.
  return redis.call('HGET', key(ARGV[2], 'r:' .. ARGV[3]), 'o') == '1' and 1 or 0
end

if op == 'reap' then
  -- Runs past their deadline: the owner stopped renewing (dead node), an
  -- API run went idle, or any run took too long. 2 era, 3 epoch candidate,
  -- 4 now, 5 history size, 6 history ttl, 7 stream ttl, 8 event id prefix,
  -- 9 run timeout. Returns the number ended.
  local now = tonumber(ARGV[4])
  local due = redis.call('ZRANGEBYSCORE', 'aw:leases', '-inf', now, 'LIMIT', 0, 16)
  local n = 0
  for i, lk in ipairs(due) do
    local u, run = string.match(lk, '^(.*)\n(.*)$')
    local rk = key(u, 'r:' .. run)
    local st = redis.call('HMGET', rk, 'n', 's')
    local status, err = 'error', 'the node running the agent stopped answering'
    if st[2] and now - tonumber(st[2]) >= tonumber(ARGV[9]) then
      status, err = 'timeout', 'the run took longer than ' .. ARGV[9] .. ' ms'
    elseif not st[1] or st[1] == '' then
      status, err = 'timeout', 'no event for the run idle timeout'
    end
    local r = finish(u, run, status, err, ARGV[2], ARGV[3], now, tonumber(ARGV[5]),
                     tonumber(ARGV[6]), ARGV[7], ARGV[8] .. string.format('%04x', i))
    if r[1] == 0 then n = n + 1 end
  end
  return n
end

if op == 'renew' then
  -- An owner's open runs: 2 now, 3 lease, 4 run timeout, then user, run pairs.
  local now, lease, rtimeout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
  for i = 5, #ARGV - 1, 2 do
    local s = redis.call('HGET', key(ARGV[i], 'r:' .. ARGV[i + 1]), 's')
    if s then
      redis.call('ZADD', 'aw:leases', 'XX', math.min(now + lease, tonumber(s) + rtimeout),
                 ARGV[i] .. '\n' .. ARGV[i + 1])
    end
  end
  return 0
end

if op == 'range' then
  -- The stream and its retained events from a seq on: 2 user, 3 era,
  -- 4 epoch candidate, 5 now, 6 from seq, 7 history size, 8 history ttl,
  -- 9 stream ttl, 10 'peek' to read without starting a stream. Returns
  -- {epoch, seq, "SEQ TS JSON"...}, or {''} for no stream when peeking.
  local u, now = ARGV[2], tonumber(ARGV[5])
  if ARGV[10] == 'peek' then
    local st = redis.call('HMGET', key(u, 's'), 'e', 'r')
    if not st[1] or (ARGV[3] ~= '' and st[2] ~= ARGV[3]) then return {''} end
  end
  local epoch, seq = stream(u, ARGV[3], ARGV[4], ARGV[9])
  trim(u, now, tonumber(ARGV[7]), tonumber(ARGV[8]))
  local hk = key(u, 'h')
  local n = redis.call('LLEN', hk)
  local from = tonumber(ARGV[6])
  local first = seq - n + 1
  local out = {epoch, seq}
  if n > 0 and from <= seq then
    local start = from - first
    if start < 0 then start = 0 end
    for _, e in ipairs(redis.call('LRANGE', hk, start, -1)) do out[#out + 1] = e end
  end
  return out
end

if op == 'pres' then
  -- This node's connections of a user: 2 user, 3 node, 4 expiry, 5 JSON
  -- array ('' when none are left), 6 presence ttl, 7 stream ttl.
  local u = ARGV[2]
  local pk = key(u, 'p')
  if ARGV[5] == '' then
    redis.call('HDEL', pk, ARGV[3])
  else
    redis.call('HSET', pk, ARGV[3], ARGV[4] .. ' ' .. ARGV[5])
    redis.call('PEXPIRE', pk, ARGV[6])
    redis.call('PEXPIRE', key(u, 's'), ARGV[7])
    redis.call('PEXPIRE', key(u, 'h'), ARGV[7])
  end
  return 0
end

-- Live presence entries of a user: {node, json...}; expired ones are removed.
local function present(u, now)
  local pk = key(u, 'p')
  local all = redis.call('HGETALL', pk)
  local out = {}
  for i = 1, #all, 2 do
    local exp, json = string.match(all[i + 1], '^(%d+) (.*)$')
    if exp and tonumber(exp) > now then
      out[#out + 1] = json
    else
      redis.call('HDEL', pk, all[i])
    end
  end
  return out
end

if op == 'conns' then
  -- 2 user, 3 now: the JSON arrays of every live node.
  return present(ARGV[2], tonumber(ARGV[3]))
end

if op == 'kick' then
  -- Closes the user's connections on every node: 2 user, 3 now. Returns
  -- the JSON arrays of the connections being closed.
  local out = present(ARGV[2], tonumber(ARGV[3]))
  redis.call('PUBLISH', key(ARGV[2], 'c'), 'C kick')
  return out
end

if op == 'tkt' then
  -- Issues a ticket: 2 user, 3 ticket id, 4 ttl, 5 token expiry, 6 now,
  -- 7 most unused tickets per user. 1, or 0 when the user holds the most.
  local u, now = ARGV[2], tonumber(ARGV[6])
  local kk = key(u, 'k')
  redis.call('ZREMRANGEBYSCORE', kk, '-inf', now)
  if redis.call('ZCARD', kk) >= tonumber(ARGV[7]) then return 0 end
  redis.call('ZADD', kk, now + tonumber(ARGV[4]), ARGV[3])
  redis.call('PEXPIRE', kk, ARGV[4])
  redis.call('SET', 'aw:t:' .. ARGV[3], u .. '\n' .. ARGV[5] .. '\n' .. (now + tonumber(ARGV[4])),
             'PX', ARGV[4])
  return 1
end


if op == 'peekt' then
  -- Reads a ticket without spending it: 2 ticket id. Its value, or nil.
  return redis.call('GET', 'aw:t:' .. ARGV[2])
end

if op == 'take' then
  -- Spends a ticket: 2 ticket id. "USER\nTOKEN_EXPIRY\nTICKET_EXPIRY", or nil.
  local v = redis.call('GET', 'aw:t:' .. ARGV[2])
  if not v then return false end
  redis.call('DEL', 'aw:t:' .. ARGV[2])
  local u = string.match(v, '^(.*)\n')
  if u then redis.call('ZREM', key(u, 'k'), ARGV[2]) end
  return v
end

return redis.error_reply('agentwire: unknown operation ' .. tostring(op))
