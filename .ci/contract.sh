#!/usr/bin/env bash
# The contract with clients, checked against live servers: the spec lints
# clean, schemathesis finds no failure, the generated Python and TypeScript
# clients work against a server, and Swagger UI and EventSource work in Chromium.
# (The Rust client's tests run in `cargo test`.) Installs what it needs:
# Debian's chromium, a Python venv under target/, npm packages from the
# committed lock files.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== install contract tools"
if ! command -v chromium >/dev/null; then
  apt-get update
  apt-get install -y --no-install-recommends chromium
fi
venv=target/contract-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -r clients/python/requirements.txt -r tests/contract/requirements.txt
for dir in tests/contract clients/typescript tests/browser; do
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

cargo build
export KV_STORE_BIN="$PWD/target/debug/kv-store"

echo "== redocly lint"
tests/contract/node_modules/.bin/redocly lint --config redocly.yaml

echo "== TypeScript client (openapi-typescript + openapi-fetch): type-check, then run against a server"
(cd clients/typescript && npm run --silent check && npm test --silent)

echo "== Python client (openapi-python-client) + pytest"
rm -rf target/python-client
"$venv/bin/openapi-python-client" generate --path openapi/kv-store.json \
  --output-path target/python-client/kv_store_client --meta none
"$venv/bin/python" -m pytest -q -p no:cacheprovider clients/python

echo "== schemathesis"
log=target/schemathesis-server.log
"$KV_STORE_BIN" --listen 127.0.0.1:0 --rate-limit 0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
url=""
for _ in $(seq 1 100); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat "$log"; exit 1; }
(cd tests/contract && PYTHONPATH=. "../../$venv/bin/schemathesis" --config-file schemathesis.toml \
  run "$url/openapi.json" --exclude-path-regex '^/watch' --max-examples 200)
kill $server

echo "== Swagger UI and EventSource in Chromium"
(cd tests/browser && npm test --silent)
