-- 90% GET, 10% PUT (100-byte values) over 10 000 preloaded keys.
local value = string.rep("v", 100)
local n = 0
request = function()
  n = n + 1
  local path = "/store/key" .. ((n * 7919) % 10000)
  if n % 10 == 0 then
    return wrk.format("PUT", path, nil, value)
  end
  return wrk.format("GET", path)
end
