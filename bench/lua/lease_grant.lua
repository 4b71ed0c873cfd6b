-- Grants LEASES leases (ids 1, 2, ...: 16 hex digits) of TTL seconds,
-- with ATTACH keys put on each (one batch per lease) when ATTACH > 0; stops
-- once all are answered. Run with one thread (-t1): the ids come from one
-- counter.
local leases = tonumber(os.getenv("LEASES"))
local ttl = os.getenv("TTL") or "3600"
local attach = tonumber(os.getenv("ATTACH") or "0")
local first = tonumber(os.getenv("FIRST") or "1")
local json = {["Content-Type"] = "application/json"}
local n, answered = 0, 0

-- wrk asks for one request before any connection and never sends it:
-- that one takes the number 0, so the leases sent are 1..LEASES.
init = function()
  n = -1
end

local function id(k)
  return string.format("%016x", first + k - 1)
end

request = function()
  n = n + 1
  if n > leases then
    return wrk.format("GET", "/healthz")
  end
  if attach == 0 then
    return wrk.format("POST", "/leases", json, '{"ttl":' .. ttl .. ',"id":"' .. id(n) .. '"}')
  end
  local ops = {}
  for k = 1, attach do
    ops[k] = '{"method":"PUT","key":"l' .. id(n) .. "/" .. k .. '","value":"' ..
      string.rep("v", 100) .. '","lease":"' .. id(n) .. '"}'
  end
  return wrk.format("POST", "/batch", json, "[" .. table.concat(ops, ",") .. "]")
end

response = function(status)
  answered = answered + 1
  if status >= 400 and answered <= leases then
    print("status " .. status)
  end
  if answered >= leases then
    wrk.thread:stop()
  end
end
