-- charge: one check of one identity, all limits of all its rules, all or
-- nothing.
--
-- KEYS[1]   the receipt's key (trace, refund mark or void mark; see refund.lua)
-- KEYS[2..] per limit its state key; a sliding log has two: the log (a sorted
--           set of "<receipt>.<charge>.<units>" scored by time) and its total
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the receipt id (hex)
-- ARGV[3]   trace lifetime in µs; 0 writes no trace
-- ARGV[4..] per limit (m of them, as many as the arguments say): algorithm
--           (f, s, l, g), count n, period p in µs, cost c
--
-- Returns a string of space-separated integers (µs for times), as
-- internal/algo computes them: "-1" when the receipt id was voided (nothing
-- charged), "-2" when it was charged before (a retried request; nothing more
-- charged); for an allowed check 1, then per limit its remaining and
-- resetAfter (every limit allowed it, with no retryAfter), then per limit
-- the window charged, or, when every limit is GCRA's, 3, now as seconds
-- and microseconds (TIME's two numbers, or 0 and the test clock), then per
-- limit the window charged (its TAT); for a denied check 0, then per limit:
-- allowed, remaining, resetAfter, retryAfter, the remaining and resetAfter
-- being the limit's now, nothing charged, as peek.lua reports them (for the
-- limits that would have allowed the check too).
--
-- One string, because Redis turns a Lua table into a reply element by
-- element, which cost more than the rest of the script's Lua; and no more
-- numbers than needed, because writing a number costs about 0.1 µs.

