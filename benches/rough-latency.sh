#!/usr/bin/env bash
# A first, rough measure of what the proxy adds per request: the same chat completion sent to
# the built-in emulator directly (with a token fetched by hand) and through foundry-proxy,
# at 1 and 32 connections, with wrk. Also prints the proxy's idle and loaded RSS.
# Loopback only; bounded (about 50 s). Usage: benches/rough-latency.sh [SECONDS_PER_RUN]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
duration="${1:-10}"

if ! command -v wrk >/dev/null; then
    apt-get update -q && apt-get install -y -q wrk
fi
cargo build --release -q
bin=target/release/foundry-proxy
work="$(mktemp -d)"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

tenant="$(demo_value "$bin" AZURE_TENANT_ID)"; client="$(demo_value "$bin" AZURE_CLIENT_ID)"
secret="$(demo_value "$bin" AZURE_CLIENT_SECRET)"

# The emulator and wrk share core 1; the proxy gets core 0.
taskset -c 1 "$bin" emulate --listen 127.0.0.1:0 >"$work/emulator.out" 2>/dev/null & pids+=($!)
emulator="$(wait_line "$work/emulator.out" "emulator listening on ")"
FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" FOUNDRY_ENDPOINT="$emulator" \
AZURE_TENANT_ID="$tenant" AZURE_CLIENT_ID="$client" AZURE_CLIENT_SECRET="$secret" RUST_LOG=warn \
    taskset -c 0 "$bin" serve >"$work/proxy.out" 2>/dev/null & pids+=($!)
proxy_pid=$!
proxy="$(wait_line "$work/proxy.out" "foundry-proxy listening on ")"
until curl -sf "$proxy/readyz" >/dev/null; do sleep 0.05; done
rss() { awk '/VmRSS/ {print $2 / 1024 " MiB"}' "/proc/$proxy_pid/status"; }
echo "proxy idle RSS: $(rss)"

token="$(curl -sf "$emulator/$tenant/oauth2/v2.0/token" -d grant_type=client_credentials \
    --data-urlencode "client_id=$client" --data-urlencode "client_secret=$secret" \
    --data-urlencode scope=https://cognitiveservices.azure.com/.default |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')"
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello there, how are you?"}]}'
wrk.headers["content-type"] = "application/json"
local auth = os.getenv("AUTH")
if auth and auth ~= "" then wrk.headers["authorization"] = auth end
LUA

run() { # label url auth connections
    out="$(AUTH="$3" taskset -c 1 wrk -t1 -c"$4" -d"${duration}s" --latency -s "$work/post.lua" "$2")"
    rps="$(awk '/Requests\/sec/ {print $2}' <<<"$out")"
    p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
    p99="$(awk '$1 == "99%" {print $2}' <<<"$out")"
    errors="$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)"
    printf '| %-14s | %3s | %10s | %8s | %8s | %s\n' "$1" "$4" "$rps" "$p50" "$p99" "${errors:-ok}"
}
echo "| target         | conns | req/s | p50 | p99 | errors"
for connections in 1 32; do
    run direct "$emulator/openai/v1/chat/completions" "Bearer $token" "$connections"
    run foundry-proxy "$proxy/v1/chat/completions" "" "$connections"
done
echo "proxy RSS after load: $(rss)"
