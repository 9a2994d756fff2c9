#!/usr/bin/env bash
# A bounded soak of foundry-proxy against the built-in emulator: a steady rate of JSON and
# streaming chat completions for MINUTES, while the emulator's tokens expire every 40 s (the proxy
# renews them every ~20 s) and the access-keys file is rewritten every 10 s (a key added, the
# previous extra key revoked, the key in use kept). Not part of CI.
#
# Every 30 s it records the requests and failures so far, the token refreshes the proxy has made
# (/metrics), and the proxy's RSS, threads (it exposes no task count) and open file descriptors.
# It prints the table, writes it to target/bench/soak.md, and exits non-zero when:
#   - any request failed (a non-200, a transport error, a JSON answer without choices, a stream
#     without its [DONE], a stream that shows usage the client did not ask for, or one that lacks
#     the usage it asked for);
#   - a keys-file change was not picked up (the new key refused, or the revoked one accepted);
#   - fewer token refreshes happened than the lifetime implies (one per 20 s, less 2);
#   - between the first sample under load (30 s) and the last, RSS grew by more than
#     SOAK_RSS_GROWTH_MIB (16) or the FD count by more than SOAK_FD_GROWTH (16).
#
# Loopback only; stops by itself; everything it starts is stopped on exit.
# Usage: benches/soak.sh [MINUTES]   (default 5). Environment: SOAK_RATE (200 requests/s),
# SOAK_WORKERS (32 client connections), SOAK_TOKEN_LIFETIME (40 s), SOAK_RSS_GROWTH_MIB (16),
# SOAK_FD_GROWTH (16). The proxy runs on core 0, the emulator and the client on core 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
minutes="${1:-5}"
rate="${SOAK_RATE:-200}"
workers="${SOAK_WORKERS:-32}"
lifetime="${SOAK_TOKEN_LIFETIME:-40}"
rss_growth_mib="${SOAK_RSS_GROWTH_MIB:-16}"
fd_growth="${SOAK_FD_GROWTH:-16}"
seconds=$((minutes * 60))
sample_every=30
keys_every=10

case "$minutes" in '' | *[!0-9]* | 0) echo "soak.sh: MINUTES must be a whole number above 0" >&2; exit 2 ;; esac
command -v python3 >/dev/null || { echo "soak.sh: needs python3 for the load client" >&2; exit 2; }
core0=(); core1=()
if command -v taskset >/dev/null; then core0=(taskset -c 0); core1=(taskset -c 1); fi

cargo build --release -q
bin=target/release/foundry-proxy
out_dir=target/bench
mkdir -p "$out_dir"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    cp "$work/proxy.err" "$out_dir/soak-proxy.log" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

tenant="$(demo_value "$bin" AZURE_TENANT_ID)"; client="$(demo_value "$bin" AZURE_CLIENT_ID)"
secret="$(demo_value "$bin" AZURE_CLIENT_SECRET)"; model="$(demo_value "$bin" MODEL)"

"${core1[@]}" "$bin" emulate --listen 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.err" & pids+=($!)
emulator="$(wait_line "$work/emulator.out" "emulator listening on ")"
# Tokens issued from now on live $lifetime s; the proxy renews at half the lifetime.
curl -sf -X POST "$emulator/_emulator/config" -H 'content-type: application/json' \
    -d "{\"token_lifetime_secs\": $lifetime}" >/dev/null

keys="$work/keys.toml"
key="$("$bin" keys add soak --admin --file "$keys" 2>/dev/null)"
FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" FOUNDRY_ENDPOINT="$emulator" \
AZURE_TENANT_ID="$tenant" AZURE_CLIENT_ID="$client" AZURE_CLIENT_SECRET="$secret" \
FOUNDRY_PROXY_KEYS_FILE="$keys" RUST_LOG=warn \
    "${core0[@]}" "$bin" serve >"$work/proxy.out" 2>"$work/proxy.err" & pids+=($!)
