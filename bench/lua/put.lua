-- PUT of a 100-byte value over 10 000 keys.
local value = string.rep("v", 100)
-- With KV_TOKEN set (a server with --auth-file), every request carries it.
local token = os.getenv("KV_TOKEN")
local headers = token and {["Authorization"] = "Bearer " .. token} or nil
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/store/key" .. (n % 10000), headers, value)
end
