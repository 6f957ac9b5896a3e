-- peek: usage of limits without charging.
--
-- KEYS      per limit its state key (a sliding log: the log and its total),
--           one key for the limits of a rule that share one (charge.lua)
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the number of limits; then per limit: algorithm, count n,
--           period p in µs
--
-- Returns per limit: used, remaining, resetAfter (µs).
--
-- Each algorithm's peek section (alg_*.lua) is in line: it reads state
-- (the limit's stored value, or false or nil), n, p and now (a log:
-- log_key and log_total), and sets used, remaining and reset_after.

local L = lib()
local limits = ARGV[2] + 0
local fmod = math.fmod
local out = {}
local key_index = 1
local shared_states, shared_pos
for i = 1, limits do
  local arg = 2 + (i - 1) * 3 -- the limit's arguments follow ARGV[arg]
  local alg, n, p = ARGV[arg + 1], ARGV[arg + 2] + 0, ARGV[arg + 3] + 0
  local key = KEYS[key_index]
  -- The limit's state: its key's value, or its part of a shared key's
  -- (shares_previous: it follows the limit before; next_shares: the next
  -- follows it). A sliding log's key is a sorted set, not read with GET.
  local shares_previous, next_shares = alg < 'a', i < limits and ARGV[arg + 4] < 'a'
  local state
  if shares_previous or next_shares then
    if shares_previous then
      alg = string.lower(alg)
    else
      shared_states, shared_pos = {}, 0
      local stored = redis.call('GET', key)
      if stored then
        for s in string.gmatch(stored, '[^|]+') do shared_states[#shared_states + 1] = s end
      end
    end
    shared_pos = shared_pos + 1
    state = shared_states[shared_pos]
  elseif alg ~= 'l' then
    state = redis.call('GET', key)
  end
  if not next_shares then key_index = key_index + 1 end
  local used, remaining, reset_after = 0, 0, 0
  if alg == 'f' then
    --@include fixed.peek
  elseif alg == 's' then
    --@include sliding.peek
  elseif alg == 'g' then
    --@include gcra.peek
  else
    -- A sliding log's second key is its total.
    local log_key, log_total = key, tonumber(redis.call('GET', KEYS[key_index])) or 0
    key_index = key_index + 1
    --@include log.peek
  end
  out[#out + 1] = used
  out[#out + 1] = remaining
  out[#out + 1] = reset_after
end
return out