proxy_pid=$!
proxy="$(wait_line "$work/proxy.out" "foundry-proxy listening on ")"
for _ in $(seq 1 200); do curl -sf "$proxy/readyz" >/dev/null && break; sleep 0.05; done
curl -sf "$proxy/readyz" >/dev/null || { echo "proxy never became ready" >&2; cat "$work/proxy.err" >&2; exit 1; }

alive() {
    kill -0 "$proxy_pid" 2>/dev/null && return 0
    echo "soak.sh: foundry-proxy (pid $proxy_pid) is gone; last log lines:" >&2
    tail -20 "$work/proxy.err" >&2
    exit 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$proxy_pid/status"; }
fds() { find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
metric() { # name{labels} -> value
    curl -sf -H "authorization: Bearer $key" "$proxy/metrics" |
        awk -v m="$1" 'index($0, m " ") == 1 {print $2; found = 1} END {if (!found) print 0}'
}
refreshes() { metric 'foundry_proxy_token_refreshes_total{outcome="ok"}'; }
progress() { # field -> value from the client's progress file
    sed -n "s/^$1=//p" "$work/progress" 2>/dev/null | head -1 | grep . || echo 0
}

# The load client: WORKERS keep-alive connections, each sending at RATE/WORKERS per second on a
# fixed schedule; half JSON answers, a quarter streams without usage asked, a quarter with.
cat >"$work/load.py" <<'PY'
import http.client, json, os, sys, threading, time
from urllib.parse import urlsplit

url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
rate, seconds, workers = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
progress_path, summary_path = sys.argv[7], sys.argv[8]
target = urlsplit(url)
lock = threading.Lock()
counts = {"requests": 0, "ok": 0, "failed": 0, "json": 0, "stream": 0, "stream_usage": 0, "late": 0}
reasons = {}
latencies = []
start = time.monotonic() + 0.5
stop_at = start + seconds

def body(kind):
    request = {"model": model, "messages": [{"role": "user", "content": "soak test, say something"}]}
    if kind != "json":
        request["stream"] = True
    if kind == "stream_usage":
        request["stream_options"] = {"include_usage": True}
    return json.dumps(request)

def check(kind, status, data):
    if status != 200:
        return f"status {status}"
    if kind == "json":
        answer = json.loads(data)
        return None if answer.get("choices") else "json without choices"
    if not data.endswith(b"data: [DONE]\n\n"):
        return "stream without [DONE]"
    has_usage = b'"usage"' in data
    if kind == "stream" and has_usage:
        return "usage in a stream that did not ask for it"
    if kind == "stream_usage" and not has_usage:
        return "no usage in a stream that asked for it"
    return None

def worker(index):
    interval = workers / rate
    next_at = start + index * interval / workers
    conn = None
    n = index
    mine = []
    while next_at < stop_at:
        now = time.monotonic()
        if next_at > now:
            time.sleep(next_at - now)
        elif now - next_at > 1.0:
            with lock:
                counts["late"] += 1
        kind = ("json", "stream", "json", "stream_usage")[n % 4]
        n += 1
        began = time.monotonic()
        failure = None
        try:
            if conn is None:
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            conn.request("POST", "/v1/chat/completions", body(kind), {
                "content-type": "application/json",
                "authorization": f"Bearer {key}",
                "x-emulator-chunks": "5",
            })
            response = conn.getresponse()
            data = response.read()
            failure = check(kind, response.status, data)
            if response.will_close:
                conn.close()
                conn = None
        except Exception as e:  # transport errors count as failures
            failure = f"{type(e).__name__}: {e}"
            if conn is not None:
                conn.close()
            conn = None
        mine.append(time.monotonic() - began)
        with lock:
            counts["requests"] += 1
            counts["json" if kind == "json" else "stream"] += 1
            if failure is None:
                counts["ok"] += 1
            else:
                counts["failed"] += 1
                reasons[failure] = reasons.get(failure, 0) + 1
        next_at += interval
    with lock:
        latencies.extend(mine)

def reporter():
    while time.monotonic() < stop_at + 5:
        with lock:
            text = "".join(f"{k}={v}\n" for k, v in counts.items())
        with open(progress_path + ".tmp", "w") as f:
            f.write(text)
        os.replace(progress_path + ".tmp", progress_path)
        time.sleep(1)

threading.Thread(target=reporter, daemon=True).start()
threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0
summary = dict(counts, elapsed=round(elapsed, 1), rate=round(counts["requests"] / elapsed, 1),
               p50_ms=round(pick(0.5), 2), p99_ms=round(pick(0.99), 2), max_ms=round(pick(1.0), 2),
               reasons=reasons)
with open(summary_path, "w") as f:
    json.dump(summary, f)
with lock:
    text = "".join(f"{k}={v}\n" for k, v in counts.items())
with open(progress_path, "w") as f:
    f.write(text)
PY

# Keys-file churn: every $keys_every s add extra-N, revoke extra-(N-1); a moment later the new
# key must be accepted and the revoked one refused (/status needs a key). Problems go to a file.
churn() {
    local n=0 previous="" previous_key="" added
    while sleep "$keys_every"; do
        n=$((n + 1))
        added="$("$bin" keys add "extra-$n" --file "$keys" 2>>"$work/churn.err")" ||
            { echo "add extra-$n failed" >>"$work/churn.bad"; continue; }
        if [ -n "$previous" ]; then
            "$bin" keys revoke "$previous" --file "$keys" >/dev/null 2>>"$work/churn.err" ||
                echo "revoke $previous failed" >>"$work/churn.bad"
        fi
        sleep 2
        code="$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $added" "$proxy/status")"
        [ "$code" = 200 ] || echo "extra-$n answered $code, 200 expected" >>"$work/churn.bad"
        if [ -n "$previous_key" ]; then
            code="$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $previous_key" "$proxy/status")"
            [ "$code" = 401 ] || echo "revoked $previous answered $code, 401 expected" >>"$work/churn.bad"
        fi
        echo "$n" >"$work/churn.count"
        previous="extra-$n"; previous_key="$added"
    done
}

