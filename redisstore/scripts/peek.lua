-- peek: usage of limits without charging.
--
-- KEYS      per limit its state key (a sliding log: the log and its total),
--           one key for the limits of a rule that share one (charge.lua)
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   m, the number of limits; then per limit: algorithm, count n,
--           period p in µs
--
-- Returns per limit: used, remaining, resetAfter (µs).

local L = lib()
local idiv, fixedroll, slidingroll, estimate, slidingreset = L.idiv, L.fixedroll, L.slidingroll, L.estimate, L.slidingreset
local emission, logexpired, loglast = L.emission, L.logexpired, L.loglast
local m = ARGV[2] + 0
local out = {}
local ki = 1
local parts, part
for i = 1, m do
  local a = 2 + (i - 1) * 3
  local alg, n, p = ARGV[a + 1], ARGV[a + 2] + 0, ARGV[a + 3] + 0
  local key = KEYS[ki]
  -- v reads the limit's state: its key's value, or its part of a shared
  -- key's (cont: it follows the limit before; nextin: the next follows it).
  local cont, nextin = alg < 'a', i < m and ARGV[a + 4] < 'a'
  local v
  if cont or nextin then
    if cont then
      alg = string.lower(alg)
    else
      parts, part = {}, 0
      local kv = redis.call('GET', key)
      if kv then
        for x in string.gmatch(kv, '[^|]+') do parts[#parts + 1] = x end
      end
    end
    part = part + 1
    v = function() return parts[part] end
  else
    v = function() return redis.call('GET', key) end
  end
  if not nextin then ki = ki + 1 end
  local used, rem, reset = 0, 0, 0
  if alg == 'f' then
    local start, count = fixedroll(v(), p)
    if count > 0 then used, reset = count, start + p - now end
    rem = n - used
  elseif alg == 's' then
    local start, cur, prev = slidingroll(v(), p)
    used = estimate(start, cur, prev, p)
    reset = slidingreset(start, cur, prev, p)
    rem = math.max(0, n - used)
  elseif alg == 'g' then
    local t = emission(n, p)
    local tat = tonumber(v()) or 0
    if tat > now then
      local d = tat - now
      used, reset = idiv(d + t - 1, t), d
    end
    rem = idiv(n * t - math.max(0, tat - now), t)
  else
    local tkey = KEYS[ki]
    ki = ki + 1
    local total = tonumber(redis.call('GET', tkey)) or 0
    if total > 0 then
      total = total - logexpired(key, p)
      local last = loglast(key)
      if total > 0 and last then reset = last + p - now end
    end
    used, rem = total, n - total
  end
  out[#out + 1] = used
  out[#out + 1] = rem
  out[#out + 1] = reset
end
return out
