-- charge: one check of one identity, all limits of all its rules, all or
-- nothing.
--
-- KEYS[1]   the receipt's key (trace, refund mark or void mark; see refund.lua)
-- KEYS[2..] per limit its state key; a sliding log has two: the log (a sorted
--           set of "<receipt>.<charge>.<units>" scored by time) and its total
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the receipt id (hex)
-- ARGV[3]   trace lifetime in µs; 0 writes no trace
-- ARGV[4]   m, the number of limits; then per limit: algorithm (f, s, l, g),
--           count n, period p in µs, cost c
--
-- Returns {-1} when the receipt id was voided (nothing charged), {-2} when
-- it was charged before (a retried request; nothing more charged), else
-- {allowed, then per limit: allowed, remaining, resetAfter, retryAfter,
-- window}, all integers (µs for times), as internal/algo computes them.

local now = clock(ARGV[1])
local rk = KEYS[1]
local rid = ARGV[2]
local tracettl = tonumber(ARGV[3])
local m = tonumber(ARGV[4])

-- refused returns the reply for a receipt id that already has a mark, or
-- nil: a void mark 'v<until µs>', the id was voided; a trace 't…' or a
-- refund mark 'r<until µs>', the id was charged already, by a request that a
-- client retried after losing the connection. Marks past their time (only a
-- test clock sees them) do not count.
local function refused(mark)
  if not mark then return nil end
  local kind = string.sub(mark, 1, 1)
  if kind == 't' then return {-2} end
  if now >= tonumber(string.sub(mark, 2)) then return nil end
  if kind == 'v' then return {-1} end
  return {-2}
end

-- First pass: every limit's verdict, changing nothing.
local lim = {}
local ok = true
local ki = 2
for i = 1, m do
  local a = 4 + (i - 1) * 4
  -- Every field in the constructor: the table is sized once.
  local L = {alg = ARGV[a + 1], n = tonumber(ARGV[a + 2]), p = tonumber(ARGV[a + 3]), c = tonumber(ARGV[a + 4]), key = KEYS[ki],
    tkey = false, start = 0, count = 0, cur = 0, prev = 0, tat = 0, total = 0, last = false,
    allowed = 0, rem = 0, reset = 0, retry = 0, w = 0, ends = 0}
  ki = ki + 1
  local n, p, c = L.n, L.p, L.c
  if L.alg == 'f' then
    local start, count = fixedroll(redis.call('GET', L.key), p, now)
    local e = start + p - now
    L.start, L.count = start, count
    if count + c > n then
      L.allowed, L.rem, L.reset, L.retry = 0, n - count, e, e
    else
      L.allowed, L.rem, L.reset, L.retry = 1, n - count - c, e, 0
    end
  elseif L.alg == 's' then
    local start, cur, prev = slidingroll(redis.call('GET', L.key), p, now)
    local est = estimate(start, cur, prev, p, now)
    L.start, L.cur, L.prev = start, cur, prev
    if est + c <= n then
      L.allowed, L.rem, L.reset, L.retry = 1, n - est - c, slidingreset(start, cur + c, prev, p, now), 0
    else
      local retry
      if cur + c > n then
        local e = p + 1 - muldivceil(n - c + 1, p, cur)
        retry = start + p + e - now
      else
        local e = p + 1 - muldivceil(n - c - cur + 1, p, prev)
        retry = start + e - now
      end
      L.allowed, L.rem, L.reset, L.retry = 0, math.max(0, n - est), slidingreset(start, cur, prev, p, now), retry
    end
  elseif L.alg == 'g' then
    local t = emission(n, p)
    local tat0 = tonumber(redis.call('GET', L.key)) or 0
    local base = math.max(tat0, now)
    local tat = base + c * t
    local tau = n * t
    if tat - now > tau then
      L.allowed, L.rem, L.reset, L.retry = 0, idiv(tau - (base - now), t), base - now, tat - tau - now
    else
      L.allowed, L.rem, L.reset, L.retry = 1, idiv(tau - (tat - now), t), tat - now, 0
      L.tat = tat
    end
  else -- 'l'
    L.tkey = KEYS[ki]
    ki = ki + 1
    local total = tonumber(redis.call('GET', L.tkey)) or 0
    if total > 0 then total = total - logexpired(L.key, p, now) end
    L.total = total
    if total + c <= n then
      L.allowed, L.rem, L.reset, L.retry = 1, n - total - c, p, 0
      L.last = loglast(L.key)
    else
      local freed, retry, off = 0, 0, 0
      local lo = '(' .. fmt(now - p)
      while retry == 0 do
        local page = redis.call('ZRANGEBYSCORE', L.key, lo, '+inf', 'WITHSCORES', 'LIMIT', off, 256)
        if #page == 0 then break end
        for j = 1, #page, 2 do
          freed = freed + units(page[j])
          if total - freed + c <= n then
            retry = tonumber(page[j + 1]) + p - now
            break
          end
        end
        off = off + 256
      end
      local last = loglast(L.key)
      local reset = 0
      if last then reset = last + p - now end
      L.allowed, L.rem, L.reset, L.retry = 0, n - total, reset, retry
    end
  end
  ok = ok and L.allowed == 1
  lim[i] = L
