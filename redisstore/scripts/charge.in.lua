-- charge: one check of one identity, all limits of all its rules, all or
-- nothing.
--
-- KEYS[1]   the receipt's key (trace, refund mark or void mark; see refund.lua)
-- KEYS[2..] per limit its state key; a sliding log has two: the log (a sorted
--           set of "<receipt>.<charge>.<units>" scored by time) and its total
-- ARGV[1]   now in µs, or '' for the server's TIME
-- ARGV[2]   the receipt id (hex)
-- ARGV[3]   trace lifetime in µs; 0 writes no trace
-- ARGV[4..] per limit (as many as the arguments say): algorithm (f, s, l,
--           g), count n, period p in µs, amount (the units charged)
--
-- An idempotent charge (allowance.Request.IdempotencyKey) has one key and
-- two arguments more, last: KEYS[#KEYS] its record's key, and the record's
-- lifetime in µs and the request's costs ("0", or the number of rules and
-- per rule its cost, 0 for the rule's own). The arguments of every other
-- charge are as above, so it pays one comparison for the feature. The
-- record, "<until µs> <receipt id> <costs> <reply>", is written by an
-- allowed charge and read first: while it lasts, and unless its receipt was
-- refunded or voided since (a mark on that receipt's key), the script
-- charges nothing and returns "-3 <receipt id> <costs> <reply>", the first
-- charge's reply.
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
--
-- Each algorithm's arithmetic is its fragment's (alg_*.lua), in line:
--
--   charge  reads state (the limit's stored value, or false or nil), n, p,
--           amount and now; sets allowed (0 or 1), remaining, reset_after,
--           retry_after (when denied) and, when allowed, new_state (the
--           value to store), window_text (the window charged), ends (when
--           the state counts nothing any more, µs), expiry ('k': keep the
--           key's expiry, the state being of the window the key was made
--           for; 'a': at the second after the TAT expiry_tat, common.lua's
--           gcraexpiry; false: for its life, ends-now)
--   peek    reads state, n, p and now (a log: log_key and log_total); sets
--           used, remaining and reset_after
--   write   a sliding log's second pass (the other states are written here)

local fmod, fmt = math.fmod, string.format
local receipt_key = KEYS[1]
local receipt_id = ARGV[2]
local trace_ttl = ARGV[3] + 0
local nargs, nkeys = #ARGV, #KEYS
-- An idempotent charge's record: its key, and the record's text before the
-- reply ("<until> <receipt id> <costs>") when this charge writes it.
local record_key, record_head, record_ms
if (nargs - 3) % 4 == 2 then
  record_key = KEYS[nkeys]
  local record_life = ARGV[nargs - 1] + 0
  nargs, nkeys = nargs - 2, nkeys - 1
  local record = redis.call('GET', record_key)
  if record then
    local until_text, id = string.match(record, '^(%-?%d+) (%x+) ')
    -- Past its time only on a test clock: the key outlives it by the slack.
    if until_text and now < tonumber(until_text) then
      -- The recorded receipt's key is in this identity's hash slot, as
      -- KEYS[1] is (only the id differs), so reading it without declaring
      -- it is safe on a Cluster; its id cannot be known before the record
      -- is read. A live refund or void mark means the first charge was
      -- given back: this one is charged afresh, and replaces the record
      -- when allowed. A trace, or no mark, means it still stands.
      local mark = redis.call('GET', string.sub(receipt_key, 1, #receipt_key - #receipt_id) .. id)
      local given = false
      if mark and string.sub(mark, 1, 1) ~= 't' then given = now < tonumber(string.sub(mark, 2)) end
      if not given then return '-3 ' .. string.sub(record, #until_text + 2) end
    end
  end
  record_head = fmt('%d', now + record_life) .. ' ' .. receipt_id .. ' ' .. ARGV[nargs + 2]
  record_ms = @ms(record_life)
end
-- The number of limits from the arguments' count rather than an argument of
-- its own: every argument costs the server about 1k instructions to pass.
local limits = (nargs - 3) / 4
local L -- lib(), made only on the paths that need it

-- One read of every limit's state: GET for one key, else MGET. A sliding
-- log has two keys; MGET answers nil for the log itself (a sorted set) and
-- the units for its total. The limits of a rule with several (but a sliding
-- log's) share one key, their states joined by '|' in the rule's order: the
-- algorithm letter of every limit after the first is in upper case.
local several = limits > 1
local one_key = nkeys == 2
local states
if one_key then states = redis.call('GET', KEYS[2]) else states = redis.call('MGET', unpack(KEYS, 2, nkeys)) end
local shared_states, shared_pos -- the states in the shared key being read, and which is next

-- First pass: every limit's verdict, changing nothing. With one limit its
-- figures stay in the charge section's locals; with several, pending holds
-- per limit what the second pass writes (new_state, life, expiry,
-- window_text, expiry_tat), figures each limit's remaining and reset_after,
-- and retries the retry_after of the limits that denied. This is the hot
-- path of every check: no table for one limit, and the sections in line
-- (lib() is made only for the sliding log and products past 2^53).
local pending, figures, retries
if several then
  -- A table constructor sizes a table once, where filling {} grows it by
  -- doubling, a reallocation each time: most rules have up to three limits.
  if limits <= 3 then
    pending, figures = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, {0, 0, 0, 0, 0, 0, 0}
  else
    pending, figures = {}, {}
  end
end
local all_allowed = true
local all_gcra = true -- every limit is GCRA's: an allowed check's reply is then short
local longest_life = 0
local key_index = 2
local allowed, remaining, reset_after, retry_after, expiry_tat, new_state, life, expiry, window_text
local amount, rule_alg -- the amount and the algorithm (lower case), the same for every limit of a rule
for i = 1, limits do
  local arg = 4 * i - 1 -- the limit's arguments follow ARGV[arg]
  local alg, n, p = ARGV[arg + 1], ARGV[arg + 2] + 0, ARGV[arg + 3] + 0
  -- shares_previous: this limit's state follows the one before it in their
  -- key, and is of the same rule; next_shares: the next limit's follows
  -- this one's.
  local shares_previous, next_shares = alg < 'a', i < limits and ARGV[arg + 5] < 'a'
  if not shares_previous then amount, rule_alg = ARGV[arg + 4] + 0, alg end
  local state
  if shares_previous or next_shares then
    if not shares_previous then
      local stored = states
      if not one_key then stored = states[key_index - 1] end
      -- Sized once (see pending above); false, as GET answers, for a missing state.
      shared_states, shared_pos = {false, false, false}, 0
      if stored then
        local j = 0
        for s in string.gmatch(stored, '[^|]+') do
          j = j + 1
          shared_states[j] = s
        end
      end
    else
      alg = rule_alg -- the rule's, without string.lower's call
    end
    shared_pos = shared_pos + 1
    state = shared_states[shared_pos]
  elseif one_key then
    state = states
  else
    state = states[key_index - 1]
  end
  if alg ~= 'g' then all_gcra = false end
  local ends = 0
  allowed, remaining, reset_after, retry_after, expiry_tat, new_state, expiry, window_text = 0, 0, 0, 0, 0, false, false, false
  if alg == 'g' then
    --@include gcra.charge
  elseif alg == 'f' then
    --@include fixed.charge
  elseif alg == 's' then
    --@include sliding.charge
  else -- 'l'
    --@include log.charge
  end
  if not next_shares then key_index = key_index + 1 end
  life = ends - now
  if allowed == 1 then
    if life > longest_life then longest_life = life end
  else
    all_allowed = false
  end
  if several then
    figures[2 * i - 1], figures[2 * i] = remaining, reset_after
    if allowed == 0 then
      retries = retries or {}
      retries[i] = retry_after
    end
    local j = 5 * i
    pending[j - 4], pending[j - 3], pending[j - 2], pending[j - 1], pending[j] = new_state, life, expiry, window_text, expiry_tat
  end
end

-- Claim the receipt id: record the trace (the windows charged) unless the
-- id has a mark already, in one command: SET NX GET. A denied check, or one
-- without traces, only reads the mark.
local windows, mark, trace, trace_ms
if all_allowed then
  if several then
    if limits == 2 then
      windows = pending[4] .. ' ' .. pending[9]
    elseif limits == 3 then
      windows = pending[4] .. ' ' .. pending[9] .. ' ' .. pending[14]
    else
      local texts = {}
      for i = 1, limits do texts[i] = pending[5 * i - 1] end
      windows = table.concat(texts, ' ')
    end
  else
    windows = window_text
  end
end
if all_allowed and trace_ttl > 0 then
  trace = 't' .. windows
  local trace_life = trace_ttl
  if longest_life < trace_life then trace_life = longest_life end
  trace_ms = @ms(trace_life)
  mark = redis.call('SET', receipt_key, trace, 'NX', 'PX', trace_ms, 'GET')
else
  mark = redis.call('GET', receipt_key)
end
-- A mark refuses the check: a void mark 'v<until µs>', the id was voided; a
-- trace 't…' or a refund mark 'r<until µs>', the id was charged already, by
-- a request that a client retried after losing the connection. Marks past
-- their time (only a test clock sees them) do not count.
if mark then
  local mark_kind = string.sub(mark, 1, 1)
  if mark_kind == 't' then return '-2' end
  if now < tonumber(string.sub(mark, 2)) then
    if mark_kind == 'v' then return '-1' end
    return '-2'
  end
  if trace then redis.call('SET', receipt_key, trace, 'PX', trace_ms) end -- over the stale mark
end

if not all_allowed then
  if not several then return fmt('0 0 %d %d %d', remaining, reset_after, retry_after) end
  -- A denial reports every limit as it is now, nothing charged, as
  -- peek.lua does. The limits that denied have their figures already;
  -- figures holds those after the charge for the limits that allowed, so
  -- their states are read again here, off the allowed path, as the first
  -- pass reads them, and peeked at.
  L = L or lib()
  local out = {}
  key_index = 2
  for i = 1, limits do
    local arg = 4 * i - 1
    local alg, n, p = ARGV[arg + 1], ARGV[arg + 2] + 0, ARGV[arg + 3] + 0
    local shares_previous, next_shares = alg < 'a', i < limits and ARGV[arg + 5] < 'a'
    local state
    if shares_previous or next_shares then
      if not shares_previous then
        local stored = states
        if not one_key then stored = states[key_index - 1] end
        shared_states, shared_pos, rule_alg = {}, 0, alg
        if stored then
          for s in string.gmatch(stored, '[^|]+') do shared_states[#shared_states + 1] = s end
        end
      else
        alg = rule_alg
      end
      shared_pos = shared_pos + 1
      state = shared_states[shared_pos]
    elseif one_key then
      state = states
    else
      state = states[key_index - 1]
    end
    -- A sliding log's second key is its total.
    local log_key, log_total = KEYS[key_index], 0
    if alg == 'l' then
      key_index = key_index + 1
      log_total = tonumber(states[key_index - 1]) or 0
    end
    if not next_shares then key_index = key_index + 1 end
    if retries[i] then
      out[i] = fmt('0 %d %d %d', figures[2 * i - 1], figures[2 * i], retries[i])
    else
      local used, remaining, reset_after = 0, 0, 0
      if alg == 'f' then
        --@include fixed.peek
      elseif alg == 's' then
        --@include sliding.peek
      elseif alg == 'g' then
        --@include gcra.peek
      else
        --@include log.peek
      end
      out[i] = fmt('1 %d %d 0', remaining, reset_after)
    end
  end
  return '0 ' .. table.concat(out, ' ')
end

-- Second pass: apply every charge. The keys are distinct, so the verdicts of
-- the first pass stand. A shared key takes its limits' states at once, its
-- expiry kept when every one keeps it, else at the second after the latest
-- TAT when one asks for that, else set to the longest life any needs.
key_index = 2
-- A shared key's states and their number, whether all keep its expiry,
-- whether one asks for an expiry at its TAT, the longest life, the latest TAT.
local key_states, key_nstates, key_keeps, key_at_tat, key_life, key_tat
for i = 1, limits do
  if several then
    local j = 5 * i
    new_state, life, expiry, window_text, expiry_tat = pending[j - 4], pending[j - 3], pending[j - 2], pending[j - 1], pending[j]
  end
  local key = KEYS[key_index]
  local arg = 4 * i - 1
  local alg = ARGV[arg + 1]
  local shares_previous, next_shares = alg < 'a', i < limits and ARGV[arg + 5] < 'a'
  -- write_value: the value to write to key, once all of its states are
  -- known; write_keep: every state keeps the key's expiry; else write_tat:
  -- a GCRA TAT, for an expiry on the server's clock; else write_life: the
  -- longest life.
  local write_value, write_keep, write_tat, write_life
  if shares_previous or next_shares then
    if not shares_previous then
      key_states, key_nstates, key_keeps, key_at_tat, key_life, key_tat = {0, 0, 0}, 0, true, false, 0, 0
    end
    key_nstates = key_nstates + 1
    key_states[key_nstates] = new_state
    if expiry ~= 'k' then key_keeps = false end
    if expiry == 'a' then key_at_tat = true end
    if life > key_life then key_life = life end
    if expiry_tat > key_tat then key_tat = expiry_tat end
    if not next_shares then
      key_index = key_index + 1
      write_value, write_keep, write_life = table.concat(key_states, '|', 1, key_nstates), key_keeps, key_life
      if key_at_tat then write_tat = key_tat end
    end
  elseif alg ~= 'l' then
    key_index = key_index + 1
    write_value, write_keep, write_life = new_state, expiry == 'k', life
    if expiry == 'a' then write_tat = expiry_tat end
  else
    --@include log.write
  end
  if write_value then
    if write_keep then
      redis.call('SET', key, write_value, 'KEEPTTL')
    elseif write_tat then
      redis.call('SET', key, write_value, 'PXAT', @pxat(write_tat))
    else
      redis.call('SET', key, write_value, 'PX', @ms(write_life))
    end
  end
end
-- GCRA's remaining and reset_after follow from now and the TAT, its window,
-- so the reply leaves them to the caller: a number formatted costs more
-- than the rest of a limit's reply.
local reply
if all_gcra then
  -- TIME's own two numbers: no string.format (about 0.4 µs) for now.
  if servertime then
    reply = '3 ' .. clock[1] .. ' ' .. clock[2] .. ' ' .. windows
  else
    reply = '3 0 ' .. ARGV[1] .. ' ' .. windows
  end
elseif not several then
  reply = fmt('1 %d %d %s', remaining, reset_after, windows)
else
  figures[2 * limits + 1] = windows
  reply = fmt('1 ' .. string.rep('%d %d ', limits) .. '%s', unpack(figures))
end
if record_key then redis.call('SET', record_key, record_head .. ' ' .. reply, 'PX', record_ms) end
return reply
