-- Sliding window: internal/algo/sliding.go. The state is "<start> <cur>
-- <prev>": the start of the current window (µs) and the units charged in
-- it and in the window before. Each section runs in line in a script's loop
-- over limits; charge.in.lua, refund.in.lua and peek.in.lua say what each
-- section reads and sets.

--@section charge
-- Sliding.Roll: the counts as seen at now.
local start = now - fmod(now, p)
local cur, prev, same_window = 0, 0, false
if state then
  local stored_start, stored_cur, stored_prev = string.match(state, '^(%-?%d+) (%-?%d+) (%-?%d+)')
  stored_start = tonumber(stored_start)
  if stored_start == start then
    cur, prev, same_window = tonumber(stored_cur), tonumber(stored_prev), true
  elseif stored_start == start - p then
    prev = tonumber(stored_cur)
  end
end
-- The estimate cur + floor(prev*(p-e)/p), e the time elapsed in the
-- window; exact through muldiv when the product passes 2^53.
local estimate = cur
if prev > 0 then
  local product = prev * (p - (now - start))
  if product < TWO53 then
    estimate = cur + (product - product % p) / p
  else
    L = L or lib()
    estimate = cur + L.muldiv(prev, p - (now - start), p)
  end
end
if estimate + amount <= n then
  allowed, remaining = 1, n - estimate - amount
  if cur + amount > 0 then reset_after = start + 2 * p - now elseif prev > 0 then reset_after = start + p - now end
  ends = start + 2 * p
  window_text = fmt('%d', start)
  new_state = fmt('%d %d %d', start, cur + amount, prev)
  if same_window then expiry = 'k' end
else
  L = L or lib()
  if cur + amount > n then
    -- Only the next window can admit it, once the current count (then the
    -- previous one) has decayed to at most n-amount.
    local elapsed = p + 1 - L.muldivceil(n - amount + 1, p, cur)
    retry_after = start + p + elapsed - now
  else
    -- This window admits it once floor(prev*(p-e)/p) <= n-amount-cur.
    local elapsed = p + 1 - L.muldivceil(n - amount - cur + 1, p, prev)
    retry_after = start + elapsed - now
  end
  remaining = math.max(0, n - estimate)
  if cur > 0 then reset_after = start + 2 * p - now elseif prev > 0 then reset_after = start + p - now end
end

--@section peek
-- Sliding.Peek.
local start = now - fmod(now, p)
local cur, prev = 0, 0
if state then
  local stored_start, stored_cur, stored_prev = string.match(state, '^(%-?%d+) (%-?%d+) (%-?%d+)')
  stored_start = tonumber(stored_start)
  if stored_start == start then
    cur, prev = tonumber(stored_cur), tonumber(stored_prev)
  elseif stored_start == start - p then
    prev = tonumber(stored_cur)
  end
end
used = cur
if prev > 0 then used = cur + L.muldiv(prev, p - (now - start), p) end
remaining = math.max(0, n - used)
if cur > 0 then reset_after = start + 2 * p - now elseif prev > 0 then reset_after = start + p - now end

--@section refund
-- Sliding.Refund: units of the window the state holds or the one before,
-- never rolling the state to a later window.
if state then
  local start = now - fmod(now, p)
  if window == start or window == start - p then
    -- The state's current window is start, or start - p before a charge
    -- of start's rolled it; the charge is in either.
    local stored_start, cur, prev = string.match(state, '^(%-?%d+) (%-?%d+) (%-?%d+)')
    stored_start, cur, prev = tonumber(stored_start), tonumber(cur), tonumber(prev)
    local held = 0
    if window == stored_start then held = cur elseif window == stored_start - p then held = prev end
    units = amount
    if units > held then units = held end
    if units > 0 then
      if window == stored_start then cur = cur - units else prev = prev - units end
      new_state = fmt('%d %d %d', stored_start, cur, prev)
    end
    outcome = RESTORED
  end
end

--@section expiry
-- Sliding.Expiry: the window counts until the end of the one after it.
expires = window + 2 * p
