-- Fixed window: internal/algo/fixed.go. The state is "<start> <count>": the
-- start of the window it counts (µs) and the units charged in it. Each
-- section runs in line in a script's loop over limits; charge.in.lua,
-- refund.in.lua and peek.in.lua say what each section reads and sets.

--@section charge
-- Fixed.Charge: the count of now's window, zero if the state is of an
-- earlier one.
local start = now - fmod(now, p)
local count, same_window = 0, false
if state then
  local stored_start, stored_count = string.match(state, '^(%-?%d+) (%-?%d+)')
  if tonumber(stored_start) == start then count, same_window = tonumber(stored_count), true end
end
local window_left = start + p - now
reset_after = window_left
if count + amount > n then
  remaining, retry_after = n - count, window_left
else
  allowed, remaining = 1, n - count - amount
  ends = start + p
  window_text = fmt('%d', start)
  new_state = fmt('%d %d', start, count + amount)
  if same_window then expiry = 'k' end
end

--@section peek
-- Fixed.Peek.
local start = now - fmod(now, p)
local count = 0
if state then
  local stored_start, stored_count = string.match(state, '^(%-?%d+) (%-?%d+)')
  if tonumber(stored_start) == start then count = tonumber(stored_count) end
end
used, remaining = count, n - count
if count > 0 then reset_after = start + p - now end

--@section refund
-- Fixed.Refund: units of now's window only.
if state then
  local start = now - fmod(now, p)
  if window == start then
    local count = 0
    local stored_start, stored_count = string.match(state, '^(%-?%d+) (%-?%d+)')
    if tonumber(stored_start) == start then count = tonumber(stored_count) end
    units = amount
    if units > count then units = count end
    if units > 0 then new_state = fmt('%d %d', start, count - units) end
    outcome = RESTORED
  end
end

--@section expiry
-- Fixed.Expiry.
expires = window + p
