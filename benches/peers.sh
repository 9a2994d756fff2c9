#!/usr/bin/env bash
# foundry-proxy side by side with its peers: the same chat completion, JSON and SSE, at 1 and
# 32 connections, sent with wrk to
#   direct         the fake upstream itself (nginx answering canned OpenAI responses),
#   foundry-proxy  target/release/foundry-proxy serve, with an Entra token from its emulator,
#   nginx          nginx as a proxy that adds a static bearer token,
#   litellm        the LiteLLM proxy, one worker, pointed at the same upstream.
# Prints one markdown table (also written to target/bench/peers.md): req/s, latency, CPU per
# request and RSS of each target's own process tree, and each proxy's ratio to nginx.
#
# Usage: benches/peers.sh [SECONDS_PER_RUN]   (default 5; WARMUP=seconds, default 1)
# Installs wrk and nginx (Debian) and LiteLLM (PyPI, into target/bench/venv) when missing.
# Loopback only. Bounded: every wait and every wrk run has a limit, and every process started
# here is stopped on exit. The proxy under test gets core 0; the upstream and wrk share core 1.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # '&' in a config body must stay a literal '&'
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration="${1:-5}"
warmup="${WARMUP:-1}"
litellm_version=1.81.13 # exact pin: the proxy extra's dependency set moves between releases
peers=benches/peers
bench_dir=target/bench
venv="$bench_dir/venv"
report="$bench_dir/peers.md"
kinds=(json sse)
conn_counts=(1 32)
targets=(direct foundry-proxy nginx litellm)
target_core=0
load_core=1

log() { echo "peers: $*" >&2; }
die() { log "FATAL: $*"; exit 1; }

case "$duration" in '' | *[!0-9]* | 0) die "SECONDS_PER_RUN must be a positive integer, got '$duration'" ;; esac
case "$warmup" in '' | *[!0-9]*) die "WARMUP must be a whole number of seconds, got '$warmup'" ;; esac
if [ "$(nproc)" -lt 2 ]; then
    # Pinning to two cores needs two; on one core everything shares it and the table says so.
    load_core=0
fi

# ---------------------------------------------------------------- processes and cleanup

work="$(mktemp -d "${TMPDIR:-/tmp}/foundry-peers.XXXXXX")"
mkdir -p "$work/tmp"
started=() # root pids of everything started here; their descendants are stopped with them
failed=0   # set when any row fails; the script exits non-zero after printing the table

