-- etcd's JSON gateway: a range read of the key kv-store's get.lua reads.
dofile(os.getenv("LUA_DIR") .. "/etcd_common.lua")
local body = string.format('{"key":"%s"}', base64("kv-store/bench-key"))
request = function()
  return gateway("/v3/kv/range", body)
end