echo "soak: $minutes min at $rate requests/s ($workers connections), tokens living $lifetime s, keys file rewritten every $keys_every s"
rows=()
sample() { # label
    alive
    local row
    row="$(printf '| %-8s | %8s | %6s | %9s | %9s | %7s | %4s |' "$1" "$(progress requests)" \
        "$(progress failed)" "$(refreshes)" "$(awk -v k="$(rss_kib)" 'BEGIN {printf "%.1f", k / 1024}')" \
        "$(threads)" "$(fds)")"
    rows+=("$row")
    echo "$row"
}
header='| t        | requests | failed | refreshes | RSS (MiB) | threads |  fds |'
rule='|----------|----------|--------|-----------|-----------|---------|------|'
echo "$header"; echo "$rule"
refreshes_start="$(refreshes)"
sample "start"
rss_start="$(rss_kib)"; fds_start="$(fds)"

churn & pids+=($!)
churn_pid=$!
"${core1[@]}" python3 "$work/load.py" "$proxy" "$key" "$model" "$rate" "$seconds" "$workers" \
    "$work/progress" "$work/summary.json" & pids+=($!)
load_pid=$!
began=$SECONDS
rss_warm=""; fds_warm=""; rss_last=""; fds_last=""
for ((t = sample_every; t <= seconds; t += sample_every)); do
    while [ $((SECONDS - began)) -lt "$t" ]; do alive; sleep 1; done
    sample "${t} s"
    if [ -z "$rss_warm" ]; then rss_warm="$(rss_kib)"; fds_warm="$(fds)"; fi
    rss_last="$(rss_kib)"; fds_last="$(fds)"
done
load_status=0
wait "$load_pid" || load_status=$?
kill "$churn_pid" 2>/dev/null || true
wait "$churn_pid" 2>/dev/null || true
sleep 3
sample "idle +3 s"
refreshes_end="$(refreshes)"

