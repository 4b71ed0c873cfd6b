-- 90% GET, 10% PUT (100-byte values) over 10 000 preloaded keys.
-- WRITE_EVERY=n makes every n-th request a PUT; 0: GETs only.
local value = string.rep("v", 100)
local write_every = tonumber(os.getenv("WRITE_EVERY") or "10")
local n = 0
request = function()
  n = n + 1
  local path = "/store/key" .. ((n * 7919) % 10000)
  if write_every > 0 and n % write_every == 0 then
    return wrk.format("PUT", path, nil, value)
  end
  return wrk.format("GET", path)
end
