#!/usr/bin/env bash
# CPU time per PUT of one server binary, for quick A/B of two builds:
#   bench/putcpu.sh BINARY [server flags...]
# 2 s of warm-up, then 5 s of bench/lua/put.lua under wrk (server on core 0,
# wrk on core 1); prints the server's utime + stime (from /proc) per request
# in microseconds. Alternate the builds and run each several times: on a
# shared machine one run says little.
set -euo pipefail
bin=$1
shift
lua="$(dirname "$0")/lua/put.lua"
url=http://127.0.0.1:3201
taskset -c 0 "$bin" --listen 127.0.0.1:3201 --rate-limit 0 "$@" >/dev/null 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
until (exec 3<>/dev/tcp/127.0.0.1/3201) 2>/dev/null; do sleep 0.05; done
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
taskset -c 1 wrk -t1 -c32 -d2s -s "$lua" "$url" >/dev/null
before=$(cpu)
requests=$(taskset -c 1 wrk -t1 -c32 -d5s -s "$lua" "$url" | awk '/requests in/ {print $1}')
after=$(cpu)
ticks=$(getconf CLK_TCK)
python3 -c "print(round(($after - $before) / $ticks / $requests * 1e6, 2))"