summary="$(cat "$work/summary.json" 2>/dev/null || echo '{}')"
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get(sys.argv[2], "?"))' "$summary" "$1"; }
requests="$(field requests)"; failed="$(field failed)"
rotations=$((refreshes_end - refreshes_start))
expected_rotations=$((seconds / (lifetime / 2) - 2))
churns="$(cat "$work/churn.count" 2>/dev/null || echo 0)"
churn_bad="$(cat "$work/churn.bad" 2>/dev/null || true)"
rss_growth=$(( ${rss_last:-0} - ${rss_warm:-0} ))
fd_growth_seen=$(( ${fds_last:-0} - ${fds_warm:-0} ))

problems=()
[ "$load_status" = 0 ] || problems+=("the load client exited with $load_status")
[ "$failed" = 0 ] || problems+=("$failed requests failed: $(field reasons)")
[ "$requests" != "?" ] && [ "$requests" -gt 0 ] || problems+=("no requests were made")
[ -z "$churn_bad" ] || problems+=("keys-file changes: $(tr '\n' ';' <<<"$churn_bad")")
[ "$rotations" -ge "$expected_rotations" ] || problems+=("$rotations token refreshes, at least $expected_rotations expected")
[ "$rss_growth" -le $((rss_growth_mib * 1024)) ] || problems+=("RSS grew $((rss_growth / 1024)) MiB under load (bound $rss_growth_mib MiB)")
[ "$fd_growth_seen" -le "$fd_growth" ] || problems+=("FDs grew by $fd_growth_seen under load (bound $fd_growth)")

report="$out_dir/soak.md"
{
    echo "## foundry-proxy soak: $minutes min"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo ' (src modified)'), $(nproc) cores; proxy on core 0, emulator + client on core 1."
    echo "Load: $rate requests/s target over $workers keep-alive connections, half JSON chat completions, a quarter streams (5 chunks, 20 ms apart) without usage asked, a quarter with."
    echo "Tokens live $lifetime s (the proxy renews at half); the keys file is rewritten every $keys_every s (one key added, the previous extra key revoked, the key in use kept)."
    echo
    echo "$header"
    echo "$rule"
    printf '%s\n' "${rows[@]}"
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| requests / failed | $requests / $failed |"
    echo "| achieved rate | $(field rate) requests/s over $(field elapsed) s ($(field json) JSON, $(field stream) streams; $(field late) sends more than 1 s late) |"
    echo "| latency p50 / p99 / max (whole answer) | $(field p50_ms) / $(field p99_ms) / $(field max_ms) ms |"
    echo "| token refreshes (ok) during the soak | $rotations (at least $expected_rotations expected) |"
    echo "| keys-file rewrites checked | $churns$( [ -n "$churn_bad" ] && echo " ($(wc -l <<<"$churn_bad") problems)") |"
    echo "| RSS start / first sample under load / last / growth under load | $(awk -v a="$rss_start" -v b="${rss_warm:-0}" -v c="${rss_last:-0}" 'BEGIN {printf "%.1f / %.1f / %.1f MiB", a / 1024, b / 1024, c / 1024}') / $(awk -v g="$rss_growth" 'BEGIN {printf "%+.1f MiB", g / 1024}') (bound $rss_growth_mib MiB) |"
    echo "| FDs start / first sample under load / last / growth under load | $fds_start / ${fds_warm:-?} / ${fds_last:-?} / $fd_growth_seen (bound $fd_growth) |"
    echo "| proxy warnings and errors logged | $(grep -c -E 'WARN|ERROR' "$work/proxy.err" || true) |"
    echo
    if [ "${#problems[@]}" -eq 0 ]; then
        echo "Result: pass."
    else
        echo "Result: FAIL"
        printf -- '- %s\n' "${problems[@]}"
    fi
} >"$report"
echo
sed -n '/^| measure/,$p' "$report"
echo "(written to $report)"
[ "${#problems[@]}" -eq 0 ]
