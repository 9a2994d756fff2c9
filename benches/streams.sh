#!/usr/bin/env bash
# Many concurrent slow SSE streams through foundry-proxy: memory per open stream, file
# descriptors, and the time to first byte the proxy adds over talking to the upstream directly.
#
# The upstream is benches/streams_bench.rs: HTTPS (h2 and http/1.1, a private CA given to the
# proxy through SSL_CERT_FILE) answering every POST with a Chat Completions stream of one chunk a
# second. The proxy reaches it over one multiplexed HTTP/2 connection; clients reach the proxy
# with one plain HTTP/1.1 connection per stream.
#
#   1. direct:  TTFB_STREAMS streams (HTTPS, HTTP/1.1) straight to the upstream;
#   2. proxied: the same through the proxy, after one warm-up stream that opens the proxy's
#      connection to the upstream;
#   3. N streams through the proxy, opened at most OPEN_CONCURRENCY at a time; the proxy's RSS
#      and fds are read when all N are open (the plateau) and again after they have finished.
#
# Usage: benches/streams.sh [N] [SECONDS]   (defaults: 10000 streams of 20 s, about 40 s once
# built; SECONDS must exceed the time it takes to open all N, or the plateau never holds all of
# them). The proxy runs on core 0, everything else on core 1. Writes target/bench/streams.md,
# streams-samples.tsv (the proxy's RSS and fds every half second during the N-stream run) and
# streams-proxy.log (its warnings). Fails if any stream fails or the proxy goes away.
# Environment: TTFB_STREAMS (100), OPEN_CONCURRENCY (128).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh
streams="${1:-10000}"
seconds="${2:-20}"
ttfb_streams="${TTFB_STREAMS:-100}"
open_concurrency="${OPEN_CONCURRENCY:-128}"
ttfb_seconds=3

# Both the load generator and the proxy hold one socket per stream.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$((streams + 256))" -gt "$(ulimit -n)" ]; then
    echo "streams.sh: $streams streams need more than the open-files limit ($(ulimit -n))" >&2
    exit 1
fi

bench="$(build_bench streams_bench)"
cargo build --release -q
bin=target/release/foundry-proxy
out_dir=target/bench
mkdir -p "$out_dir"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    cp "$work/proxy.err" "$out_dir/streams-proxy.log" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
forget() { # pid: reaped, so its number may soon belong to someone else
    local pid kept=()
    for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    pids=("${kept[@]}")
}
bench_started=$SECONDS
loadavg_before="$(cut -d' ' -f1-3 /proc/loadavg)"

tenant="$(demo_value "$bin" AZURE_TENANT_ID)"; client="$(demo_value "$bin" AZURE_CLIENT_ID)"
secret="$(demo_value "$bin" AZURE_CLIENT_SECRET)"

taskset -c 1 "$bin" emulate --listen 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.err" & pids+=($!)
emulator="$(wait_line "$work/emulator.out" "emulator listening on ")"
taskset -c 1 "$bench" upstream --listen 127.0.0.1:0 --cert-out "$work/pki" \
    >"$work/upstream.out" 2>"$work/upstream.err" & pids+=($!)
upstream_pid=$!
upstream="$(wait_line "$work/upstream.out" "upstream listening on ")"
FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" FOUNDRY_ENDPOINT="$upstream" \
FOUNDRY_API=openai-v1 SSL_CERT_FILE="$work/pki/ca.pem" \
AZURE_TENANT_ID="$tenant" AZURE_CLIENT_ID="$client" AZURE_CLIENT_SECRET="$secret" RUST_LOG=warn \
    taskset -c 0 "$bin" serve >"$work/proxy.out" 2>"$work/proxy.err" & pids+=($!)
proxy_pid=$!
proxy="$(wait_line "$work/proxy.out" "foundry-proxy listening on ")"
for _ in $(seq 1 200); do curl -sf "$proxy/readyz" >/dev/null && break; sleep 0.05; done
curl -sf "$proxy/readyz" >/dev/null || { echo "proxy never became ready" >&2; cat "$work/proxy.err" >&2; exit 1; }

