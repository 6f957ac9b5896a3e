-- refund: undo the charges of one receipt, at most once per receipt id.
--
-- KEYS[1]   the receipt's key
-- KEYS[2..] per charge its state key (a sliding log: the log and its total),
--           then per guarded rule its guard key
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the receipt id (hex)
-- ARGV[3]   '1' when the receipt is uncertain: its windows come from the
--           trace the charge left, and without a trace the id is voided
-- ARGV[4]   lifetime of a void mark in µs
-- ARGV[5]   m, the number of charges; ARGV[6] g, the number of rules
-- then per charge: algorithm, count n, period p in µs, amount, window
-- then per rule: index of its first and last charge (1-based), guard count
-- and guard period in µs (0 0 when the rule has no guard)
--
-- Returns per charge its outcome (allowance.Outcome: 1 restored, 2 window
-- ended, 3 already refunded, 4 declined, 5 not charged) and the units given
-- back.

local RESTORED, ENDED, ALREADY, DECLINED, NOTCHARGED = 1, 2, 3, 4, 5

local L = lib()
local idiv, fmt, ms, nums, windowstart, fixedroll, slidingroll = L.idiv, L.fmt, L.ms, L.nums, L.windowstart, L.fixedroll, L.slidingroll
local logexpired, emission, gcraset = L.logexpired, L.emission, L.gcraset
local rk = KEYS[1]
local rid = ARGV[2]
local uncertain = ARGV[3] == '1'
local m = tonumber(ARGV[5])
local g = tonumber(ARGV[6])

local function all(outcome)
  local out = {}
  for i = 1, m do
    out[#out + 1] = outcome
    out[#out + 1] = 0
  end
  return out
end

-- The receipt's key holds 'r<until µs>' once it was refunded, 'v<until µs>'
-- once it was voided, both until no charge of it could be refunded any more
-- (as memstore keeps its records), or a charge's trace 't<window> …'.
local mark = redis.call('GET', rk)
if mark then
  local kind = string.sub(mark, 1, 1)
  if kind ~= 't' then
    if now < tonumber(string.sub(mark, 2)) then return all(ALREADY) end
    mark = nil -- a stale mark, as only a test clock sees them
  end
end

local ch = {}
local ki = 2
for i = 1, m do
  local a = 6 + (i - 1) * 5
  local C = {alg = ARGV[a + 1], n = tonumber(ARGV[a + 2]), p = tonumber(ARGV[a + 3]), amount = tonumber(ARGV[a + 4]), window = tonumber(ARGV[a + 5]), key = KEYS[ki]}
  ki = ki + 1
  if C.alg == 'l' then
    C.tkey = KEYS[ki]
    ki = ki + 1
  end
  ch[i] = C
end

if uncertain then
  if not mark then
    -- The charge was never applied (or was denied): void the id so that it
    -- never can be.
    local life = math.max(tonumber(ARGV[4]), 1)
    redis.call('SET', rk, 'v' .. fmt(now + life), 'PX', ms(life))
    return all(NOTCHARGED)
  end
  local w = nums(string.sub(mark, 2))
  for i = 1, m do ch[i].window = w[i] end
end

local function refundone(i, C)
  local n, p, a, window = C.n, C.p, C.amount, C.window
  if C.alg == 'f' or C.alg == 's' then
    local v = redis.call('GET', C.key)
    if not v then return ENDED, 0 end
    if C.alg == 'f' then
      local start, count = fixedroll(v, p)
      if window ~= start then return ENDED, 0 end
      local r = math.min(a, count)
      redis.call('SET', C.key, fmt(start) .. ' ' .. fmt(count - r), 'KEEPTTL')
      return RESTORED, r
    end
    local start, cur, prev = slidingroll(v, p)
    local r
    if window == start then
      r = math.min(a, cur)
      cur = cur - r
    elseif window == start - p then
      r = math.min(a, prev)
      prev = prev - r
    else
      return ENDED, 0
    end
    redis.call('SET', C.key, fmt(start) .. ' ' .. fmt(cur) .. ' ' .. fmt(prev), 'KEEPTTL')
    return RESTORED, r
  elseif C.alg == 'g' then
    local t = emission(n, p)
    local tat0 = tonumber(redis.call('GET', C.key)) or 0
    if now >= window or tat0 <= now then return ENDED, 0 end
    local tat = math.max(tat0 - a * t, now)
    local back = idiv(tat0 - tat + t - 1, t)
    if tat == now then
      redis.call('DEL', C.key)
    else
      gcraset(C.key, tat)
    end
    return RESTORED, math.min(back, a)
  end
  -- sliding log
  local total = tonumber(redis.call('GET', C.tkey))
  if not total then return ENDED, 0 end
  local gone = logexpired(C.key, p)
  if gone > 0 then
    redis.call('ZREMRANGEBYSCORE', C.key, '-inf', fmt(now - p))
    total = total - gone
  end
  local r = 0
  if redis.call('ZREM', C.key, rid .. '.' .. fmt(i - 1) .. '.' .. fmt(a)) == 1 then
    r = a
    total = total - a
  end
  redis.call('SET', C.tkey, fmt(total), 'KEEPTTL')
  if r == 0 then return ENDED, 0 end
  return RESTORED, r
end

local out = {}
local done = false
local life = 1
local gk = ki
for r = 1, g do
  local a = 6 + m * 5 + (r - 1) * 4
  local first, last = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local gn, gp = tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
  local key, start, count
  if gn > 0 then
    key = KEYS[gk]
    gk = gk + 1
    local v = redis.call('GET', key)
    start, count = windowstart(gp), 0
    if v then
      local s = nums(v)
      if s[1] == gn and s[2] == gp and s[3] == start then count = s[4] end
    end
  end
  if gn > 0 and count >= gn then
    for i = first, last do
      out[2 * i - 1] = DECLINED
      out[2 * i] = 0
    end
  else
    done = true
    local restored = false
    for i = first, last do
      local o, u = refundone(i, ch[i])
      out[2 * i - 1] = o
      out[2 * i] = u
      restored = restored or o == RESTORED
    end
    if gn > 0 and restored then
      redis.call('SET', key, fmt(gn) .. ' ' .. fmt(gp) .. ' ' .. fmt(start) .. ' ' .. fmt(count + 1), 'PX', ms(start + gp - now))
    end
  end
end
if done then
  -- Keep the mark while any charge could still be refunded (Receipt.Expiry).
  for i = 1, m do
    local C = ch[i]
    local e = C.window
    if C.alg == 'f' or C.alg == 'l' then e = C.window + C.p elseif C.alg == 's' then e = C.window + 2 * C.p end
    life = math.max(life, e - now)
  end
  redis.call('SET', rk, 'r' .. fmt(now + life), 'PX', ms(life))
end
return out
