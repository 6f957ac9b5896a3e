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

-- One read of every limit's state: GET for one key, else MGET. A sliding
-- log has two keys; MGET answers nil for the log itself (a sorted set) and
-- the units for its total.
local one = #KEYS == 2
local st
if one then st = redis.call('GET', KEYS[2]) else st = redis.call('MGET', unpack(KEYS, 2)) end

-- First pass: every limit's verdict, changing nothing. The reply is filled
-- in place (its window slot holds where an allowed charge lands). nv holds
-- per limit what an allowed charge writes: the state, its lifetime in µs,
-- how its expiry is written ('k': kept, the state is of the window the key
-- was made for; 'a': gcraexpiry; false: the lifetime) and the window as
-- text. No table per limit, tables sized once for one limit: this is the hot
-- path of every check.
local out, nv
if m == 1 then
  out, nv = {0, 0, 0, 0, 0, 0}, {false, 0, false, false}
else
  out, nv = {0}, {}
end
local ok = true
local life = 0
local ki = 2
for i = 1, m do
  local a = 4 + (i - 1) * 4
  local alg, n, p, c = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local v = st
  if not one then v = st[ki - 1] end
  local allowed, rem, reset, retry, w, ends, val, kind, ws = 0, 0, 0, 0, 0, 0, false, false, false
  if alg == 'g' then
    local t = emission(n, p)
    local tat0 = tonumber(v)
    local base = math.max(tat0 or 0, now)
    local tat = base + c * t
    local tau = n * t
    if tat - now > tau then
      rem, reset, retry = idiv(tau - (base - now), t), base - now, tat - tau - now
    else
      allowed, rem, reset = 1, idiv(tau - (tat - now), t), tat - now
      w, ends = tat, tat
      val = fmt(tat)
      ws = val
      if servertime then
        kind = 'a'
        if tat0 and gcraexpiry(tat0) == gcraexpiry(tat) then kind = 'k' end
      end
    end
  elseif alg == 'f' then
    local start, count, same = fixedroll(v, p, now)
    local e = start + p - now
    reset = e
    if count + c > n then
      rem, retry = n - count, e
    else
      allowed, rem = 1, n - count - c
      w, ends = start, start + p
      ws = fmt(start)
      val = ws .. ' ' .. fmt(count + c)
      if same then kind = 'k' end
    end
  elseif alg == 's' then
    local start, cur, prev, same = slidingroll(v, p, now)
    local est = estimate(start, cur, prev, p, now)
    if est + c <= n then
      allowed, rem, reset = 1, n - est - c, slidingreset(start, cur + c, prev, p, now)
      w, ends = start, start + 2 * p
      ws = fmt(start)
      val = ws .. ' ' .. fmt(cur + c) .. ' ' .. fmt(prev)
      if same then kind = 'k' end
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
      ws = fmt(w)
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
    local j = 4 * i
    nv[j - 3], nv[j - 2], nv[j - 1], nv[j] = val, ends - now, kind, ws
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
    tr = 't' .. nv[4]
  else
    local wins = {}
    for i = 1, m do wins[i] = nv[4 * i] end
    tr = 't' .. table.concat(wins, ' ')
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
  local j = 4 * i
  local key, val, kind = KEYS[ki], nv[j - 3], nv[j - 1]
  ki = ki + 1
  if ARGV[4 + (i - 1) * 4 + 1] ~= 'l' then
    if kind == 'k' then
      redis.call('SET', key, val, 'KEEPTTL')
    elseif kind == 'a' then
      redis.call('SET', key, val, 'PXAT', gcraexpiry(out[1 + i * 5]))
    else
      redis.call('SET', key, val, 'PX', ms(nv[j - 2]))
    end
  else
    local tkey = KEYS[ki]
    ki = ki + 1
    local a = 4 + (i - 1) * 4
    local ttl = ms(nv[j - 2])
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt(now - tonumber(ARGV[a + 3])))
    redis.call('ZADD', key, nv[j], rid .. '.' .. fmt(i - 1) .. '.' .. ARGV[a + 4])
    redis.call('SET', tkey, val, 'PX', ttl)
    redis.call('PEXPIRE', key, ttl)
  end
end
return out