# Every pid in the tree under $1 (itself included), from /proc: procps may not be installed.
tree_pids() {
    { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '
        {   # The command name may hold spaces and parentheses: fields count from the last ")".
            i = length($0); while (i > 0 && substr($0, i, 1) != ")") i--
            split(substr($0, i + 2), f, " "); parent[$1] = f[2]
        }
        END {
            for (pid in parent) {
                p = pid
                for (depth = 0; depth < 32 && p != "" && p > 1; depth++) {
                    if (p == root) { print pid; break }
                    p = parent[p]
                }
            }
        }'
}

# utime + stime, in clock ticks, summed over the tree under $1.
tree_ticks() {
    local pid total=0 stat rest f
    for pid in $(tree_pids "$1"); do
        stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || continue
        rest="${stat##*) }" # fields from "state" on: utime and stime are the 12th and 13th
        read -r -a f <<<"$rest"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# VmRSS in kB, summed over the tree under $1.
tree_rss_kb() {
    local pid total=0 kb
    for pid in $(tree_pids "$1"); do
        kb="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}

# Stops the tree under $1: TERM to all of it, then KILL to whatever is left after 5 s.
stop_tree() {
    local root="$1" pids pid
    pids="$(tree_pids "$root")"
    [ -n "$pids" ] || return 0
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        kill -0 "$root" 2>/dev/null || break
        sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    wait "$root" 2>/dev/null || true
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${started[@]}"; do stop_tree "$pid"; done
    if [ "$status" -eq 0 ] && [ "$failed" -eq 0 ]; then
        rm -rf "$work"
    else
        log "logs kept in $work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port for the servers that need one written into their config.
free_port() {
    local port
    for _ in $(seq 1 100); do
        port=$((20000 + RANDOM % 30000))
        if ! (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "$port"; return; fi
    done
    die "no free port found"
}

# Waits until $1 answers HTTP at all (any status), for at most $2 seconds.
wait_http() {
    local deadline=$((SECONDS + $2))
    until curl -s -o /dev/null "$1"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# The rest of the first line of file $1 that starts with $2, waiting for it at most $3 seconds.
wait_line() {
    local deadline=$((SECONDS + $3)) line
    while true; do
        line="$(grep -m1 "^$2" "$1" 2>/dev/null || true)"
        if [ -n "$line" ]; then echo "${line#"$2"}"; return 0; fi
        [ "$SECONDS" -lt "$deadline" ] || { log "timed out waiting for '$2' in $1"; return 1; }
        sleep 0.05
    done
}

# Copies template $1 to $2 with each @NAME@ replaced by the value of the shell variable NAME.
fill_template() {
    local text name
    text="$(<"$1")"
    for name in WORK PORT UPSTREAM_PORT JSON_BODY SSE_BODY; do
        text="${text//@"$name"@/${!name-}}"
    done
    printf '%s\n' "$text" >"$2"
}

# ---------------------------------------------------------------- installs

install_debian_tools() {
    local missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v curl >/dev/null || missing+=(curl)
    command -v taskset >/dev/null || missing+=(util-linux)
    [ "${#missing[@]}" -eq 0 ] && return
    log "installing ${missing[*]} from Debian"
    # The package's own nginx service (if it starts at all) listens on :80; ours use their own
    # ports and configs, so it does not matter to the measurement.
    apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# Leaves LiteLLM in $venv, or says in litellm_skip why it could not be had.
litellm_skip=""
install_litellm() {
    local marker="$venv/.litellm-$litellm_version" python
    [ -f "$marker" ] && return
    python="$(command -v python3.11 || command -v python3 || true)"
    if [ -z "$python" ]; then litellm_skip="no python3 to install LiteLLM with"; return; fi
    log "installing litellm[proxy]==$litellm_version into $venv (once)"
    rm -rf "$venv"
    if ! "$python" -m venv "$venv" >"$work/venv.log" 2>&1; then
        litellm_skip="python3 -m venv failed: $(tail -n1 "$work/venv.log")"
        return
    fi
    if ! timeout 600 "$venv/bin/pip" install -q --disable-pip-version-check \
        "litellm[proxy]==$litellm_version" >"$work/pip.log" 2>&1; then
        litellm_skip="pip install litellm[proxy]==$litellm_version failed: $(grep -m1 -i error "$work/pip.log" || tail -n1 "$work/pip.log")"
        return
    fi
    touch "$marker"
}

# ---------------------------------------------------------------- measuring

declare -A row_status row_rps row_p50 row_p99 row_cpu row_rss

# wrk's latency ("812.00us", "1.23ms", "2.01s", "1.50m") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; unit = v; sub(/^[0-9.]+/, "", unit)
        if (unit == "us") n /= 1000; else if (unit == "s") n *= 1000; else if (unit == "m") n *= 60000
        printf "%.2f", n }'
}

# One wrk run against URL $1: kind $2 (json|sse), $3 connections, $4 seconds. Prints wrk's report.
wrk_run() {
    BENCH_KIND="$2" timeout $(($4 + 30)) taskset -c "$load_core" \
        wrk -t1 -c"$3" -d"${4}s" --timeout 10s --latency -s "$peers/post.lua" "$1"
}

# Measures target $1 (URL $2, process tree under $3) for every kind and connection count.
measure() {
    local target="$1" url="$2" root="$3" kind conns key out before after requests non2xx errors
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do
            key="$target/$kind/$conns"
            log "measuring $key for ${duration}s"
            # Warm-up: connections opened, pools filled, lazy paths taken before the clock runs.
            [ "$warmup" -eq 0 ] || wrk_run "$url" "$kind" "$conns" "$warmup" >/dev/null || true
            before="$(tree_ticks "$root")"
            if ! out="$(wrk_run "$url" "$kind" "$conns" "$duration")"; then
                row_status[$key]="FAIL: wrk exited non-zero"
                failed=1
                log "FAIL $key: wrk failed: $out"
                continue
            fi
            after="$(tree_ticks "$root")"
            printf '%s\n' "$out" >"$work/wrk-${target}-${kind}-${conns}.txt"
            requests="$(awk '/requests in/ {print $1; exit}' <<<"$out")"
            row_rps[$key]="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
            row_p50[$key]="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
            row_p99[$key]="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
            row_rss[$key]="$(awk -v kb="$(tree_rss_kb "$root")" 'BEGIN {printf "%.1f", kb / 1024}')"
            if [ "${requests:-0}" -gt 0 ]; then
                row_cpu[$key]="$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$requests" \
                    'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
            fi
            # Any error response or broken connection makes the numbers meaningless: say so.
            non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")"
            errors="$(grep -m1 'Socket errors:' <<<"$out" || true)"
            if [ "${requests:-0}" -eq 0 ]; then
                row_status[$key]="FAIL: no request completed"
            elif [ -n "$non2xx" ]; then
                row_status[$key]="FAIL: $non2xx non-2xx of $requests"
            elif [ -n "$errors" ]; then
                row_status[$key]="FAIL: ${errors#*Socket errors: }"
            else
                row_status[$key]="ok"
                continue
            fi
            failed=1
            log "FAIL $key: ${row_status[$key]}"
            log "wrk said:"$'\n'"$out"
        done
    done
}

# Marks every row of target $1 as not run, with reason $2.
skip_target() {
    local kind conns
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do row_status[$1/$kind/$conns]="not run: $2"; done
    done
}

# Checks that base URL $1 (…/v1 or …/openai/v1) answers a JSON and an SSE chat completion
# correctly before it is measured: a fast error page would otherwise look like a fast proxy.
verify_target() {
    local name="$1" url="$2/chat/completions" body headers
    body="$(curl -sS --max-time 30 -D "$work/verify-$name-json.headers" -H 'content-type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}' "$url")" || true
    if ! head -n1 "$work/verify-$name-json.headers" | grep -q ' 200' ||
        ! grep -q '"chat.completion"' <<<"$body" || ! grep -q '"usage"' <<<"$body"; then
        log "$name: JSON check failed: $(head -n1 "$work/verify-$name-json.headers" 2>/dev/null) $body"
        return 1
    fi
    body="$(curl -sS -N --max-time 30 -D "$work/verify-$name-sse.headers" -H 'content-type: application/json' \
        -H 'accept: text/event-stream' \
        -d '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}' \
        "$url")" || true
    headers="$(cat "$work/verify-$name-sse.headers")"
    if ! head -n1 <<<"$headers" | grep -q ' 200' || ! grep -qi '^content-type: text/event-stream' <<<"$headers" ||
        ! grep -q '^data: {.*"chat.completion.chunk"' <<<"$body" || ! grep -q '"usage":{' <<<"$body" ||
        ! grep -q '^data: \[DONE\]' <<<"$body"; then
        log "$name: SSE check failed: $(head -n1 <<<"$headers") $body"
        return 1
    fi
}

# ---------------------------------------------------------------- the targets

nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

upstream_port=""
upstream_pid=""
start_upstream() {
    local WORK="$work" PORT JSON_BODY SSE_BODY
    PORT="$(free_port)"
    JSON_BODY="$(<"$peers/chat.json")"
    SSE_BODY="$(<"$peers/chat-stream.sse")"$'\n' # $(<) drops the blank line after [DONE]
    # The bodies go into single-quoted nginx strings, where these three are special.
    case "$JSON_BODY$SSE_BODY" in *[\'\\\$]*) die "canned bodies must not contain ' \\ or \$" ;; esac
    fill_template "$peers/upstream.conf" "$work/upstream.conf"
    taskset -c "$load_core" "$(nginx_bin)" -p "$work" -c "$work/upstream.conf" -g 'daemon off;' \
        >"$work/upstream.out" 2>&1 &
    upstream_pid=$!
    started+=("$upstream_pid")
    upstream_port="$PORT"
    wait_http "http://127.0.0.1:$PORT/" 10 || die "upstream nginx did not start: $(cat "$work/upstream.out")"
    verify_target upstream "http://127.0.0.1:$PORT/openai/v1" || die "the upstream answers wrongly"
}

run_direct() {
    measure direct "http://127.0.0.1:$upstream_port/openai/v1/chat/completions" "$upstream_pid"
}

demo_value() { sed -n "s/^pub const $1: &str = \"\(.*\)\";/\1/p" src/emulator/demo.rs; }

run_foundry_proxy() {
    local bin=target/release/foundry-proxy emulator_pid emulator proxy_pid proxy deadline
    log "cargo build --release"
    cargo build --release -q >&2 || die "cargo build --release failed"
    # The emulator only hands out the Entra token; it idles on the load core during the runs.
    taskset -c "$load_core" "$bin" emulate --listen 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.err" &
    emulator_pid=$!
    started+=("$emulator_pid")
    emulator="$(wait_line "$work/emulator.out" "emulator listening on " 20)" || die "emulator did not start"
    # Default log level on purpose: one info line per request, as nginx writes its access log.
    FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" \
    FOUNDRY_ENDPOINT="http://127.0.0.1:$upstream_port" FOUNDRY_API=openai-v1 \
    AZURE_TENANT_ID="$(demo_value TENANT_ID)" AZURE_CLIENT_ID="$(demo_value CLIENT_ID)" \
    AZURE_CLIENT_SECRET="$(demo_value CLIENT_SECRET)" \
        taskset -c "$target_core" "$bin" serve >"$work/proxy.out" 2>"$work/proxy.log" &
    proxy_pid=$!
    started+=("$proxy_pid")
    proxy="$(wait_line "$work/proxy.out" "foundry-proxy listening on " 20)" ||
        die "foundry-proxy did not start: $(tail -n5 "$work/proxy.log")"
    deadline=$((SECONDS + 20))
    until curl -sf "$proxy/readyz" >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "foundry-proxy never became ready: $(tail -n5 "$work/proxy.log")"
        sleep 0.05
    done
    verify_target foundry-proxy "$proxy/v1" || die "foundry-proxy answers wrongly (see $work/proxy.log)"
    measure foundry-proxy "$proxy/v1/chat/completions" "$proxy_pid"
    stop_tree "$proxy_pid"
    stop_tree "$emulator_pid"
}

run_nginx() {
    local WORK="$work" PORT UPSTREAM_PORT="$upstream_port" pid
    PORT="$(free_port)"
    fill_template "$peers/nginx-proxy.conf" "$work/nginx-proxy.conf"
    taskset -c "$target_core" "$(nginx_bin)" -p "$work" -c "$work/nginx-proxy.conf" -g 'daemon off;' \
        >"$work/nginx-proxy.out" 2>&1 &
    pid=$!
    started+=("$pid")
    wait_http "http://127.0.0.1:$PORT/" 10 || die "nginx proxy did not start: $(cat "$work/nginx-proxy.out")"
    verify_target nginx "http://127.0.0.1:$PORT/v1" || die "the nginx proxy answers wrongly"
    measure nginx "http://127.0.0.1:$PORT/v1/chat/completions" "$pid"
    stop_tree "$pid"
}

run_litellm() {
    local UPSTREAM_PORT="$upstream_port" port pid
    if [ -n "$litellm_skip" ]; then skip_target litellm "$litellm_skip"; return; fi
    port="$(free_port)"
    fill_template "$peers/litellm.yaml" "$work/litellm.yaml"
    # LITELLM_LOCAL_MODEL_COST_MAP: use the bundled price list instead of fetching it (loopback only).
    LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR NO_DOCS=True \
        taskset -c "$target_core" "$venv/bin/litellm" --config "$work/litellm.yaml" \
        --host 127.0.0.1 --port "$port" --num_workers 1 --telemetry False \
        >"$work/litellm.out" 2>&1 &
    pid=$!
    started+=("$pid")
    if ! wait_http "http://127.0.0.1:$port/health/liveliness" 120; then
        skip_target litellm "did not start in 120 s: $(tail -n1 "$work/litellm.out")"
        failed=1
    elif ! verify_target litellm "http://127.0.0.1:$port/v1"; then
        skip_target litellm "answered wrongly (see $work/litellm.out)"
        failed=1
    else
        measure litellm "http://127.0.0.1:$port/v1/chat/completions" "$pid"
    fi
    stop_tree "$pid"
}

# ---------------------------------------------------------------- the table

# "0.42×" for $1 / $2, or "–" when either is missing.
ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then echo "–"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "–"; else printf "%.2f×\n", a / b }'
}

render_table() {
    local kind conns target key base cpu_model status rps_ratio cpu_ratio
    cpu_model="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "## foundry-proxy and its peers"
    echo
    echo "Machine: $(nproc) cores, ${cpu_model:-unknown CPU}; $(date -u '+%Y-%m-%d %H:%M UTC');" \
        "foundry-proxy $(git describe --always --dirty 2>/dev/null || echo '?')."
    echo "Each row: ${warmup} s warm-up, then ${duration} s of wrk (1 thread, --latency)." \
        "Pinning: proxy under test on core $target_core; upstream nginx, token emulator and wrk on core $load_core."
    echo "Upstream: nginx answering a canned chat.completion ($(wc -c <"$peers/chat.json") B) or SSE stream" \
        "($(grep -c '^data:' "$peers/chat-stream.sse") events, $(wc -c <"$peers/chat-stream.sse") B)." \
        "$("$(nginx_bin)" -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n1 | awk '{print $1, $2}')," \
        "litellm $litellm_version."
    echo "CPU µs/req: the target's own process tree (utime+stime from /proc) over the run / requests completed." \
        "RSS: VmRSS of that tree after the run. ×nginx: ratio to the nginx proxy at the same kind and connections."
    echo
    echo "| kind | conns | target | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB | req/s ×nginx | CPU ×nginx | status |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do
            base="nginx/$kind/$conns"
            for target in "${targets[@]}"; do
                key="$target/$kind/$conns"
                status="${row_status[$key]:-not run}"
                if [ -z "${row_rps[$key]:-}" ]; then # never measured: only the reason
                    echo "| $kind | $conns | $target | – | – | – | – | – | – | – | $status |"
                    continue
                fi
                if [ "${row_status[$base]:-}" = ok ]; then
                    rps_ratio="$(ratio "${row_rps[$key]:-}" "${row_rps[$base]:-}")"
                    cpu_ratio="$(ratio "${row_cpu[$key]:-}" "${row_cpu[$base]:-}")"
                else
                    rps_ratio="–" cpu_ratio="–"
                fi
                echo "| $kind | $conns | $target | ${row_rps[$key]:-–} | ${row_p50[$key]:-–} | ${row_p99[$key]:-–}" \
                    "| ${row_cpu[$key]:-–} | ${row_rss[$key]:-–} | $rps_ratio | $cpu_ratio | $status |"
            done
        done
    done
}

# ---------------------------------------------------------------- main

main() {
    local started_at=$SECONDS
    install_debian_tools
    install_litellm
    clk_tck="$(getconf CLK_TCK)"
    start_upstream
    run_direct
    run_foundry_proxy
    run_nginx
    run_litellm
    mkdir -p "$bench_dir"
    render_table >"$report"
    cat "$report"
    log "done in $((SECONDS - started_at)) s; table written to $report"
    if [ "$failed" -ne 0 ]; then
        log "FAILED: at least one row has errors (see status column)"
        exit 1
    fi
}

main
