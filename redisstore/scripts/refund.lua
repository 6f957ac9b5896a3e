-- refund: undo the charges of one receipt, at most once per receipt id.
--
-- KEYS[1]   the receipt's key
-- KEYS[2..] per rule: its guard key when it has a guard, then per charge its
--           state key (a sliding log: the log and its total), one key
--           for all the charges of a rule whose limits share one
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the receipt id (hex)
-- ARGV[3]   '1' when the receipt is uncertain: its windows come from the
--           trace the charge left, and without a trace the id is voided
-- ARGV[4]   lifetime of a void mark in µs
-- ARGV[5]   m, the number of charges; ARGV[6] g, the number of rules, 0
--           when no rule has a guard (the charges are then one rule's)
-- then per charge: algorithm, its period p in µs (GCRA: the emission
-- interval, ceil(p/n)), amount, window
-- then per rule: index of its first and last charge (1-based), guard count
-- and guard period in µs (0 0 when the rule has no guard)
--
-- Returns a string of space-separated integers, per charge its outcome
-- (allowance.Outcome: 1 restored, 2 window ended, 3 already refunded,
-- 4 declined, 5 not charged) and the units given back.
--
-- Written for the server's CPU as charge.lua is, after timing variants of
-- it (instructions per call of redis-server): one read of every key (MGET),
-- no table per charge, common.lua's helpers inlined but for the sliding
-- log, and one string for the reply (Redis converts a Lua table element by
-- element). A tonumber costs about as much as a GET's own work in the
-- server, a string.format more, so the script reads no number it does not
-- use (the count n only made GCRA's emission interval, which the caller
-- sends) and writes numbers it was given as the strings they came in: an
-- amount of 1, the units of a charge given back whole, a GCRA window as the
-- refund mark's time.

-- Outcomes: 1 restored, 2 window ended, 3 already refunded, 4 declined,
-- 5 not charged; written as string constants in the reply.
local RESTORED, ENDED, DECLINED = 1, 2, 4

local rk = KEYS[1]
local m = ARGV[5] + 0
local g = 0
if ARGV[6] ~= '0' then g = ARGV[6] + 0 end
local fmod, fmt = math.fmod, string.format
local L -- lib(), made only for the sliding log

-- Every key in one read. MGET answers nil for a sliding log itself (a
-- sorted set) and the units for its total. The keys are distinct, so what
-- is read stays true until this script writes it.
local st = redis.call('MGET', unpack(KEYS))

-- The receipt's key holds 'r<until µs>' once it was refunded, 'v<until µs>'
-- once it was voided, both until no charge of it could be refunded any more
-- (as memstore keeps its records), or a charge's trace 't<window> …'.
local mark = st[1]
if mark then
  local kind = string.sub(mark, 1, 1)
  if kind ~= 't' then
    if now < tonumber(string.sub(mark, 2)) then
      return string.rep('3 0 ', m - 1) .. '3 0' -- already refunded
    end
    mark = nil -- a stale mark, as only a test clock sees them
  end
end

-- An uncertain receipt's windows are the trace's.
local tw
if ARGV[3] == '1' then
  if not mark then
    -- The charge was never applied (or was denied): void the id so that it
    -- never can be. Lifetimes are common.lua's ms, inlined: microseconds
    -- rounded up to a whole second, in milliseconds.
    local life = math.max(ARGV[4] + 0, 1)
    local x = life + slack + 999999
    redis.call('SET', rk, 'v' .. fmt('%d', now + life), 'PX', (x - x % 1000000) / 1000)
    return string.rep('5 0 ', m - 1) .. '5 0' -- not charged
  end
  tw = {}
  for x in string.gmatch(string.sub(mark, 2), '%-?%d+') do tw[#tw + 1] = tonumber(x) end
end

-- Per rule: its guard, then each of its charges undone exactly as
-- internal/algo does. Each charge's part of the reply ("<outcome> <units>")
-- is rep with one charge, else in out. life is how long the refund mark
-- must last: while any charge could still be refunded (Receipt.Expiry);
-- lifes, when set, is now+life as the caller wrote it.
local out
if m > 1 then
  -- A table constructor sizes a table once, where filling {} grows it by
  -- doubling, a reallocation each time: most rules have up to three limits.
  if m <= 3 then out = {0, 0, 0} else out = {} end
end
local rep
local done = false
local life, lifes = 1, nil
local ki = 2
-- The limits of a rule with several (but a sliding log's) share one key,
-- their states joined by '|' (see charge.lua): parts holds the states of
-- the shared key being refunded, pos which is next, dirty whether one
-- changed.
local parts, pos, dirty, nparts -- nparts: how many states the key held
for r = 1, math.max(g, 1) do
  local first, last, gn = 1, m, 0
  local gkey, gp, gstart, gcount, gsame
  if g > 0 then
    local b = 2 + 4 * m + 4 * r
    first, last, gn = ARGV[b + 1] + 0, ARGV[b + 2] + 0, ARGV[b + 3] + 0
  end
  local declined = false
  if gn > 0 then
    gp = ARGV[2 + 4 * m + 4 * r + 4] + 0
    gkey = KEYS[ki]
    local v = st[ki]
    ki = ki + 1
    gstart, gcount, gsame = now - fmod(now, gp), 0, false
    if v then
      local sn, sp, ss, sc = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)')
      if tonumber(sn) == gn and tonumber(sp) == gp and tonumber(ss) == gstart then
        gcount, gsame = tonumber(sc), true
      end
    end
    declined = gcount >= gn
  end
  local restored = false
  for i = first, last do
    local c = 2 + 4 * i
    local alg, p, as = ARGV[c + 1], ARGV[c + 2] + 0, ARGV[c + 3]
    local window
    if tw then window = tw[i] else window = ARGV[c + 4] + 0 end
    local key, v = KEYS[ki], st[ki]
    -- cont: this charge's state follows the one before it in their key;
    -- nextin: the next charge's follows this one's.
    local cont, nextin = alg < 'a', i < m and ARGV[c + 5] < 'a'
    if cont or nextin then
      if cont then
        alg = string.lower(alg)
      else
        parts, pos, dirty = {false, false, false}, 0, false
        local j = 0
        if v then
          for x in string.gmatch(v, '[^|]+') do
            j = j + 1
            parts[j] = x
          end
        end
        nparts = j
      end
      pos = pos + 1
      v = parts[pos]
    end
    if not nextin then ki = ki + 1 end
    local newv -- the state after the refund: a string, false to drop it
    local tkey, tv
    if alg == 'l' then
      tkey, tv = KEYS[ki], st[ki]
      ki = ki + 1
    end
    local e = window
    if alg == 'f' or alg == 'l' then e = window + p elseif alg == 's' then e = window + 2 * p end
    if e - now > life then
      life, lifes = e - now, nil
      if alg == 'g' and not tw then lifes = ARGV[c + 4] end
    end
    local a
    if as == '1' then a = 1 else a = tonumber(as) end
    local o, u = ENDED, 0
    if declined then
      o = DECLINED
    elseif alg == 'g' then
      -- p is the emission interval. The TAT moves back by the charge's
      -- increment, never before now. The key keeps its expiry, the second
      -- after the TAT it held (common.lua's gcraexpiry): it lives no longer
      -- than it would have without the refund, and charges keep it until
      -- the TAT leaves that second.
      local tat0 = tonumber(v) or 0
      if now < window and tat0 > now then
        local tat = tat0 - a * p
        if tat < now then tat = now end
        local x = tat0 - tat + p - 1
        o, u = RESTORED, (x - x % p) / p
        if u > a then u = a end
        if tat == now then newv = false else newv = fmt('%d', tat) end
      end
    -- The windows give back units in the window their state holds, never
    -- rolling it to a later one: a charge that then found the state in its
    -- own window would keep the key's expiry (KEEPTTL), which was set for
    -- the earlier window and ends too soon.
    elseif alg == 'f' then
      if v then
        local start = now - fmod(now, p)
        if window == start then
          local count = 0
          local s, k = string.match(v, '^(%-?%d+) (%-?%d+)')
          if tonumber(s) == start then count = tonumber(k) end
          u = a
          if u > count then u = count end
          if u > 0 then newv = fmt('%d %d', start, count - u) end
          o = RESTORED
        end
      end
    elseif alg == 's' then
      if v then
        local start = now - fmod(now, p)
        if window == start or window == start - p then
          -- The state's current window is start, or start - p before a
          -- charge of start's rolled it; the charge is in either.
          local s, k, q = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+)')
          s, k, q = tonumber(s), tonumber(k), tonumber(q)
          local held = 0
          if window == s then held = k elseif window == s - p then held = q end
          u = a
          if u > held then u = held end
          if u > 0 then
            if window == s then k = k - u else q = q - u end
            newv = fmt('%d %d %d', s, k, q)
          end
          o = RESTORED
        end
      end
    else -- 'l'
      local total = tonumber(tv)
      if total then
        L = L or lib()
        local gone = L.logexpired(key, p)
        if gone > 0 then
          redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt('%d', now - p))
          total = total - gone
        end
        if redis.call('ZREM', key, ARGV[2] .. '.' .. fmt('%d', i - 1) .. '.' .. as) == 1 then
          total = total - a
          o, u = RESTORED, a
        end
        redis.call('SET', tkey, fmt('%d', total), 'KEEPTTL')
      end
    end
    -- Write the state back, keeping the key's expiry: a shared key once,
    -- after its last charge.
    if parts then
      if newv ~= nil then
        parts[pos], dirty = newv or fmt('%d', now), true
      end
      if not nextin then
        if dirty then redis.call('SET', key, table.concat(parts, '|', 1, nparts), 'KEEPTTL') end
        parts = nil
      end
    elseif newv then
      redis.call('SET', key, newv, 'KEEPTTL')
    elseif newv == false then
      redis.call('DEL', key)
    end
    local part
    if o == RESTORED then
      restored = true
      if u == a then part = '1 ' .. as else part = fmt('1 %d', u) end
    elseif o == ENDED then
      part = '2 0'
    else
      part = '4 0'
    end
    if out then out[i] = part else rep = part end
  end
  if not declined then
    done = true
    if gn > 0 and restored then
      -- The guard's key was made with the lifetime of its window: kept
      -- while the window is the same.
      local val = fmt('%d %d %d %d', gn, gp, gstart, gcount + 1)
      if gsame then
        redis.call('SET', gkey, val, 'KEEPTTL')
      else
        local x = gstart + gp - now + slack + 999999
        redis.call('SET', gkey, val, 'PX', (x - x % 1000000) / 1000)
      end
    end
  end
end
if done then
  local x = life + slack + 999999
  redis.call('SET', rk, 'r' .. (lifes or fmt('%d', now + life)), 'PX', (x - x % 1000000) / 1000)
end
if out then return table.concat(out, ' ', 1, m) end
return rep
