-- GCRA: internal/algo/gcra.go. The state is "<tat>", the theoretical
-- arrival time (µs); no key when the bucket is full. Each section runs in
-- line in a script's loop over limits; charge.in.lua, refund.in.lua and
-- peek.in.lua say what each section reads and sets.

--@section charge
-- GCRA.Charge.
local interval = p + n - 1
interval = (interval - interval % n) / n -- the emission interval, ceil(p/n)
local old_tat = tonumber(state)
local base = now
if old_tat and old_tat > now then base = old_tat end
local tat = base + amount * interval
local burst = n * interval
if tat - now > burst then
  local room = burst - (base - now)
  remaining, reset_after, retry_after = (room - fmod(room, interval)) / interval, base - now, tat - burst - now
else
  local room = burst - (tat - now)
  allowed, remaining, reset_after = 1, (room - room % interval) / interval, tat - now
  expiry_tat, ends = tat, tat
  new_state = fmt('%d', tat)
  window_text = new_state
  if servertime then
    -- old_tat < tat: the TAT stays in its second when old_tat is in it too.
    expiry = 'a'
    if old_tat and old_tat >= tat - tat % 1000000 then expiry = 'k' end
  end
end

--@section peek
-- GCRA.Peek.
local interval = L.idiv(p + n - 1, n)
local ahead = (tonumber(state) or 0) - now
if ahead < 0 then ahead = 0 end
if ahead > 0 then used = L.idiv(ahead + interval - 1, interval) end
remaining, reset_after = L.idiv(n * interval - ahead, interval), ahead

--@section refund
-- GCRA.Refund. p is the emission interval. The TAT moves back by the
-- charge's increment, never before now. The key keeps its expiry, the
-- second after the TAT it held (common.lua's gcraexpiry): it lives no
-- longer than it would have without the refund, and charges keep it until
-- the TAT leaves that second.
local old_tat = tonumber(state) or 0
if now < window and old_tat > now then
  local tat = old_tat - amount * p
  if tat < now then tat = now end
  local back = old_tat - tat + p - 1
  outcome, units = RESTORED, (back - back % p) / p
  if units > amount then units = amount end
  if tat == now then new_state = false else new_state = fmt('%d', tat) end
end

--@section expiry
-- GCRA.Expiry: the bucket is full at the TAT. The window is as the caller
-- wrote it, so the refund mark's time is that text.
expires = window
if not trace_windows then expires_text = window_text end
