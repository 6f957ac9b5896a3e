-- peek: usage of limits without charging.
--
-- KEYS      per limit its state key (a sliding log: the log and its total)
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   m, the number of limits; then per limit: algorithm, count n,
--           period p in µs
--
-- Returns per limit: used, remaining, resetAfter (µs).

local L = lib()
local idiv, fixedroll, slidingroll, estimate, slidingreset = L.idiv, L.fixedroll, L.slidingroll, L.estimate, L.slidingreset
local emission, logexpired, loglast = L.emission, L.logexpired, L.loglast
local m = tonumber(ARGV[2])
local out = {}
local ki = 1
for i = 1, m do
  local a = 2 + (i - 1) * 3
  local alg, n, p = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key = KEYS[ki]
  ki = ki + 1
  local used, rem, reset = 0, 0, 0
  if alg == 'f' then
    local start, count = fixedroll(redis.call('GET', key), p)
    if count > 0 then used, reset = count, start + p - now end
    rem = n - used
  elseif alg == 's' then
    local start, cur, prev = slidingroll(redis.call('GET', key), p)
    used = estimate(start, cur, prev, p)
    reset = slidingreset(start, cur, prev, p)
    rem = math.max(0, n - used)
  elseif alg == 'g' then
    local t = emission(n, p)
    local tat = tonumber(redis.call('GET', key)) or 0
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
