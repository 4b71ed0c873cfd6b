#!/usr/bin/env bash
# Runs the README's curl examples verbatim against a fresh
# `cargo run --release` on :3000 and checks what they answer.
set -euo pipefail
cd "$(dirname "$0")/.."

# The examples must be in the README exactly as they run here.
examples=(
  'curl -X PUT http://localhost:3000/store/key1 -d "value1"'
  'curl http://localhost:3000/store/key1'
  'curl -X DELETE http://localhost:3000/store/key1'
  "curl -X POST http://localhost:3000/store/cas/key1 -H \"Content-Type: application/json\" -d '{\"expected\":\"old_value\",\"new\":\"new_value\"}'"
  'curl http://localhost:3000/watch_key/key1'
  "curl -X POST http://localhost:3000/watch -H \"Content-Type: application/json\" -d '[\"key1\", \"key2\", \"key3\"]'"
)
for example in "${examples[@]}"; do
  grep -qxF "$example" README.md || { echo "README lacks: $example"; exit 1; }
done

cargo build --release
cargo run --release >/tmp/kv-store-readme.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -sf http://localhost:3000/healthz >/dev/null && break
  sleep 0.1
done

passed=0
check() { # expected, actual, what
  if [ "$1" != "$2" ]; then
    echo "FAIL: $3: expected [$1], got [$2]"
    echo "README examples: failed after $passed checks"
    exit 1
  fi
  passed=$((passed + 1))
  echo "ok: $3"
}
run() { eval "$1" 2>/dev/null; }
code() { eval "${1/curl/curl -s -o /dev/null -w %\{http_code\}}"; }

check 201 "$(code "${examples[0]}")" "PUT creates"
check value1 "$(run "${examples[1]}")" "GET reads"
check 204 "$(code "${examples[2]}")" "DELETE deletes"
check 404 "$(code "${examples[3]}")" "CAS on an absent key"
curl -s -X PUT http://localhost:3000/store/key1 -d "old_value" >/dev/null
check 204 "$(code "${examples[3]}")" "CAS swaps"
check new_value "$(run "${examples[1]}")" "GET after CAS"

# Watches stream until cut: read the first event and stop.
single=$(timeout 2 bash -c "${examples[4]} -sN" | head -n 3 || true)
check 'event: snapshot' "$(sed -n 2p <<<"$single")" "watch_key sends a snapshot"
multi=$(timeout 2 bash -c "${examples[5]/curl/curl -sN}" | grep -c '^event: snapshot' || true)
check 3 "$multi" "watch sends one snapshot per key"
echo "README examples: all $passed checks passed"
