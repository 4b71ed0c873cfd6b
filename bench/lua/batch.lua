-- POST /batch with 1000 GETs or 1000 PUTs; BATCH_KIND=get|put.
local kind = os.getenv("BATCH_KIND") or "get"
local ops = {}
local value = string.rep("v", 100)
for i = 0, 999 do
  if kind == "put" then
    ops[#ops + 1] = string.format('{"method":"PUT","key":"key%d","value":"%s"}', i, value)
  else
    ops[#ops + 1] = string.format('{"method":"GET","key":"key%d"}', i)
  end
end
wrk.method = "POST"
wrk.path = "/batch"
wrk.headers["Content-Type"] = "application/json"
wrk.body = "[" .. table.concat(ops, ",") .. "]"
