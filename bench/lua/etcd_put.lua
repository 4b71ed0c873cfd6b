-- etcd's JSON gateway: puts of a 100-byte value over the 10 000 keys
-- kv-store's put.lua writes.
dofile(os.getenv("LUA_DIR") .. "/etcd_common.lua")
local value = base64(string.rep("v", 100))
local keys = {}
for i = 0, 9999 do keys[i] = base64("kv-store/key" .. i) end
local n = 0
request = function()
  n = n + 1
  return gateway("/v3/kv/put", string.format('{"key":"%s","value":"%s"}', keys[n % 10000], value))
end
