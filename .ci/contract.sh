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
# Chromium, and certutil and openssl for the HTTPS browser test's trusted CA.
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v certutil >/dev/null || need+=(libnss3-tools)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
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

# Processes to stop however the script ends.
cleanup=()
trap 'for pid in "${cleanup[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT

# The generated clients and schemathesis, against a server started with
# $KV_STORE_ARGS (each server under its own KV_ETCD_PREFIX on etcd).
clients_and_schemathesis() {
  echo "== TypeScript client (openapi-typescript + openapi-fetch): type-check, then run against a server"
  (cd clients/typescript && npm run --silent check && npm test --silent)

  echo "== Python client (openapi-python-client) + pytest"
  rm -rf target/python-client
  "$venv/bin/openapi-python-client" generate --path openapi/kv-store.json \
    --output-path target/python-client/kv_store_client --meta none \
    --config clients/python/generator.yaml --custom-template-path clients/python/templates
  "$venv/bin/python" -m pytest -q -p no:cacheprovider clients/python

  echo "== schemathesis (with a token from kv-store token new)"
  log=target/schemathesis-server.log
  minted=$("$KV_STORE_BIN" token new --name schemathesis --write "" --admin)
  token=$(head -1 <<<"$minted")
  sed -n '/^\[\[token\]\]/,$p' <<<"$minted" >target/schemathesis-tokens.toml
  # shellcheck disable=SC2086 # the extra flags are meant to split
  # A lock or a campaign waits at most 100 ms in line: the fuzzer's calls
  # queue on the same few names.
  KV_ETCD_PREFIX="schemathesis-$$/" "$KV_STORE_BIN" --listen 127.0.0.1:0 --rate-limit 0 \
    --max-lock-wait 100ms --auth-file target/schemathesis-tokens.toml $KV_STORE_ARGS >"$log" 2>&1 &
  server=$!
  cleanup+=("$server")
  url=""
  for _ in $(seq 1 100); do
    url=$(grep -o 'listening on http://[0-9.:]*' "$log" | head -1 | cut -d' ' -f3 || true)
    [ -n "$url" ] && break
    sleep 0.1
  done
  [ -n "$url" ] || { cat "$log"; exit 1; }
  (cd tests/contract && PYTHONPATH=. "../../$venv/bin/schemathesis" --config-file schemathesis.toml \
    run "$url/openapi.json" --exclude-path-regex "$ST_EXCLUDE" --max-examples 200 \
    --header "Authorization: Bearer $token")
  kill $server
}

# Streams that never end (watches, an election's observers) are not for a
# fuzzer.
export ST_EXCLUDE='^/watch|/observe$'
export KV_STORE_ARGS=""
clients_and_schemathesis

echo "== the same against --backend etcd (one etcd member on loopback)"
cargo build --features etcd
etcd_dir=$(mktemp -d)
etcd --name contract --data-dir "$etcd_dir" \
  --listen-client-urls http://127.0.0.1:23179 --advertise-client-urls http://127.0.0.1:23179 \
  --listen-peer-urls http://127.0.0.1:23180 --initial-advertise-peer-urls http://127.0.0.1:23180 \
  --initial-cluster contract=http://127.0.0.1:23180 --max-txn-ops 1024 >target/contract-etcd.log 2>&1 &
etcd_pid=$!
cleanup+=("$etcd_pid")
healthy=""
for _ in $(seq 1 100); do
  curl -fs http://127.0.0.1:23179/health | grep -q '"health":"true"' && { healthy=yes; break; }
  sleep 0.1
done
[ -n "$healthy" ] || { cat target/contract-etcd.log; exit 1; }
export KV_STORE_ARGS="--backend etcd --etcd-endpoints http://127.0.0.1:23179 --etcd-max-txn-ops 1024"
# On etcd, GET /backup is 501 by design (use etcdctl snapshot save; tests/it/backup.rs
# checks the answer), which schemathesis counts as a server error.
export ST_EXCLUDE='^/watch|/observe$|^/backup$'
clients_and_schemathesis
kill $etcd_pid
rm -rf "$etcd_dir"
cargo build

echo "== Swagger UI (also over HTTPS with a token) and EventSource in Chromium"
(cd tests/browser && npm test --silent)
