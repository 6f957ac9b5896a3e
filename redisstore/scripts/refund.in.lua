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
-- ARGV[5]   the number of charges; ARGV[6] the number of rules, 0 when no
--           rule has a guard (the charges are then one rule's)
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
-- no table per charge, the algorithms' sections in line and lib() made only
-- for the sliding log, and one string for the reply (Redis converts a Lua
-- table element by element). A tonumber costs about as much as a GET's own
-- work in the server, a string.format more, so the script reads no number
-- it does not use (the count n only made GCRA's emission interval, which
-- the caller sends) and writes numbers it was given as the strings they
-- came in: an amount of 1, the units of a charge given back whole, a GCRA
-- window as the refund mark's time.
--
-- Each algorithm's arithmetic is its fragment's (alg_*.lua), in line:
--
--   refund  reads state (the charge's stored value, or false or nil), p,
--           amount, amount_text, window and now (a log: key, total_key,
--           total_state, receipt_id and i); sets outcome and units when it
--           gives units back, and new_state (nil: unchanged; false: delete
--           the state; else the value to store)
--   expiry  reads window and p (GCRA: window_text, trace_windows); sets
--           expires, when the charge stops counting (µs), and may set
--           expires_text, the same as text

-- Outcomes: 1 restored, 2 window ended, 3 already refunded, 4 declined,
-- 5 not charged; written as string constants in the reply.
local RESTORED, ENDED, DECLINED = 1, 2, 4

local receipt_key = KEYS[1]
local receipt_id = ARGV[2]
local charges = ARGV[5] + 0
local rules = 0
if ARGV[6] ~= '0' then rules = ARGV[6] + 0 end
local fmod, fmt = math.fmod, string.format
local L -- lib(), made only for the sliding log

-- Every key in one read. MGET answers nil for a sliding log itself (a
-- sorted set) and the units for its total. The keys are distinct, so what
-- is read stays true until this script writes it.
local states = redis.call('MGET', unpack(KEYS))

-- The receipt's key holds 'r<until µs>' once it was refunded, 'v<until µs>'
-- once it was voided, both until no charge of it could be refunded any more
-- (as memstore keeps its records), or a charge's trace 't<window> …'.
local mark = states[1]
if mark then
  local mark_kind = string.sub(mark, 1, 1)
  if mark_kind ~= 't' then
    if now < tonumber(string.sub(mark, 2)) then
      return string.rep('3 0 ', charges - 1) .. '3 0' -- already refunded
    end
    mark = nil -- a stale mark, as only a test clock sees them
  end
end

-- An uncertain receipt's windows are the trace's.
local trace_windows
if ARGV[3] == '1' then
  if not mark then
    -- The charge was never applied (or was denied): void the id so that it
    -- never can be.
    local void_life = math.max(ARGV[4] + 0, 1)
    redis.call('SET', receipt_key, 'v' .. fmt('%d', now + void_life), 'PX', @ms(void_life))
    return string.rep('5 0 ', charges - 1) .. '5 0' -- not charged
  end
  trace_windows = {}
  for w in string.gmatch(string.sub(mark, 2), '%-?%d+') do trace_windows[#trace_windows + 1] = tonumber(w) end
end

-- Per rule: its guard, then each of its charges undone exactly as
-- internal/algo does. Each charge's part of the reply ("<outcome> <units>")
-- is reply with one charge, else in replies. mark_life is how long the
-- refund mark must last: while any charge could still be refunded
-- (Receipt.Expiry); mark_until, when set, is now+mark_life as the caller
-- wrote it.
local replies
if charges > 1 then
  -- A table constructor sizes a table once, where filling {} grows it by
  -- doubling, a reallocation each time: most rules have up to three limits.
  if charges <= 3 then replies = {0, 0, 0} else replies = {} end
end
local reply
local done = false
local mark_life, mark_until = 1, nil
local key_index = 2
-- The limits of a rule with several (but a sliding log's) share one key,
-- their states joined by '|' (see charge.lua): shared_states holds the
-- states of the shared key being refunded, shared_pos which is next,
-- shared_count how many it held, shared_dirty whether one changed.
local shared_states, shared_pos, shared_dirty, shared_count
for rule = 1, math.max(rules, 1) do
  local first, last, guard_count = 1, charges, 0
  local guard_key, guard_period, guard_start, guard_used, guard_same
  if rules > 0 then
    local b = 2 + 4 * charges + 4 * rule
    first, last, guard_count = ARGV[b + 1] + 0, ARGV[b + 2] + 0, ARGV[b + 3] + 0
  end
  -- The refund guard counts refunds in fixed windows of its period.
  local declined = false
  if guard_count > 0 then
    guard_period = ARGV[2 + 4 * charges + 4 * rule + 4] + 0
    guard_key = KEYS[key_index]
    local stored = states[key_index]
    key_index = key_index + 1
    guard_start, guard_used, guard_same = now - fmod(now, guard_period), 0, false
    if stored then
      local sn, sp, ss, sc = string.match(stored, '^(%-?%d+) (%-?%d+) (%-?%d+) (%-?%d+)')
      if tonumber(sn) == guard_count and tonumber(sp) == guard_period and tonumber(ss) == guard_start then
        guard_used, guard_same = tonumber(sc), true
      end
    end
    declined = guard_used >= guard_count
  end
  local restored = false
  for i = first, last do
    local arg = 2 + 4 * i -- the charge's arguments follow ARGV[arg]
    local alg, p, amount_text, window_text = ARGV[arg + 1], ARGV[arg + 2] + 0, ARGV[arg + 3], ARGV[arg + 4]
    local window
    if trace_windows then window = trace_windows[i] else window = window_text + 0 end
    local key, state = KEYS[key_index], states[key_index]
    -- shares_previous: this charge's state follows the one before it in
    -- their key; next_shares: the next charge's follows this one's.
    local shares_previous, next_shares = alg < 'a', i < charges and ARGV[arg + 5] < 'a'
    if shares_previous or next_shares then
      if shares_previous then
        alg = string.lower(alg)
      else
        shared_states, shared_pos, shared_dirty = {false, false, false}, 0, false
        local j = 0
        if state then
          for s in string.gmatch(state, '[^|]+') do
            j = j + 1
            shared_states[j] = s
          end
        end
        shared_count = j
      end
      shared_pos = shared_pos + 1
      state = shared_states[shared_pos]
    end
    if not next_shares then key_index = key_index + 1 end
    local new_state -- the state after the refund: a string, false to drop it
    -- A sliding log's second key is its total.
    local total_key, total_state
    if alg == 'l' then
      total_key, total_state = KEYS[key_index], states[key_index]
      key_index = key_index + 1
    end
    local expires, expires_text = window, nil
    if alg == 'g' then
      --@include gcra.expiry
    elseif alg == 'f' then
      --@include fixed.expiry
    elseif alg == 's' then
      --@include sliding.expiry
    else
      --@include log.expiry
    end
    if expires - now > mark_life then mark_life, mark_until = expires - now, expires_text end
    local amount
    if amount_text == '1' then amount = 1 else amount = tonumber(amount_text) end
    local outcome, units = ENDED, 0
    if declined then
      outcome = DECLINED
    elseif alg == 'g' then
      --@include gcra.refund
    -- The windows give back units in the window their state holds, never
    -- rolling it to a later one: a charge that then found the state in its
    -- own window would keep the key's expiry (KEEPTTL), which was set for
    -- the earlier window and ends too soon.
    elseif alg == 'f' then
      --@include fixed.refund
    elseif alg == 's' then
      --@include sliding.refund
    else -- 'l'
      --@include log.refund
    end
    -- Write the state back, keeping the key's expiry: a shared key once,
    -- after its last charge.
    if shared_states then
      if new_state ~= nil then
        shared_states[shared_pos], shared_dirty = new_state or fmt('%d', now), true
      end
      if not next_shares then
        if shared_dirty then redis.call('SET', key, table.concat(shared_states, '|', 1, shared_count), 'KEEPTTL') end
        shared_states = nil
      end
    elseif new_state then
      redis.call('SET', key, new_state, 'KEEPTTL')
    elseif new_state == false then
      redis.call('DEL', key)
    end
    local part
    if outcome == RESTORED then
      restored = true
      if units == amount then part = '1 ' .. amount_text else part = fmt('1 %d', units) end
    elseif outcome == ENDED then
      part = '2 0'
    else
      part = '4 0'
    end
    if replies then replies[i] = part else reply = part end
  end
  if not declined then
    done = true
    if guard_count > 0 and restored then
      -- The guard's key was made with the lifetime of its window: kept
      -- while the window is the same.
      local guard_state = fmt('%d %d %d %d', guard_count, guard_period, guard_start, guard_used + 1)
      if guard_same then
        redis.call('SET', guard_key, guard_state, 'KEEPTTL')
      else
        local guard_life = guard_start + guard_period - now
        redis.call('SET', guard_key, guard_state, 'PX', @ms(guard_life))
      end
    end
  end
end
if done then
  redis.call('SET', receipt_key, 'r' .. (mark_until or fmt('%d', now + mark_life)), 'PX', @ms(mark_life))
end
if replies then return table.concat(replies, ' ', 1, charges) end
return reply
