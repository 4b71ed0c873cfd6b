-- Compare-and-swap of one key that always succeeds (expects "0", writes
-- "0"): the same work as etcd_cas.lua asks of etcd's gateway.
local body = '{"expected":"0","new":"0"}'
request = function()
  return wrk.format("POST", "/store/cas/counter", {["Content-Type"] = "application/json"}, body)
end
