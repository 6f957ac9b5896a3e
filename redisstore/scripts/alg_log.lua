-- Sliding log: internal/algo/log.go. Two keys: the log, a sorted set of
-- "<receipt>.<charge>.<units>" scored by the charge's time (µs), and its
-- total, the units of its entries. Each section runs in line in a script's
-- loop over limits, but lib, made into common.lua's lib(); charge.in.lua,
-- refund.in.lua and peek.in.lua say what each section reads and sets.

--@section lib
-- units returns the units of a log member "<receipt>.<charge>.<units>".
local function units(member)
  return tonumber(string.match(member, '%.(%d+)$'))
end
L.units = units

-- logexpired returns the units of the log's entries at or before now-p:
-- those that have left the window (Log.Prune).
function L.logexpired(key, p)
  local gone = 0
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', fmt(now - p))) do
    gone = gone + units(m)
  end
  return gone
end

-- loglast returns the time of the log's newest entry, or nil.
function L.loglast(key)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if #last == 0 then return nil end
  return tonumber(last[2])
end

--@section charge
-- Log.Prune then Log.Check; the second pass (write) adds the entry.
L = L or lib()
local log_key = KEYS[key_index]
key_index = key_index + 1
local total = tonumber(states[key_index - 1]) or 0
if total > 0 then total = total - L.logexpired(log_key, p) end
if total + amount <= n then
  allowed, remaining, reset_after = 1, n - total - amount, p
  local at = now
  local last = L.loglast(log_key)
  if last and last > now then at = last end -- a clock that stepped back
  ends = at + p
  new_state = fmt('%d', total + amount)
  window_text = fmt('%d', at)
else
  -- The retry: when enough of the oldest entries have left the window.
  local freed, offset = 0, 0
  local after = '(' .. fmt('%d', now - p)
  while retry_after == 0 do
    local page = redis.call('ZRANGEBYSCORE', log_key, after, '+inf', 'WITHSCORES', 'LIMIT', offset, 256)
    if #page == 0 then break end
    for j = 1, #page, 2 do
      freed = freed + L.units(page[j])
      if total - freed + amount <= n then
        retry_after = tonumber(page[j + 1]) + p - now
        break
      end
    end
    offset = offset + 256
  end
  local last = L.loglast(log_key)
  if last then reset_after = last + p - now end
  remaining = n - total
end

--@section write
-- Log.Add: prune, add the entry, and keep both keys while it counts.
key_index = key_index + 1
local total_key = KEYS[key_index]
key_index = key_index + 1
local ttl = @ms(life)
redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt('%d', now - ARGV[arg + 3]))
redis.call('ZADD', key, window_text, receipt_id .. '.' .. fmt('%d', i - 1) .. '.' .. ARGV[arg + 4])
redis.call('SET', total_key, new_state, 'PX', ttl)
redis.call('PEXPIRE', key, ttl)

--@section peek
-- Log.Prune then Log.Peek.
local total = log_total
if total > 0 then
  total = total - L.logexpired(log_key, p)
  local last = L.loglast(log_key)
  if total > 0 and last then reset_after = last + p - now end
end
used, remaining = total, n - total

--@section refund
-- Log.Prune then Log.Remove of the charge's entry.
local total = tonumber(total_state)
if total then
  L = L or lib()
  local gone = L.logexpired(key, p)
  if gone > 0 then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', fmt('%d', now - p))
    total = total - gone
  end
  if redis.call('ZREM', key, receipt_id .. '.' .. fmt('%d', i - 1) .. '.' .. amount_text) == 1 then
    total = total - amount
    outcome, units = RESTORED, amount
  end
  redis.call('SET', total_key, fmt('%d', total), 'KEEPTTL')
end

--@section expiry
-- Log.Expiry: the entry leaves the window p after it.
expires = window + p
