-- Keep-alives over leases 1..LEASES (ids as lease_grant.lua gives them).
local leases = tonumber(os.getenv("LEASES"))
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", string.format("/leases/%016x/keepalive", n % leases + 1))
end