end

local out = {0}
local o = 1
if not ok then
  local r = refused(redis.call('GET', rk))
  if r then return r end
  for i = 1, m do
    local L = lim[i]
    out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = L.allowed, L.rem, L.reset, L.retry, 0
    o = o + 5
  end
  return out
end

-- Where each charge lands, and how long the longest lives.
local trace = {}
local life = 0
for i = 1, m do
  local L = lim[i]
  local p = L.p
  if L.alg == 'f' then
    L.w, L.ends = L.start, L.start + p
  elseif L.alg == 's' then
    L.w, L.ends = L.start, L.start + 2 * p
  elseif L.alg == 'g' then
    L.w, L.ends = L.tat, L.tat
  else
    L.w = now
    if L.last and L.last > now then L.w = L.last end -- a clock that stepped back
    L.ends = L.w + p
  end
  life = math.max(life, L.ends - now)
  trace[i] = fmt(L.w)
end

-- Claim the receipt id: record the trace unless the id has a mark already
-- (one command: SET NX GET).
if tracettl > 0 then
  local tr = 't' .. trace[1]
  if m > 1 then tr = 't' .. table.concat(trace, ' ') end
  local ttl = ms(math.min(tracettl, life))
  local prev = redis.call('SET', rk, tr, 'NX', 'PX', ttl, 'GET')
  if prev then
    local r = refused(prev)
    if r then return r end
    redis.call('SET', rk, tr, 'PX', ttl) -- over a stale mark
  end
else
  local r = refused(redis.call('GET', rk))
  if r then return r end
end

-- Second pass: apply every charge. The keys are distinct, so the verdicts of
-- the first pass stand.
out[1] = 1
for i = 1, m do
  local L = lim[i]
  local p, c, w, ttl = L.p, L.c, L.w, ms(L.ends - now)
  if L.alg == 'f' then
    redis.call('SET', L.key, trace[i] .. ' ' .. fmt(L.count + c), 'PX', ttl)
  elseif L.alg == 's' then
    redis.call('SET', L.key, trace[i] .. ' ' .. fmt(L.cur + c) .. ' ' .. fmt(L.prev), 'PX', ttl)
  elseif L.alg == 'g' then
    redis.call('SET', L.key, trace[i], 'PX', ttl)
  else
    redis.call('ZREMRANGEBYSCORE', L.key, '-inf', fmt(now - p))
    redis.call('ZADD', L.key, trace[i], rid .. '.' .. fmt(i - 1) .. '.' .. fmt(c))
    redis.call('SET', L.tkey, fmt(L.total + c), 'PX', ttl)
    redis.call('PEXPIRE', L.key, ttl)
  end
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = 1, L.rem, L.reset, 0, w
  o = o + 5
end
return out
