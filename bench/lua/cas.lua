-- Compare-and-swap increments of one hot key. Each thread tracks the value
-- it last saw; a 412 answer carries the current value.
local current = 0
local ok, failed = 0, 0
request = function()
  local body = string.format('{"expected":"%d","new":"%d"}', current, current + 1)
  return wrk.format("POST", "/store/cas/counter", {["Content-Type"] = "application/json"}, body)
end
response = function(status, headers, body)
  if status == 204 then
    current = current + 1
    ok = ok + 1
  else
    failed = failed + 1
    local value = body and body:match('"value":"(%d+)"')
    if value then current = tonumber(value) end
  end
end
