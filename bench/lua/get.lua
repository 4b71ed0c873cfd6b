-- GET of one existing key (the harness stores it first).
wrk.method = "GET"
wrk.path = "/store/bench-key"
-- With KV_TOKEN set (a server with --auth-file), every request carries it.
local token = os.getenv("KV_TOKEN")
if token then wrk.headers["Authorization"] = "Bearer " .. token end
