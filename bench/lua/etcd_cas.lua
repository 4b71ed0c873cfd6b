-- etcd's JSON gateway: the compare-and-swap cas_same.lua asks of kv-store,
-- as a transaction (value == "0", then put "0").
dofile(os.getenv("LUA_DIR") .. "/etcd_common.lua")
local key, zero = base64("kv-store/counter"), base64("0")
local body = string.format(
  '{"compare":[{"key":"%s","target":"VALUE","result":"EQUAL","value":"%s"}],' ..
  '"success":[{"requestPut":{"key":"%s","value":"%s"}}]}', key, zero, key, zero)
request = function()
  return gateway("/v3/kv/txn", body)
end
