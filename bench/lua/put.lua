-- PUT of a 100-byte value over 10 000 keys.
local value = string.rep("v", 100)
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/store/key" .. (n % 10000), nil, value)
end
