-- Shared by every script of redisstore (prepended to each one): the clock,
-- and lib(), which makes the shared helpers. The scripts are assembled from
-- this file, their templates (*.in.lua) and one fragment per algorithm
-- (alg_*.lua) by go generate: see redisstore/internal/luagen.
--
-- Lua numbers are doubles. Every value the scripts handle (counts up to 1e9,
-- microsecond times and periods) stays below 2^53, where doubles are exact
-- integers; the only products that can pass 2^53 go through muldiv, which is
-- exact. Integers are written with string.format('%d'), never tostring, which
-- would round them to 14 digits.
--
-- The remainder of two non-negative integers below 2^53 is taken with Lua's
-- % (a - floor(a/b)*b: a VM operation, exact there, as the floor of the
-- rounded quotient is the true one below 2^53), not math.fmod, a C call of
-- about 0.7k instructions. math.fmod stays where an operand may be negative
-- (the window start of a test clock before 1970, the deny path of a GCRA
-- whose limit shrank), as it truncates like Go's %.
--
-- Numeric arguments are read by arithmetic (ARGV[i] + 0), which converts
-- the string once; tonumber converts it twice (lua_isnumber, then
-- lua_tonumber), each a strtod of about 80 ns on the server. The client
-- sends only numbers there. States read from keys still go through
-- tonumber, which answers nil rather than failing on a value it cannot read.
--
-- Lua makes a closure for every `local function` each time a script runs
-- (about 60 ns each on the server), so the helpers are made only by lib(),
-- when a script needs them: the charge's and the refund's common paths
-- (GCRA, fixed and sliding windows with products below 2^53) do without
-- them, and lib() holds only helpers some script calls. What must be in
-- line on those paths without being pasted is a macro (see luagen), such
-- as ms below.
--
-- Expiry of a GCRA key on the server's clock, gcraexpiry(tat): at least the
-- whole second after its TAT, (floor(tat/10^6)+1)*1000 ms (PXAT). A charge
-- that moves the TAT to another second sets exactly that; one that leaves
-- it in the same second keeps the key's expiry (SET KEEPTTL, cheaper than
-- setting one), and so does a refund, which only moves the TAT back: the
-- key lives no longer than it would have without the refund. A test clock's
-- times are not the server's, so there a charge gives a key the lifetime
-- tat-now (ms below).
--
-- The macro ms(us) converts a lifetime in microseconds to milliseconds for PX,
-- rounded up to a whole second (slack added): a key outlives its state by
-- less than a second, and a hot key of a fast limit (a GCRA TAT a few µs
-- ahead) is updated in place instead of expiring and being created again on
-- every check. The macro pxat(tat) is gcraexpiry(tat) in milliseconds for PXAT.
--@define ms(us) (us + slack + 999999 - (us + slack + 999999) % 1000000) / 1000
--@define pxat(tat) (tat - tat % 1000000) / 1000 + 1000

local TWO53 = 9007199254740992

-- now is the time in microseconds: the store's test clock when ARGV[1] is
-- set, else the server's TIME. Redis 7 replicates a script's effects, not
-- the script, so reading TIME before writing is safe.
--
-- slack is added to every key's lifetime. A test clock may run slower than
-- the server's, so with one keys live an hour longer than the clock says they
-- must; the scripts never rely on a key having expired. servertime is
-- whether times are the server's, which can be expiries (PXAT); a test
-- clock's cannot.
local now, slack, servertime, clock
if ARGV[1] == '' then
  clock = redis.call('TIME') -- seconds and microseconds, as strings
  now, slack, servertime = clock[1] * 1000000 + clock[2], 0, true
else
  now, slack, servertime = tonumber(ARGV[1]), 3600000000, false
end

local function lib()
  local fmod = math.fmod
  local L = {}

  -- idiv is Go's integer division: the quotient truncated toward zero.
  local function idiv(a, b)
    return (a - fmod(a, b)) / b
  end
  L.idiv = idiv

  -- muldiv returns floor(a*b/c) and the remainder, exactly, for a, b >= 0 and
  -- c > 0 below 2^53 whose quotient is below 2^53 (internal/mathx.MulDiv).
  local function muldiv(a, b, c)
    local prod = a * b
    if prod < TWO53 then
      local r = fmod(prod, c)
      return (prod - r) / c, r
    end
    -- a*b = qa*c*b + ra*b: long division of ra*b by c, one bit of b at a time,
    -- keeping the remainder below c so that no step leaves exact integers.
    local qa = idiv(a, c)
    local ra = a - qa * c
    local q, r = 0, 0
    local bit = 4503599627370496 -- 2^52
    local rest = b
    while bit >= 1 do
      q = q * 2
      if r >= c - r then
        r = r - (c - r)
        q = q + 1
      else
        r = r * 2
      end
      if rest >= bit then
        rest = rest - bit
        if r >= c - ra then
          r = r - (c - ra)
          q = q + 1
        else
          r = r + ra
        end
      end
      bit = bit / 2
    end
    return qa * b + q, r
  end
  L.muldiv = muldiv

  -- muldivceil returns ceil(a*b/c) under the conditions of muldiv.
  function L.muldivceil(a, b, c)
    local q, r = muldiv(a, b, c)
    if r > 0 then q = q + 1 end
    return q
  end

  local function fmt(x)
    return string.format('%d', x)
  end
  L.fmt = fmt

  --@include log.lib

  return L
end