local rk = KEYS[1]
local rid = ARGV[2]
local tracettl = ARGV[3] + 0
-- m from the arguments' count rather than an argument of its own: every
-- argument costs the server about 1k instructions to pass.
local m = (#ARGV - 3) / 4
local fmod, fmt = math.fmod, string.format
local L -- lib(), made only on the paths that need it

-- One read of every limit's state: GET for one key, else MGET. A sliding
-- log has two keys; MGET answers nil for the log itself (a sorted set) and
-- the units for its total. The limits of a rule with several (but a sliding
-- log's) share one key, their states joined by '|' in the rule's order: the
-- algorithm letter of every limit after the first is in upper case.
local multi = m > 1
local one = #KEYS == 2
local st
if one then st = redis.call('GET', KEYS[2]) else st = redis.call('MGET', unpack(KEYS, 2)) end
local parts, part -- the states in the shared key being read, and which is next

-- First pass: every limit's verdict, changing nothing. An allowed charge
-- writes val, the state, for life µs, its expiry written as kind says ('k':
-- kept, the state is of the window the key was made for; 'a': at the second
-- after the GCRA TAT w, gcraexpiry; false: for life), and lands in window
-- ws (text). With one limit they stay in these locals; with several, nv
-- holds them per limit, rr each limit's remaining and resetAfter, and den
-- the retryAfter of the limits that denied. This is
-- the hot path of every check: no table for one limit, and common.lua's
-- helpers inlined for GCRA and the windows (lib() is made only for the
-- sliding log and products past 2^53).
local nv, rr, den
if multi then
  -- A table constructor sizes a table once, where filling {} grows it by
  -- doubling, a reallocation each time: most rules have up to three limits.
  if m <= 3 then
    nv, rr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}
  else
    nv, rr = {}, {}
  end
end
local ok = true
local allg = true -- every limit is GCRA's: an allowed check's reply is then short
local life = 0
local ki = 2
local allowed, rem, reset, retry, w, val, lf, kind, ws
local c, ralg -- the cost and the algorithm (lower case), the same for every limit of a rule
for i = 1, m do
  local a = 4 * i - 1
  local alg, n, p = ARGV[a + 1], ARGV[a + 2] + 0, ARGV[a + 3] + 0
  -- cont: this limit's state follows the one before it in their key, and
  -- is of the same rule; nextin: the next limit's follows this one's.
  local cont, nextin = alg < 'a', i < m and ARGV[a + 5] < 'a'
  if not cont then c, ralg = ARGV[a + 4] + 0, alg end
  local v
  if cont or nextin then
    if not cont then
      local kv = st
      if not one then kv = st[ki - 1] end
      -- Sized once (see nv below); false, as GET answers, for a missing state.
      parts, part = {false, false, false}, 0
      if kv then
        local j = 0
        for x in string.gmatch(kv, '[^|]+') do
          j = j + 1
          parts[j] = x
        end
      end
    else
      alg = ralg -- the rule's, without string.lower's call
    end
    part = part + 1
    v = parts[part]
  elseif one then
    v = st
  else
    v = st[ki - 1]
  end
  if alg ~= 'g' then allg = false end
  local ends = 0
  allowed, rem, reset, retry, w, val, kind, ws = 0, 0, 0, 0, 0, false, false, false
  if alg == 'g' then
    local t = p + n - 1
    t = (t - t % n) / n -- the emission interval, ceil(p/n)
    local tat0 = tonumber(v)
    local base = now
    if tat0 and tat0 > now then base = tat0 end
    local tat = base + c * t
    local tau = n * t
    if tat - now > tau then
      local x = tau - (base - now)
      rem, reset, retry = (x - fmod(x, t)) / t, base - now, tat - tau - now
    else
      local x = tau - (tat - now)
      allowed, rem, reset = 1, (x - x % t) / t, tat - now
      w, ends = tat, tat
      val = fmt('%d', tat)
      ws = val
      if servertime then
        -- tat0 < tat: the TAT stays in its second when tat0 is in it too.
        kind = 'a'
        if tat0 and tat0 >= tat - tat % 1000000 then kind = 'k' end
      end
    end
  elseif alg == 'f' then
    local start = now - fmod(now, p)
    local count, same = 0, false
    if v then
      local s, k = string.match(v, '^(%-?%d+) (%-?%d+)')
      if tonumber(s) == start then count, same = tonumber(k), true end
    end
    local e = start + p - now
    reset = e
    if count + c > n then
      rem, retry = n - count, e
    else
      allowed, rem = 1, n - count - c
      ends = start + p
      ws = fmt('%d', start)
      val = fmt('%d %d', start, count + c)
      if same then kind = 'k' end
    end
  elseif alg == 's' then
    local start = now - fmod(now, p)
    local cur, prev, same = 0, 0, false
    if v then
      local s, k, q = string.match(v, '^(%-?%d+) (%-?%d+) (%-?%d+)')
      s = tonumber(s)
      if s == start then
        cur, prev, same = tonumber(k), tonumber(q), true
      elseif s == start - p then
        prev = tonumber(k)
      end
    end
    -- The estimate cur + floor(prev*(p-e)/p), e the time elapsed in the
    -- window; exact through muldiv when the product passes 2^53.
    local est = cur
    if prev > 0 then
      local x = prev * (p - (now - start))
      if x < TWO53 then
        est = cur + (x - x % p) / p
      else
        L = L or lib()
        est = cur + L.muldiv(prev, p - (now - start), p)
      end
    end
    if est + c <= n then
      allowed, rem = 1, n - est - c
      if cur + c > 0 then reset = start + 2 * p - now elseif prev > 0 then reset = start + p - now end
      ends = start + 2 * p
      ws = fmt('%d', start)
      val = fmt('%d %d %d', start, cur + c, prev)
      if same then kind = 'k' end
    else
      L = L or lib()
      if cur + c > n then
        local e = p + 1 - L.muldivceil(n - c + 1, p, cur)
        retry = start + p + e - now
      else
        local e = p + 1 - L.muldivceil(n - c - cur + 1, p, prev)
        retry = start + e - now
      end
      rem, reset = math.max(0, n - est), L.slidingreset(start, cur, prev, p)
    end
  else -- 'l'
    L = L or lib()
    local key = KEYS[ki]
    ki = ki + 1
    local total = tonumber(st[ki - 1]) or 0
    if total > 0 then total = total - L.logexpired(key, p) end
    if total + c <= n then
      allowed, rem, reset = 1, n - total - c, p
      w = now
      local last = L.loglast(key)
      if last and last > now then w = last end -- a clock that stepped back
      ends = w + p
      val = fmt('%d', total + c)
      ws = fmt('%d', w)
    else
      local freed, off = 0, 0
      local lo = '(' .. fmt('%d', now - p)
      while retry == 0 do
        local page = redis.call('ZRANGEBYSCORE', key, lo, '+inf', 'WITHSCORES', 'LIMIT', off, 256)
        if #page == 0 then break end
        for j = 1, #page, 2 do
          freed = freed + L.units(page[j])
          if total - freed + c <= n then
            retry = tonumber(page[j + 1]) + p - now
            break
          end
        end
        off = off + 256
      end
      local last = L.loglast(key)
      if last then reset = last + p - now end
      rem = n - total
    end
  end
  if not nextin then ki = ki + 1 end
  lf = ends - now
  if allowed == 1 then
    if lf > life then life = lf end
  else
    ok = false
  end
  if multi then
    rr[2 * i - 1], rr[2 * i] = rem, reset
    if allowed == 0 then
      den = den or {}
      den[i] = retry
    end
    local j = 5 * i
    nv[j - 4], nv[j - 3], nv[j - 2], nv[j - 1], nv[j] = val, lf, kind, ws, w
  end
end

-- Claim the receipt id: record the trace (the windows charged) unless the
-- id has a mark already, in one command: SET NX GET. A denied check, or one
-- without traces, only reads the mark. Lifetimes here and below are
-- common.lua's ms, inlined: microseconds rounded up to a whole second, in
-- milliseconds.
local wins, mark, tr, ttl
if ok then
  if multi then
    if m == 2 then
      wins = nv[4] .. ' ' .. nv[9]
    elseif m == 3 then
      wins = nv[4] .. ' ' .. nv[9] .. ' ' .. nv[14]
    else
      local t = {}
      for i = 1, m do t[i] = nv[5 * i - 1] end
      wins = table.concat(t, ' ')
    end
  else
    wins = ws
  end
end
if ok and tracettl > 0 then
  tr = 't' .. wins
  ttl = tracettl
  if life < ttl then ttl = life end
  ttl = ttl + slack + 999999
  ttl = (ttl - ttl % 1000000) / 1000
  mark = redis.call('SET', rk, tr, 'NX', 'PX', ttl, 'GET')
else
  mark = redis.call('GET', rk)
end
-- A mark refuses the check: a void mark 'v<until µs>', the id was voided; a
-- trace 't…' or a refund mark 'r<until µs>', the id was charged already, by
-- a request that a client retried after losing the connection. Marks past
-- their time (only a test clock sees them) do not count.
if mark then
  local mk = string.sub(mark, 1, 1)
  if mk == 't' then return '-2' end
  if now < tonumber(string.sub(mark, 2)) then
    if mk == 'v' then return '-1' end
    return '-2'
  end
  if tr then redis.call('SET', rk, tr, 'PX', ttl) end -- over the stale mark
end

if not ok then
  if not multi then return fmt('0 0 %d %d %d', rem, reset, retry) end
  -- A denial reports every limit as it is now, nothing charged, as
  -- peek.lua does. The limits that denied have their figures in rr already;
  -- rr holds those after the charge for the limits that allowed, so their
  -- states are walked again here, off the allowed path, as the first pass
  -- reads them.
  L = L or lib()
  local out = {}
  ki = 2
  for i = 1, m do
    local a = 4 * i - 1
    local alg, n, p = ARGV[a + 1], ARGV[a + 2] + 0, ARGV[a + 3] + 0
    local cont, nextin = alg < 'a', i < m and ARGV[a + 5] < 'a'
    local v
    if cont or nextin then
      if not cont then
        local kv = st
        if not one then kv = st[ki - 1] end
        parts, part, ralg = {}, 0, alg
        if kv then
          for x in string.gmatch(kv, '[^|]+') do parts[#parts + 1] = x end
        end
      else
        alg = ralg
      end
      part = part + 1
      v = parts[part]
    elseif one then
      v = st
    else
      v = st[ki - 1]
    end
    local key, total = KEYS[ki], 0
    if alg == 'l' then
      ki = ki + 1
      total = tonumber(st[ki - 1]) or 0
    end
    if not nextin then ki = ki + 1 end
    if den[i] then
      out[i] = fmt('0 %d %d %d', rr[2 * i - 1], rr[2 * i], den[i])
    else
      local r, z = 0, 0 -- remaining and resetAfter, as peek.lua computes them
      if alg == 'f' then
        local start, count = L.fixedroll(v, p)
        r = n - count
        if count > 0 then z = start + p - now end
      elseif alg == 's' then
        local start, cur, prev = L.slidingroll(v, p)
        r, z = math.max(0, n - L.estimate(start, cur, prev, p)), L.slidingreset(start, cur, prev, p)
      elseif alg == 'g' then
        local t = L.emission(n, p)
        local d = (tonumber(v) or 0) - now
        if d < 0 then d = 0 end
        r, z = L.idiv(n * t - d, t), d
      else
        if total > 0 then
          total = total - L.logexpired(key, p)
          local last = L.loglast(key)
          if total > 0 and last then z = last + p - now end
        end
        r = n - total
      end
      out[i] = fmt('1 %d %d 0', r, z)
    end
  end
  return '0 ' .. table.concat(out, ' ')
end

-- Second pass: apply every charge. The keys are distinct, so the verdicts of
-- the first pass stand. A shared key takes its limits' states at once, its
-- expiry kept when every one keeps it, else set to the latest any needs.
ki = 2
local gv, gn, gk, gl, gw -- a shared key's states and their number, whether all keep its expiry, the longest life, the latest TAT
for i = 1, m do
  if multi then
    local j = 5 * i
    val, lf, kind, ws, w = nv[j - 4], nv[j - 3], nv[j - 2], nv[j - 1], nv[j]
  end
  local key = KEYS[ki]
  local a = 4 * i - 1
  local alg = ARGV[a + 1]
  local cont, nextin = alg < 'a', i < m and ARGV[a + 5] < 'a'
  -- wv: the value to write to key, once all of its states are known; wk:
  -- every state keeps the key's expiry; else wat: the latest GCRA TAT, for
  -- an expiry on the server's clock; else wl: the longest life.
  local wv, wk, wat, wl
  if cont or nextin then
    if not cont then gv, gn, gk, gl, gw = {0, 0, 0}, 0, true, 0, 0 end
    gn = gn + 1
    gv[gn] = val
    if kind ~= 'k' then gk = false end
    if lf > gl then gl = lf end
    if w > gw then gw = w end
    if not nextin then
      ki = ki + 1
      wv, wk, wl = table.concat(gv, '|', 1, gn), gk, gl
      if servertime and (alg == 'G' or alg == 'g') then wat = gw end
    end
  elseif alg ~= 'l' then
    ki = ki + 1
    wv, wk, wl = val, kind == 'k', lf
    if kind == 'a' then wat = w end
  else
    ki = ki + 1
    local tkey = KEYS[ki]
    ki = ki + 1
    local x = L.ms(lf)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt('%d', now - ARGV[a + 3]))
    redis.call('ZADD', key, ws, rid .. '.' .. fmt('%d', i - 1) .. '.' .. ARGV[a + 4])
    redis.call('SET', tkey, val, 'PX', x)
    redis.call('PEXPIRE', key, x)
  end
  if wv then
    if wk then
      redis.call('SET', key, wv, 'KEEPTTL')
    elseif wat then
      redis.call('SET', key, wv, 'PXAT', (wat - wat % 1000000) / 1000 + 1000)
    else
      local x = wl + slack + 999999
      redis.call('SET', key, wv, 'PX', (x - x % 1000000) / 1000)
    end
  end
end
-- GCRA's remaining and resetAfter follow from now and the TAT, its window,
-- so the reply leaves them to the caller: a number formatted costs more
-- than the rest of a limit's reply.
if allg then
  -- TIME's own two numbers: no string.format (about 0.4 µs) for now.
  if servertime then return '3 ' .. clock[1] .. ' ' .. clock[2] .. ' ' .. wins end
  return '3 0 ' .. ARGV[1] .. ' ' .. wins
end
if not multi then return fmt('1 %d %d %s', rem, reset, wins) end
rr[2 * m + 1] = wins
return fmt('1 ' .. string.rep('%d %d ', m) .. '%s', unpack(rr))
