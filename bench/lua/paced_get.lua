-- GET of one existing key, each connection pacing itself to one request
-- per millisecond (the harness sets the rate through the connection count).
wrk.method = "GET"
wrk.path = "/store/bench-key"
delay = function()
  return 1
end
