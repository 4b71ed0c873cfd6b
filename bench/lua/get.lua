-- GET of one existing key (the harness stores it first).
wrk.method = "GET"
wrk.path = "/store/bench-key"