# The proxy must outlive every phase; if it is gone, say how it ended and stop.
check_proxy() { # phase
    kill -0 "$proxy_pid" 2>/dev/null && return 0
    local status=0
    wait "$proxy_pid" || status=$?
    forget "$proxy_pid"
    echo "streams.sh: foundry-proxy (pid $proxy_pid) is gone during $1: exit status $status" \
        "($( [ "$status" -gt 128 ] && echo "signal $((status - 128))" || echo "exited; 0 = clean shutdown after SIGTERM/SIGINT"))" >&2
    echo "last proxy log lines:" >&2
    tail -20 "$work/proxy.err" >&2
    exit 1
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$proxy_pid/status"; }
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$proxy_pid/status"; }
fds() { find "/proc/$proxy_pid/fd" -mindepth 1 -maxdepth 1 | wc -l; }
threads() { awk '/^Threads/ {print $2}' "/proc/$proxy_pid/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/${1:-$proxy_pid}/stat" 2>/dev/null || echo 0; }
cpu_secs() { awk -v t="$1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
field() { sed -n "s/^$2=//p" "$1"; }
in_flight() { curl -sf "$proxy/metrics" | awk '/^foundry_proxy_streams_in_flight / {print $2}'; }
upstream_stat() { curl -sf --http1.1 --cacert "$work/pki/ca.pem" "$upstream/stats" | sed -n "s/^$1=//p"; }
rss_start="$(rss_kib)"; fds_start="$(fds)"

load() { # label url out-file extra-args...
    local label="$1" url="$2" out="$3"; shift 3
    taskset -c 1 "$bench" load --label "$label" --url "$url" --out "$out" "$@"
}

echo "== 1. direct: $ttfb_streams streams to the upstream (HTTPS, HTTP/1.1)"
load direct "$upstream/openai/v1/chat/completions" "$work/direct.txt" --streams "$ttfb_streams" \
    --seconds "$ttfb_seconds" --rate 200 --open-concurrency 16 --tls-ca "$work/pki/ca.pem"
echo "== 2. proxied: $ttfb_streams streams through foundry-proxy (after one warm-up stream, which opens its HTTP/2 connection)"
load warm-up "$proxy/v1/chat/completions" "$work/warm-up.txt" --streams 1 --seconds 0 >/dev/null
load proxied "$proxy/v1/chat/completions" "$work/proxied.txt" --streams "$ttfb_streams" \
    --seconds "$ttfb_seconds" --rate 200 --open-concurrency 16
sleep 1
check_proxy "the warm-up"
h2_warm="$(upstream_stat connections_h2)"
rss_idle="$(rss_kib)"; fds_idle="$(fds)"; threads_idle="$(threads)"

echo "== 3. $streams streams of $seconds s through foundry-proxy (idle RSS $(mib "$rss_idle"), $fds_idle fds)"
ticks_before="$(cpu_ticks)"; upstream_ticks_before="$(cpu_ticks "$upstream_pid")"
load_started=$SECONDS
taskset -c 1 "$bench" load --label plateau --url "$proxy/v1/chat/completions" \
    --out "$work/plateau.txt" --streams "$streams" --seconds "$seconds" \
    --open-concurrency "$open_concurrency" --ready-file "$work/ready" \
    --timeout "$((seconds + 120))" &
load_pid=$!
pids+=($load_pid)
load_ticks=0
printf 't_s\trss_kib\tfds\n' >"$out_dir/streams-samples.tsv"
rss_plateau=""; fds_plateau=""; in_flight_plateau=""; upstream_active_plateau=""
while kill -0 "$load_pid" 2>/dev/null; do
    check_proxy "the $streams-stream run"
    printf '%s\t%s\t%s\n' "$((SECONDS - load_started))" "$(rss_kib)" "$(fds)" >>"$out_dir/streams-samples.tsv"
    if [ -z "$rss_plateau" ] && [ -f "$work/ready" ]; then
        rss_plateau="$(rss_kib)"; fds_plateau="$(fds)"; threads_plateau="$(threads)"
        ticks_ramp="$(cpu_ticks)"
        in_flight_plateau="$(in_flight || echo '?')"
        upstream_active_plateau="$(upstream_stat streams_active || echo '?')"
        plateau_at=$((SECONDS - load_started))
        echo "plateau at ${plateau_at} s: RSS $(mib "$rss_plateau"), $fds_plateau fds, $in_flight_plateau streams in flight (proxy metric), $upstream_active_plateau at the upstream"
    fi
    # RSS at the end of the plateau: the last sample before the first streams finish.
    if [ -n "$rss_plateau" ] && [ "$((SECONDS - load_started))" -le "$((seconds - 1))" ]; then
        rss_plateau_end="$(rss_kib)"
    fi
    ticks="$(cpu_ticks "$load_pid")"; [ "$ticks" -gt 0 ] && load_ticks="$ticks"
    sleep 0.5
done
load_status=0
wait "$load_pid" || load_status=$?
forget "$load_pid"
ticks_after="$(cpu_ticks)"; upstream_ticks_after="$(cpu_ticks "$upstream_pid")"
load_secs=$((SECONDS - load_started))
sleep 2
check_proxy "the end of the $streams-stream run"
rss_after="$(rss_kib)"; fds_after="$(fds)"
# VmHWM is the kernel's peak; the half-second samples can catch a higher VmRSS than it shows yet.
rss_peak="$(awk -v hwm="$(hwm_kib)" 'NR > 1 && $2 > hwm {hwm = $2} END {print hwm}' "$out_dir/streams-samples.tsv")"
in_flight_after="$(in_flight || echo '?')"
up_h2="$(upstream_stat connections_h2)"; up_h1="$(upstream_stat connections_http1)"
up_open="$(upstream_stat connections_h2_open)"; up_peak="$(upstream_stat streams_peak)"
warnings="$(grep -c -E 'WARN|ERROR' "$work/proxy.err" || true)"
upstream_errors="$(wc -l <"$work/upstream.err")"

if [ -z "$rss_plateau" ]; then
    echo "streams.sh: the load never reached its plateau (see above)" >&2
    rss_plateau="$rss_idle"; fds_plateau="?"; threads_plateau="?"
fi
rss_plateau_end="${rss_plateau_end:-$rss_plateau}"
opened="$(field "$work/plateau.txt" opened)"
active_at_ready="$(field "$work/plateau.txt" active_at_ready)"
per_stream="$(awk -v a="$rss_plateau" -v b="$rss_idle" -v n="$active_at_ready" \
    'BEGIN {if (n > 0) printf "%.1f", (a - b) / n; else print "?"}')"
per_stream_end="$(awk -v a="$rss_plateau_end" -v b="$rss_idle" -v n="$active_at_ready" \
    'BEGIN {if (n > 0) printf "%.1f", (a - b) / n; else print "?"}')"
ramp_secs="$(field "$work/plateau.txt" ramp_secs)"
proxy_cpu_ramp="$(cpu_secs "$((${ticks_ramp:-$ticks_after} - ticks_before))")"
proxy_cpu_rest="$(cpu_secs "$((ticks_after - ${ticks_ramp:-$ticks_after}))")"
upstream_cpu="$(cpu_secs "$((upstream_ticks_after - upstream_ticks_before))")"
load_cpu="$(cpu_secs "$load_ticks")"
overhead() { awk -v a="$(field "$work/proxied.txt" "$1")" -v b="$(field "$work/direct.txt" "$1")" \
    'BEGIN {printf "%+.2f ms", a - b}'; }
ttfb() { echo "$(field "$1" ttfb_min_ms) / $(field "$1" ttfb_p50_ms) / $(field "$1" ttfb_p99_ms) / $(field "$1" ttfb_max_ms) ms"; }

report="$out_dir/streams.md"
{
    echo "## foundry-proxy: $streams concurrent slow SSE streams"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet -- src 2>/dev/null || echo ' (src modified)'), $(nproc) cores (load average before: $loadavg_before); proxy on core 0, load + upstream on core 1."
    echo "Each stream: one HTTP/1.1 connection to the proxy, a role chunk at once, then one chunk a second."
    echo "Upstream: HTTPS, reached by the proxy over HTTP/2. TTFB: request written → first body byte."
    echo
    echo "| measure | value |"
    echo "|---|---|"
    echo "| TTFB direct, $ttfb_streams streams (HTTPS HTTP/1.1), min / p50 / p99 / max | $(ttfb "$work/direct.txt") |"
    echo "| TTFB through proxy, $ttfb_streams streams, min / p50 / p99 / max | $(ttfb "$work/proxied.txt") |"
    echo "| TTFB overhead of the proxy, p50 / p99 | $(overhead ttfb_p50_ms) / $(overhead ttfb_p99_ms) |"
    echo "| TTFB while opening $streams streams ($open_concurrency opening at once), min / p50 / p99 / max | $(ttfb "$work/plateau.txt") |"
    echo "| time to open all $streams streams | $(field "$work/plateau.txt" ramp_secs) s |"
    echo "| streams open at the plateau (load / proxy metric / upstream) | $active_at_ready / $in_flight_plateau / $upstream_active_plateau |"
    echo "| streams completed / failed | $(field "$work/plateau.txt" completed) / $(field "$work/plateau.txt" failed) |"
    echo "| each stream's longest gap between chunks, p50 / p99 / max (1000 ms expected) | $(field "$work/plateau.txt" gap_p50_ms) / $(field "$work/plateau.txt" gap_p99_ms) / $(field "$work/plateau.txt" gap_max_ms) ms |"
    echo "| the same, gaps beginning after all streams were open | $(field "$work/plateau.txt" plateau_gap_p50_ms) / $(field "$work/plateau.txt" plateau_gap_p99_ms) / $(field "$work/plateau.txt" plateau_gap_max_ms) ms |"
    echo "| proxy RSS: start / idle (warm) / all open / end of plateau / after / peak | $(mib "$rss_start") / $(mib "$rss_idle") / $(mib "$rss_plateau") / $(mib "$rss_plateau_end") / $(mib "$rss_after") / $(mib "$rss_peak") |"
    echo "| proxy RSS per open stream (all open − idle) / streams; at end of plateau | $per_stream KiB; $per_stream_end KiB |"
    echo "| proxy fds: start / idle / all open / after | $fds_start / $fds_idle / $fds_plateau / $fds_after |"
    echo "| proxy threads: idle / all open | $threads_idle / $threads_plateau |"
    echo "| CPU, $streams-stream run: proxy while opening (${ramp_secs} s) / after (the rest of ${load_secs} s); upstream; load generator | $proxy_cpu_ramp s / $proxy_cpu_rest s; $upstream_cpu s; $load_cpu s |"
    echo "| proxy → upstream h2 connections: after warm-up / after the $streams-stream run / open at the end | $h2_warm / $up_h2 / $((up_open)) |"
    echo "| upstream: peak concurrent streams | $up_peak |"
    echo "| streams in flight after (proxy metric) | $in_flight_after |"
    echo "| proxy warnings/errors logged; upstream stderr lines | $warnings; $upstream_errors |"
} >"$report"
failures="$(grep '^failure_' "$work"/direct.txt "$work"/proxied.txt "$work"/plateau.txt || true)"
if [ -n "$failures" ]; then
    { echo; echo "Failures:"; echo; sed 's/^/    /' <<<"$failures"; } >>"$report"
fi
if [ "$warnings" -gt 0 ]; then
    { echo; echo "Proxy log (first lines):"; echo; head -5 "$work/proxy.err" | cut -c1-300 | sed 's/^/    /'; } >>"$report"
fi
echo
cat "$report"
echo
echo "wrote $report and $out_dir/streams-samples.tsv in $((SECONDS - bench_started)) s"
if [ "$load_status" -ne 0 ] || [ -n "$failures" ] || [ "$opened" != "$streams" ]; then
    echo "streams.sh: FAILED: some streams did not complete (see Failures above)" >&2
    exit 1
fi
