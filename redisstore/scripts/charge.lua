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

-- One read of every limit's state. A sliding log has two keys; MGET answers
-- nil for the log itself (a sorted set) and the units for its total.
local st = redis.call('MGET', unpack(KEYS, 2))

-- First pass: every limit's verdict, changing nothing. The reply is filled
-- in place; nv holds per limit the state an allowed charge writes and its
-- lifetime in µs, and the reply's window slot holds where it lands. No
-- table per limit: this is the hot path of every check.
local out = {0}
local nv = {}
local ok = true
local life = 0
local ki = 2
for i = 1, m do
  local a = 4 + (i - 1) * 4
  local alg, n, p, c = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local v = st[ki - 1]
  local allowed, rem, reset, retry, w, ends, val = 0, 0, 0, 0, 0, 0, false
  if alg == 'g' then
    local t = emission(n, p)
    local base = math.max(tonumber(v) or 0, now)
    local tat = base + c * t
    local tau = n * t
    if tat - now > tau then
      rem, reset, retry = idiv(tau - (base - now), t), base - now, tat - tau - now
    else
      allowed, rem, reset = 1, idiv(tau - (tat - now), t), tat - now
      w, ends = tat, tat
      val = fmt(tat)
    end
  elseif alg == 'f' then
    local start, count = fixedroll(v, p, now)
    local e = start + p - now
    reset = e
    if count + c > n then
      rem, retry = n - count, e
    else
      allowed, rem = 1, n - count - c
      w, ends = start, start + p
      val = fmt(start) .. ' ' .. fmt(count + c)
    end
  elseif alg == 's' then
    local start, cur, prev = slidingroll(v, p, now)
    local est = estimate(start, cur, prev, p, now)
    if est + c <= n then
      allowed, rem, reset = 1, n - est - c, slidingreset(start, cur + c, prev, p, now)
      w, ends = start, start + 2 * p
      val = fmt(start) .. ' ' .. fmt(cur + c) .. ' ' .. fmt(prev)
    else
      if cur + c > n then
        local e = p + 1 - muldivceil(n - c + 1, p, cur)
        retry = start + p + e - now
      else
        local e = p + 1 - muldivceil(n - c - cur + 1, p, prev)
        retry = start + e - now
      end
      rem, reset = math.max(0, n - est), slidingreset(start, cur, prev, p, now)
    end
  else -- 'l'
    local key = KEYS[ki]
    ki = ki + 1
    local total = tonumber(st[ki - 1]) or 0
    if total > 0 then total = total - logexpired(key, p, now) end
    if total + c <= n then
      allowed, rem, reset = 1, n - total - c, p
      w = now
      local last = loglast(key)
      if last and last > now then w = last end -- a clock that stepped back
      ends = w + p
      val = fmt(total + c)
    else
      local freed, off = 0, 0
      local lo = '(' .. fmt(now - p)
      while retry == 0 do
        local page = redis.call('ZRANGEBYSCORE', key, lo, '+inf', 'WITHSCORES', 'LIMIT', off, 256)
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
      local last = loglast(key)
      if last then reset = last + p - now end
      rem = n - total
    end
  end
  ki = ki + 1
  local o = 1 + (i - 1) * 5
  out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = allowed, rem, reset, retry, w
  if allowed == 1 then
    nv[2 * i - 1], nv[2 * i] = val, ends - now
    life = math.max(life, ends - now)
  else
    ok = false
  end
end

if not ok then
  local r = refused(redis.call('GET', rk))
  if r then return r end
  for i = 1, m do out[1 + i * 5] = 0 end -- a denied check charges no window
  return out
end

-- Claim the receipt id: record the trace (the windows charged) unless the
-- id has a mark already, in one command: SET NX GET.
if tracettl > 0 then
  local tr
  if m == 1 then
    tr = 't' .. fmt(out[6])
  else
    local ws = {}
    for i = 1, m do ws[i] = fmt(out[1 + i * 5]) end
    tr = 't' .. table.concat(ws, ' ')
  end
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
ki = 2
for i = 1, m do
  local a = 4 + (i - 1) * 4
  local key, ttl = KEYS[ki], ms(nv[2 * i])
  ki = ki + 1
  if ARGV[a + 1] ~= 'l' then
    redis.call('SET', key, nv[2 * i - 1], 'PX', ttl)
  else
    local tkey = KEYS[ki]
    ki = ki + 1
    local p, c, w = tonumber(ARGV[a + 3]), ARGV[a + 4], out[1 + i * 5]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - p))
    redis.call('ZADD', key, fmt(w), rid .. '.' .. fmt(i - 1) .. '.' .. c)
    redis.call('SET', tkey, nv[2 * i - 1], 'PX', ttl)
    redis.call('PEXPIRE', key, ttl)
  end
end
return out
