-- PUT of a 100-byte value over KEYS keys (under PREFIX), each on lease
-- LEASE: what a put on a lease costs as the lease holds more keys.
local value = string.rep("v", 100)
local keys = tonumber(os.getenv("KEYS"))
local lease = os.getenv("LEASE")
local prefix = os.getenv("PREFIX")
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/store/" .. prefix .. (n % keys) .. "?lease=" .. lease, nil, value)
end
