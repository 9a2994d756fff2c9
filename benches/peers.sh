#!/usr/bin/env bash
# foundry-proxy side by side with its peers: the same chat completion, JSON and SSE, at 1 and
# 32 connections, sent with wrk to
#   direct         the fake upstream itself (nginx answering canned OpenAI responses),
#   foundry-proxy  target/release/foundry-proxy serve, with an Entra token from its emulator,
#   hyper-floor    benches/hyper_floor.rs: foundry-proxy's hyper stack (server and pooled client)
#                  with nothing else, a static bearer token: the floor of a hyper-based proxy,
#   hyper-same-task the same, with a connection-level HTTP/1.1 client driven on the client
#                  connection's task (what issue 19's rewrite of `upstream` would buy),
#   nginx          nginx as a proxy that adds a static bearer token,
#   litellm        the LiteLLM proxy, one worker, pointed at the same upstream.
# Prints one markdown table (also written to target/bench/peers.md): req/s, latency, CPU per
# request and RSS of each target's own process tree, and each proxy's ratio to nginx.
# With UPDATE_DOCS=1, a run without failed rows also writes it into docs/performance.md,
# between the <!-- peers:begin --> and <!-- peers:end --> lines.
#
# Usage: benches/peers.sh [SECONDS_PER_RUN]   (default 5)
#   WARMUP=seconds before each measured run (default 1)
#   TARGETS="direct nginx" to measure only some targets (default: all six)
#   INSTRUCTIONS=seconds of the callgrind runs that count instructions per request (default 4;
#     0 skips them)
#   PACED_STREAMS, PACED_EVENTS, PACED_INTERVAL_MS: the token-paced stream shape (default 1000
#     concurrent streams of 200 events, one every 20 ms; PACED_STREAMS=0 skips it)
#   KEEP_LOGS=1 to keep the work dir (configs, logs, wrk reports) even when all went well
# Installs wrk and nginx (Debian) and LiteLLM (PyPI, into target/bench/venv) when missing.
# Loopback only. Bounded: every wait and every wrk run has a limit, and every process started
# here is stopped on exit. The proxy under test gets core 0; the upstream and wrk share core 1.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # '&' in a config body must stay a literal '&'
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source benches/lib.sh

duration="${1:-5}"
warmup="${WARMUP:-1}"
litellm_version=1.81.13 # exact pin: the proxy extra's dependency set moves between releases
peers=benches/peers
bench_dir=target/bench
venv="$bench_dir/venv"
report="$bench_dir/peers.md"
kinds=(json sse)
conn_counts=(1 32)
read -r -a targets <<<"${TARGETS:-direct foundry-proxy hyper-floor hyper-same-task nginx litellm}"
instr_seconds="${INSTRUCTIONS:-4}"
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
    [ -n "$pids" ] || { forget "$root"; return 0; }
    for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 50); do
        kill -0 "$root" 2>/dev/null || break
        sleep 0.1
    done
    for pid in $pids; do kill -KILL "$pid" 2>/dev/null || true; done
    wait "$root" 2>/dev/null || true
    forget "$root"
}

# Drops $1 from started: once stopped, its pid may be reused by a process that is not ours.
forget() {
    local pid kept=()
    for pid in "${started[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
    started=("${kept[@]}")
}

cleanup() {
    local status=$? pid
    trap - EXIT INT TERM
    for pid in "${started[@]}"; do stop_tree "$pid"; done
    if [ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && [ -z "${KEEP_LOGS:-}" ]; then
        rm -rf "$work"
    else
        log "logs kept in $work"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port for the servers that need one written into their config. It is taken
# below the kernel's ephemeral range: the many client connections of a run use ports in that
# range, and a port in use by one of them cannot be bound even though nothing listens on it.
free_port() {
    local port low
    low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    [ "$low" -gt 11000 ] || die "the ephemeral port range starts too low ($low) to pick a port below it"
    for _ in $(seq 1 100); do
        port=$((10000 + RANDOM % (low - 10000)))
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

# Copies template $1 to $2 with each @NAME@ replaced by the value of the shell variable NAME.
fill_template() {
    local text name
    text="$(<"$1")"
    for name in WORK PORT SNIFF_PORT UPSTREAM_PORT JSON_BODY SSE_SET SSE_VARS; do
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
    log "litellm installed"
}

# ---------------------------------------------------------------- measuring

declare -A row_status row_rps row_p50 row_p99 row_cpu row_rss row_other

# wrk's latency ("812.00us", "1.23ms", "2.01s", "1.50m") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; unit = v; sub(/^[0-9.]+/, "", unit)
        if (unit == "us") n /= 1000; else if (unit == "s") n *= 1000; else if (unit == "m") n *= 60000
        printf(n < 1 ? "%.3f" : "%.2f", n) }'
}

# One wrk run against URL $1: kind $2 (json|sse), $3 connections, $4 seconds. Prints wrk's report.
wrk_run() {
    BENCH_KIND="$2" timeout $(($4 + 30)) taskset -c "$load_core" \
        wrk -t1 -c"$3" -d"${4}s" --timeout 10s --latency -s "$peers/post.lua" "$1"
}

# user+nice+system ticks of the proxy core, all processes together: with the target's own
# ticks it shows how much of that core other work on the machine took during a run.
core_ticks() { awk -v cpu="cpu$target_core" '$1 == cpu {print $2 + $3 + $4}' /proc/stat; }

# Measures target $1 (URL $2, process tree under $3, pinned to core $4) for every kind and
# connection count.
measure() {
    local target="$1" url="$2" root="$3" core="$4" kind conns key out before after requests
    local non2xx errors core_before core_after t0 t1 own
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do
            key="$target/$kind/$conns"
            log "measuring $key for ${duration}s"
            # Warm-up: connections opened, pools filled, lazy paths taken before the clock runs.
            [ "$warmup" -eq 0 ] || wrk_run "$url" "$kind" "$conns" "$warmup" >/dev/null || true
            before="$(tree_ticks "$root")" core_before="$(core_ticks)" t0="$(date +%s%N)"
            if ! out="$(wrk_run "$url" "$kind" "$conns" "$duration")"; then
                row_status[$key]="FAIL: wrk exited non-zero"
                failed=1
                log "FAIL $key: wrk failed: $out"
                continue
            fi
            after="$(tree_ticks "$root")" core_after="$(core_ticks)" t1="$(date +%s%N)"
            printf '%s\n' "$out" >"$work/wrk-${target}-${kind}-${conns}.txt"
            requests="$(awk '/requests in/ {print $1; exit}' <<<"$out")"
            if [ "${requests:-0}" -eq 0 ]; then
                row_status[$key]="FAIL: no request completed in ${duration} s"
                failed=1
                log "FAIL $key: ${row_status[$key]}; wrk said:"$'\n'"$out"
                continue
            fi
            row_rps[$key]="$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")"
            row_p50[$key]="$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")"
            row_p99[$key]="$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")"
            row_rss[$key]="$(awk -v kb="$(tree_rss_kb "$root")" 'BEGIN {printf "%.1f", kb / 1024}')"
            row_cpu[$key]="$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n="$requests" \
                'BEGIN {printf "%.1f", t * 1e6 / hz / n}')"
            own=0
            [ "$core" != "$target_core" ] || own=$((after - before))
            row_other[$key]="$(awk -v t=$((core_after - core_before - own)) -v hz="$clk_tck" \
                -v ns=$((t1 - t0)) 'BEGIN {o = t / hz / (ns / 1e9) * 100; printf "%.0f", o < 0 ? 0 : o}')"
            # Any error response or broken connection makes the numbers meaningless: say so.
            non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' <<<"$out")"
            errors="$(grep -m1 'Socket errors:' <<<"$out" || true)"
            if [ -n "$non2xx" ]; then
                row_status[$key]="FAIL: $non2xx non-2xx of $requests"
            elif [ -n "$errors" ]; then
                row_status[$key]="FAIL: ${errors#*Socket errors: }"
            else
                row_status[$key]="ok"
                continue
            fi
            failed=1
            log "FAIL $key: ${row_status[$key]}; wrk said:"$'\n'"$out"
        done
    done
}

# Marks every row of target $1 as not run, with reason $2 (cut short: it goes in a table cell).
skip_target() {
    local kind conns reason="${2//|/\\|}"
    [ "${#reason}" -le 160 ] || reason="${reason:0:160}…"
    log "$1 not run: $2"
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do row_status[$1/$kind/$conns]="not run: $reason"; done
    done
}

# Checks that base URL $1 (…/v1 or …/openai/v1) answers a JSON and an SSE chat completion
# correctly before it is measured: a fast error page would otherwise look like a fast proxy.
# $3: the accept header of the streaming request (default text/event-stream).
verify_target() {
    local name="$1" url="$2/chat/completions" accept="${3:-text/event-stream}" body headers
    body="$(curl -sS --max-time 30 -D "$work/verify-$name-json.headers" -H 'content-type: application/json' \
        -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}' "$url")" || true
    if ! head -n1 "$work/verify-$name-json.headers" | grep -q ' 200' ||
        ! grep -q '"chat.completion"' <<<"$body" || ! grep -q '"usage"' <<<"$body"; then
        log "$name: JSON check failed: $(head -n1 "$work/verify-$name-json.headers" 2>/dev/null) $body"
        return 1
    fi
    body="$(curl -sS -N --max-time 30 -D "$work/verify-$name-sse.headers" -H 'content-type: application/json' \
        -H "accept: $accept" \
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

upstream_port=""      # the canned answers, chosen by the accept header
upstream_sniff_port="" # the same answers, chosen by "stream":true in the body (for LiteLLM)
upstream_pid=""
start_upstream() {
    local WORK="$work" PORT SNIFF_PORT JSON_BODY SSE_SET="" SSE_VARS="" piece="" event n=0
    PORT="$(free_port)"
    SNIFF_PORT="$(free_port)"
    while [ "$SNIFF_PORT" = "$PORT" ]; do SNIFF_PORT="$(free_port)"; done
    JSON_BODY="$(<"$peers/chat.json")"
    # The bodies go into single-quoted nginx strings, where these three are special.
    case "$JSON_BODY$(<"$peers/chat-stream.sse")" in *[\'\\\$]*) die "canned bodies must not contain ' \\ or \$" ;; esac
    # nginx takes at most 4 KB in one config string, so the stream is cut at event boundaries
    # into pieces that each go into a variable, and the answer joins them.
    while IFS= read -r event; do
        [ -n "$event" ] || continue
        if [ $((${#piece} + ${#event})) -gt 3000 ]; then
            SSE_SET+="            set \$sse_$n '$piece';"$'\n'
            SSE_VARS+="\$sse_$n"
            piece="" n=$((n + 1))
        fi
        piece+="$event"$'\n\n'
    done <"$peers/chat-stream.sse"
    SSE_SET+="            set \$sse_$n '$piece';"
    SSE_VARS+="\$sse_$n"
    fill_template "$peers/upstream.conf" "$work/upstream.conf"
    taskset -c "$load_core" "$(nginx_bin)" -p "$work" -c "$work/upstream.conf" -g 'daemon off;' \
        >"$work/upstream.out" 2>&1 &
    upstream_pid=$!
    started+=("$upstream_pid")
    upstream_port="$PORT"
    upstream_sniff_port="$SNIFF_PORT"
    wait_http "http://127.0.0.1:$PORT/" 10 || die "upstream nginx did not start: $(cat "$work/upstream.out")"
    verify_target upstream "http://127.0.0.1:$PORT/openai/v1" || die "the upstream answers wrongly"
    verify_target upstream-side-door "http://127.0.0.1:$SNIFF_PORT/openai/v1" application/json ||
        die "the upstream's side door answers wrongly"
}

run_direct() {
    measure direct "http://127.0.0.1:$upstream_port/openai/v1/chat/completions" "$upstream_pid" "$load_core"
}

# Builds foundry-proxy first, so that a long build does not sit between measured runs.
build_skip=""
build_foundry_proxy() {
    local t0=$SECONDS
    log "cargo build --release"
    cargo build --release -q >&2 || build_skip="cargo build --release failed"
    log "cargo build --release took $((SECONDS - t0)) s"
}

# Starts the emulator (for the token) and foundry-proxy; sets emulator_pid, proxy_pid and
# proxy_url (locals of the caller), or returns 1 with the reason in start_error.
# $1: another upstream endpoint (default: the canned nginx upstream), $2: a CA file for it
# (SSL_CERT_FILE). With $1 the JSON/SSE check is left to the caller.
start_foundry_proxy() {
    local bin=target/release/foundry-proxy emulator deadline endpoint="${1:-http://127.0.0.1:$upstream_port}"
    local ca="${2:-}"
    # A second start must not read the first one's addresses.
    rm -f "$work/emulator.out" "$work/proxy.out"
    # The emulator only hands out the Entra token; it idles on the load core during the runs.
    taskset -c "$load_core" "$bin" emulate --listen 127.0.0.1:0 >"$work/emulator.out" 2>"$work/emulator.err" &
    emulator_pid=$!
    started+=("$emulator_pid")
    emulator="$(wait_line "$work/emulator.out" "emulator listening on " 20)" ||
        { start_error="emulator did not start: $(tail -n1 "$work/emulator.err")"; return 1; }
    # Default log level on purpose: one info line per request, as nginx writes its access log.
    FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" \
    FOUNDRY_ENDPOINT="$endpoint" FOUNDRY_API=openai-v1 \
    AZURE_TENANT_ID="$(demo_value "$bin" AZURE_TENANT_ID)" AZURE_CLIENT_ID="$(demo_value "$bin" AZURE_CLIENT_ID)" \
    AZURE_CLIENT_SECRET="$(demo_value "$bin" AZURE_CLIENT_SECRET)" \
        env ${ca:+SSL_CERT_FILE="$ca"} taskset -c "$target_core" "$bin" serve >"$work/proxy.out" 2>"$work/proxy.log" &
    proxy_pid=$!
    started+=("$proxy_pid")
    proxy_url="$(wait_line "$work/proxy.out" "foundry-proxy listening on " 20)" ||
        { start_error="did not start: $(tail -n1 "$work/proxy.log")"; return 1; }
    deadline=$((SECONDS + 20))
    until curl -sf "$proxy_url/readyz" >/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] ||
            { start_error="never ready: $(tail -n1 "$work/proxy.log")"; return 1; }
        sleep 0.05
    done
    [ -z "${1:-}" ] || return 0
    verify_target foundry-proxy "$proxy_url/v1" ||
        { start_error="answered wrongly (see $work/proxy.log)"; return 1; }
}

run_foundry_proxy() {
    local start_error="" proxy_url="" proxy_pid="" emulator_pid=""
    if [ -n "$build_skip" ]; then
        skip_target foundry-proxy "$build_skip"
    elif start_foundry_proxy; then
        measure foundry-proxy "$proxy_url/v1/chat/completions" "$proxy_pid" "$target_core"
    else
        skip_target foundry-proxy "$start_error"
    fi
    [ -z "$build_skip$start_error" ] || failed=1
    # The emulator goes too: nothing of this target may run while the next one is measured.
    [ -z "$proxy_pid" ] || stop_tree "$proxy_pid"
    [ -z "$emulator_pid" ] || stop_tree "$emulator_pid"
}

# Builds benches/hyper_floor.rs (release), before any measured run.
floor_bin="" floor_skip=""
build_floor() {
    floor_bin="$(build_bench hyper_floor)" || floor_skip="could not build benches/hyper_floor.rs"
}

# Starts the floor proxy (client kind $1: pooled|same-task) in front of upstream URL $2 (CA
# file $3 for an HTTPS upstream); sets floor_pid and floor_url (locals of the caller), or
# returns 1 with the reason in start_error.
start_floor() {
    [ -z "$floor_skip" ] || { start_error="$floor_skip"; return 1; }
    rm -f "$work/floor.out"
    taskset -c "$target_core" "$floor_bin" --listen 127.0.0.1:0 --upstream "$2" --client "$1" \
        ${3:+--ca "$3"} >"$work/floor.out" 2>"$work/floor.err" &
    floor_pid=$!
    started+=("$floor_pid")
    floor_url="$(wait_line "$work/floor.out" "floor listening on " 20)" ||
        { start_error="did not start: $(tail -n1 "$work/floor.err")"; return 1; }
}

# Target $1 (hyper-floor or hyper-same-task): the floor with client kind $2.
run_floor() {
    local start_error="" floor_url="" floor_pid=""
    if start_floor "$2" "http://127.0.0.1:$upstream_port/openai" && verify_target "$1" "$floor_url/v1"; then
        measure "$1" "$floor_url/v1/chat/completions" "$floor_pid" "$target_core"
    else
        skip_target "$1" "${start_error:-answered wrongly (see $work/floor.err)}"
        failed=1
    fi
    [ -z "$floor_pid" ] || stop_tree "$floor_pid"
}

run_nginx() {
    # shellcheck disable=SC2034 # WORK and UPSTREAM_PORT are read by fill_template, by name
    local WORK="$work" PORT UPSTREAM_PORT="$upstream_port" pid
    PORT="$(free_port)"
    fill_template "$peers/nginx-proxy.conf" "$work/nginx-proxy.conf"
    taskset -c "$target_core" "$(nginx_bin)" -p "$work" -c "$work/nginx-proxy.conf" -g 'daemon off;' \
        >"$work/nginx-proxy.out" 2>&1 &
    pid=$!
    started+=("$pid")
    if ! wait_http "http://127.0.0.1:$PORT/" 10; then
        skip_target nginx "did not start: $(tail -n1 "$work/nginx-proxy.out")"
        failed=1
    elif ! verify_target nginx "http://127.0.0.1:$PORT/v1"; then
        skip_target nginx "answered wrongly (see $work/nginx-proxy-error.log)"
        failed=1
    else
        measure nginx "http://127.0.0.1:$PORT/v1/chat/completions" "$pid" "$target_core"
    fi
    stop_tree "$pid"
}

run_litellm() {
    # LiteLLM streams without "accept: text/event-stream", so it gets the side door that
    # looks at the body (see upstream.conf).
    # shellcheck disable=SC2034 # read by fill_template, by name
    local UPSTREAM_PORT="$upstream_sniff_port" port pid
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
        measure litellm "http://127.0.0.1:$port/v1/chat/completions" "$pid" "$target_core"
    fi
    stop_tree "$pid"
}

# ---------------------------------------------------------------- token-paced streams

# Burst SSE (above) has the whole stream ready at once: a proxy can pass many events in one
# read and one write. Azure sends tokens one by one, so here every event is a read and a write:
# PACED_STREAMS concurrent streams (default 1000) of PACED_EVENTS events (default 200: role,
# contents, finish), one every PACED_INTERVAL_MS (default 20), from benches/streams_bench.rs's
# HTTPS upstream (as Azure is HTTPS; a private CA) on the load core, held open by its load
# generator (one HTTP/1.1 connection per stream, each stream checked: every event, no usage
# member, `[DONE]`). Before each measured run one short run of as many streams opens each
# proxy's upstream connections (foundry-proxy: one HTTP/2 connection; nginx: a TLS
# HTTP/1.1 connection per concurrent stream, kept alive), so the TLS handshakes are not counted.
# The row: the proxy's CPU over the measured run per million events passed.
paced_streams="${PACED_STREAMS:-1000}"
paced_events="${PACED_EVENTS:-200}"
paced_interval="${PACED_INTERVAL_MS:-20}"
declare -A paced_status paced_cpu paced_secs paced_gap paced_done paced_other
paced_bench="" paced_upstream="" paced_skip=""

start_paced_upstream() {
    local out
    paced_bench="$(build_bench streams_bench)" || { paced_skip="could not build streams_bench"; return 1; }
    taskset -c "$load_core" "$paced_bench" upstream --listen 127.0.0.1:0 --cert-out "$work/paced-pki" \
        >"$work/paced-upstream.out" 2>"$work/paced-upstream.err" &
    started+=($!)
    out="$(wait_line "$work/paced-upstream.out" "upstream listening on " 20)" ||
        { paced_skip="streams_bench upstream did not start"; return 1; }
    paced_upstream="$out"
}

# One load run of $3 streams through URL $1 (label $2), $4 content events each; key=value
# lines in $work/paced-$2.txt.
paced_load() {
    timeout $((paced_events * paced_interval / 1000 + 300)) taskset -c "$load_core" "$paced_bench" load \
        --label "$2" --url "$1?interval_ms=$paced_interval" --streams "$3" --seconds "$4" \
        --open-concurrency 256 --out "$work/paced-$2.txt" --timeout $((paced_events * paced_interval / 1000 + 120)) \
        >"$work/paced-$2.log" 2>&1
}

# Measures target $1 at URL $2 (process tree under $3, on the proxy core).
measure_paced() {
    local name="$1" url="$2" root="$3" before after core_before core_after t0 t1 completed
    log "paced: warming $name's upstream connections ($paced_streams short streams)"
    paced_load "$url" "$name-warm" "$paced_streams" 1 || true
    log "paced: $paced_streams streams of $paced_events events, one every $paced_interval ms, through $name"
    before="$(tree_ticks "$root")" core_before="$(core_ticks)" t0="$(date +%s%N)"
    if ! paced_load "$url" "$name" "$paced_streams" $((paced_events - 2)); then
        paced_status[$name]="FAIL: $(grep -m1 -i 'fail\|error' "$work/paced-$name.log" || tail -n1 "$work/paced-$name.log")"
        paced_status[$name]="${paced_status[$name]//|/\\|}"
        failed=1
    else
        paced_status[$name]=ok
    fi
    after="$(tree_ticks "$root")" core_after="$(core_ticks)" t1="$(date +%s%N)"
    completed="$(sed -n 's/^completed=//p' "$work/paced-$name.txt" 2>/dev/null)"
    paced_done[$name]="${completed:-0}"
    paced_gap[$name]="$(sed -n 's/^gap_p99_ms=//p' "$work/paced-$name.txt" 2>/dev/null)"
    paced_secs[$name]="$(awk -v ns=$((t1 - t0)) 'BEGIN {printf "%.1f", ns / 1e9}')"
    [ "${completed:-0}" -gt 0 ] || return 0
    paced_cpu[$name]="$(awk -v t=$((after - before)) -v hz="$clk_tck" -v n=$((completed * paced_events)) \
        'BEGIN {printf "%.2f", t / hz / n * 1e6}')"
    paced_other[$name]="$(awk -v t=$((core_after - core_before - (after - before))) -v hz="$clk_tck" \
        -v ns=$((t1 - t0)) 'BEGIN {o = t / hz / (ns / 1e9) * 100; printf "%.0f", o < 0 ? 0 : o}')"
}

run_paced() {
    local start_error="" proxy_url="" proxy_pid="" emulator_pid="" pid
    # shellcheck disable=SC2034 # WORK and UPSTREAM_PORT are read by fill_template, by name
    local WORK="$work" PORT UPSTREAM_PORT
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    start_paced_upstream || { log "paced: $paced_skip"; failed=1; return 0; }
    if [ -z "$build_skip" ] && start_foundry_proxy "$paced_upstream" "$work/paced-pki/ca.pem"; then
        measure_paced foundry-proxy "$proxy_url/v1/chat/completions" "$proxy_pid"
    else
        paced_status[foundry-proxy]="not run: ${build_skip:-$start_error}"
        failed=1
    fi
    [ -z "$proxy_pid" ] || stop_tree "$proxy_pid"
    [ -z "$emulator_pid" ] || stop_tree "$emulator_pid"

    # The floor's pooled client reaches the HTTPS upstream as foundry-proxy does (HTTP/2).
    if [[ " ${targets[*]} " == *" hyper-floor "* ]]; then
        local floor_url="" floor_pid=""
        if start_floor pooled "$paced_upstream/openai" "$work/paced-pki/ca.pem"; then
            measure_paced hyper-floor "$floor_url/v1/chat/completions" "$floor_pid"
        else
            paced_status[hyper-floor]="not run: $start_error"
            failed=1
        fi
        [ -z "$floor_pid" ] || stop_tree "$floor_pid"
    fi

    PORT="$(free_port)" UPSTREAM_PORT="${paced_upstream##*:}"
    fill_template "$peers/nginx-paced.conf" "$work/nginx-paced.conf"
    taskset -c "$target_core" "$(nginx_bin)" -p "$work" -c "$work/nginx-paced.conf" -g 'daemon off;' \
        >"$work/nginx-paced.out" 2>&1 &
    pid=$!
    started+=("$pid")
    if wait_http "http://127.0.0.1:$PORT/" 10; then
        measure_paced nginx "http://127.0.0.1:$PORT/v1/chat/completions" "$pid"
    else
        paced_status[nginx]="not run: did not start: $(tail -n1 "$work/nginx-paced.out")"
        failed=1
    fi
    stop_tree "$pid"
}

render_paced() {
    local target events burst
    events="$(grep -c '^data:' "$peers/chat-stream.sse")"
    echo
    echo "### CPU per streamed event"
    echo
    echo "burst: the sse rows above at 32 connections (CPU µs/req over the $events events of a stream)." \
        "paced: $paced_streams concurrent streams of $paced_events events, one every $paced_interval ms," \
        "from an HTTPS upstream (benches/streams_bench.rs; foundry-proxy reaches it over one HTTP/2" \
        "connection, nginx over kept-alive HTTP/1.1 connections), one client connection per stream."
    echo "CPU s per million events: the proxy's own process tree over the run (after a warm-up that" \
        "opens the upstream connections) / events passed."
    echo
    echo "| shape | target | CPU s / million events | ×nginx | streams completed | wall s | longest gap p99 ms | core $target_core other % | status |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---|"
    for target in "${stream_targets[@]}"; do
        burst_of[$target]=""
        [ -z "${row_cpu[$target/sse/32]:-}" ] || burst_of[$target]="$(awk -v c="${row_cpu[$target/sse/32]}" \
            -v n="$events" 'BEGIN {printf "%.2f", c / n}')"
    done
    for target in "${stream_targets[@]}"; do
        echo "| burst | $target | ${burst_of[$target]:-–} | $(ratio "${burst_of[$target]:-}" "${burst_of[nginx]:-}")" \
            "| – | – | – | ${row_other[$target/sse/32]:-–} | ${row_status[$target/sse/32]:-not run} |"
    done
    for target in "${stream_targets[@]}"; do
        [ "$target" != hyper-same-task ] || continue # plain HTTP/1.1 upstreams only
        echo "| paced | $target | ${paced_cpu[$target]:-–} | $(ratio "${paced_cpu[$target]:-}" "${paced_cpu[nginx]:-}")" \
            "| ${paced_done[$target]:-–} | ${paced_secs[$target]:-–} | ${paced_gap[$target]:-–} | ${paced_other[$target]:-–}" \
            "| ${paced_status[$target]:-not run} |"
    done
}
declare -A burst_of=()
stream_targets=()
for target in foundry-proxy hyper-floor hyper-same-task nginx; do
    [[ " ${targets[*]} " != *" $target "* ]] || stream_targets+=("$target")
done

# ---------------------------------------------------------------- instructions (callgrind)

# Times and CPU seconds move with whatever else the machine does; the number of instructions
# a proxy executes in user space per request does not. Each proxy runs once more under
# valgrind's callgrind with instrumentation off; it is switched on only around a fixed wrk run
# per kind (after a warm-up), and the counts are dumped per kind. Kernel work (the TCP stack)
# is not counted: it is the same for every proxy that makes the same system calls.
declare -A instr_per_req=()

# How many callgrind dumps target $1 has written, and the newest.
dump_count() {
    local files=("$work/callgrind.$1".*)
    if [ -e "${files[0]}" ]; then echo "${#files[@]}"; else echo 0; fi
}
newest_dump() {
    local file newest=""
    for file in "$work/callgrind.$1".*; do
        if [ -z "$newest" ] || [ "$file" -nt "$newest" ]; then newest="$file"; fi
    done
    echo "$newest"
}

# Runs kind $2 through the proxy at URL $3 (callgrind pid $4) and records instructions per
# request under "$1/$2".
instructions_of_kind() {
    local name="$1" kind="$2" url="$3" pid="$4" out requests dump before
    BENCH_KIND="$kind" taskset -c "$load_core" wrk -t1 -c4 -d1s -s "$peers/post.lua" "$url" >/dev/null
    before="$(dump_count "$name")"
    callgrind_control -z "$pid" >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    out="$(BENCH_KIND="$kind" taskset -c "$load_core" wrk -t1 -c4 -d"${instr_seconds}s" -s "$peers/post.lua" "$url")"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    requests="$(awk '/requests in/ {print $1}' <<<"$out")"
    for _ in $(seq 1 100); do
        [ "$(dump_count "$name")" -gt "$before" ] && break
        sleep 0.1
    done
    dump="$(newest_dump "$name")"
    if grep -q "Non-2xx\|Socket errors" <<<"$out" || [ -z "$requests" ] || [ "$requests" -eq 0 ]; then
        log "$name $kind under callgrind: errors or no requests"; failed=1; return
    fi
    instr_per_req["$name/$kind"]="$(awk -v n="$requests" '/^totals:/ {print int($2 / n); exit}' "$dump")"
}

# foundry-proxy (the release binary) and nginx, each under callgrind, JSON then SSE.
count_instructions() {
    local emulator proxy_url pid port kind
    command -v valgrind >/dev/null || { apt-get install -y -q valgrind >&2 || return 0; }
    taskset -c "$load_core" target/release/foundry-proxy emulate --listen 127.0.0.1:0 \
        >"$work/cg-emulator.out" 2>/dev/null &
    started+=($!)
    emulator="$(wait_line "$work/cg-emulator.out" "emulator listening on " 20)" || return 0
    FOUNDRY_PROXY_LISTEN=127.0.0.1:0 AZURE_AUTHORITY_HOST="$emulator" \
    FOUNDRY_ENDPOINT="http://127.0.0.1:$upstream_port" FOUNDRY_API=openai-v1 \
    AZURE_TENANT_ID="$(demo_value target/release/foundry-proxy AZURE_TENANT_ID)" \
    AZURE_CLIENT_ID="$(demo_value target/release/foundry-proxy AZURE_CLIENT_ID)" \
    AZURE_CLIENT_SECRET="$(demo_value target/release/foundry-proxy AZURE_CLIENT_SECRET)" \
        taskset -c "$target_core" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$work/callgrind.foundry-proxy.%p" target/release/foundry-proxy serve \
        >"$work/cg-proxy.out" 2>"$work/cg-proxy.log" &
    pid=$!
    started+=("$pid")
    proxy_url="$(wait_line "$work/cg-proxy.out" "foundry-proxy listening on " 60)" || return 0
    for _ in $(seq 1 600); do curl -sf "$proxy_url/readyz" >/dev/null && break; sleep 0.1; done
    for kind in "${kinds[@]}"; do
        instructions_of_kind foundry-proxy "$kind" "$proxy_url/v1/chat/completions" "$pid"
    done
    stop_tree "$pid"

    local client floor_url
    for client in pooled same-task; do
        [[ " ${targets[*]} " == *" $(floor_target "$client") "* ]] && [ -z "$floor_skip" ] || continue
        rm -f "$work/cg-floor.out"
        taskset -c "$target_core" valgrind --tool=callgrind --instr-atstart=no \
            --callgrind-out-file="$work/callgrind.$(floor_target "$client").%p" "$floor_bin" \
            --listen 127.0.0.1:0 --upstream "http://127.0.0.1:$upstream_port/openai" --client "$client" \
            >"$work/cg-floor.out" 2>"$work/cg-floor.log" &
        pid=$!
        started+=("$pid")
        if ! floor_url="$(wait_line "$work/cg-floor.out" "floor listening on " 60)"; then
            log "$(floor_target "$client") did not start under callgrind: $(tail -n1 "$work/cg-floor.log")"
            failed=1
            stop_tree "$pid"
            continue
        fi
        for kind in "${kinds[@]}"; do
            instructions_of_kind "$(floor_target "$client")" "$kind" "$floor_url/v1/chat/completions" "$pid"
        done
        stop_tree "$pid"
    done

    # shellcheck disable=SC2034 # WORK and UPSTREAM_PORT are read by fill_template, by name
    local WORK="$work" PORT UPSTREAM_PORT="$upstream_port"
    PORT="$(free_port)"
    fill_template "$peers/nginx-proxy.conf" "$work/nginx-cg.conf"
    # One process: callgrind then sees the worker's instructions.
    sed -i 's/^worker_processes .*/worker_processes 1;\nmaster_process off;/' "$work/nginx-cg.conf"
    taskset -c "$target_core" valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$work/callgrind.nginx.%p" "$(nginx_bin)" -p "$work" -c "$work/nginx-cg.conf" \
        -g 'daemon off;' >"$work/nginx-cg.out" 2>&1 &
    pid=$!
    started+=("$pid")
    wait_http "http://127.0.0.1:$PORT/" 60 || return 0
    for kind in "${kinds[@]}"; do
        instructions_of_kind nginx "$kind" "http://127.0.0.1:$PORT/v1/chat/completions" "$pid"
    done
    stop_tree "$pid"
}

floor_target() { if [ "$1" = pooled ]; then echo hyper-floor; else echo hyper-same-task; fi; }

render_instructions() {
    local kind target
    echo
    echo "### Instructions per request (callgrind, user space, 4 connections, ${instr_seconds} s)"
    echo
    echo "| kind | target | instructions per request | ×nginx |"
    echo "|---|---|---:|---:|"
    for kind in "${kinds[@]}"; do
        for target in "${stream_targets[@]}"; do
            echo "| $kind | $target | ${instr_per_req[$target/$kind]:-–}" \
                "| $(ratio "${instr_per_req[$target/$kind]:-}" "${instr_per_req[nginx/$kind]:-}") |"
        done
    done
}

# ---------------------------------------------------------------- the table

# "0.42×" for $1 / $2, or "–" when either is missing.
ratio() {
    if [ -z "$1" ] || [ -z "$2" ]; then echo "–"; return; fi
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (b == 0) { print "–"; exit }
        r = a / b; printf(r >= 100 ? "%.0f×\n" : r >= 0.1 ? "%.2f×\n" : "%.3f×\n", r) }'
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
    echo "LiteLLM's OpenAI client streams without \`accept: text/event-stream\`, so LiteLLM's api_base is a" \
        "side door of the same upstream nginx that picks the answer from \`\"stream\":true\` in the body."
    echo "Load average (1, 5, 15 min) when the runs began: $load_before; when they ended: $load_after." \
        "Other work on the machine skews the rows."
    echo "CPU µs/req: the target's own process tree (utime+stime from /proc) over the run / requests completed." \
        "RSS: VmRSS of that tree after the run. ×nginx: ratio to the nginx proxy at the same kind and connections." \
        "core $target_core other %: CPU time other processes took on the proxy core during the run" \
        "(user+system from /proc/stat, less the target's own); well above 0 means the row was disturbed."
    echo
    echo "| kind | conns | target | req/s | p50 ms | p99 ms | CPU µs/req | RSS MB | req/s ×nginx | CPU ×nginx | core $target_core other % | status |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for kind in "${kinds[@]}"; do
        for conns in "${conn_counts[@]}"; do
            base="nginx/$kind/$conns"
            for target in "${targets[@]}"; do
                key="$target/$kind/$conns"
                status="${row_status[$key]:-not run}"
                if [ -z "${row_rps[$key]:-}" ]; then # never measured: only the reason
                    echo "| $kind | $conns | $target | – | – | – | – | – | – | – | – | $status |"
                    continue
                fi
                if [ "${row_status[$base]:-}" = ok ]; then
                    rps_ratio="$(ratio "${row_rps[$key]:-}" "${row_rps[$base]:-}")"
                    cpu_ratio="$(ratio "${row_cpu[$key]:-}" "${row_cpu[$base]:-}")"
                else
                    rps_ratio="–" cpu_ratio="–"
                fi
                echo "| $kind | $conns | $target | ${row_rps[$key]:-–} | ${row_p50[$key]:-–} | ${row_p99[$key]:-–}" \
                    "| ${row_cpu[$key]:-–} | ${row_rss[$key]:-–} | $rps_ratio | $cpu_ratio | ${row_other[$key]:-–} | $status |"
            done
        done
    done
}

# Replaces what lies between the peers markers of $2 with the report $1 (its heading left out).
update_docs() {
    local report_file="$1" doc="$2" tmp
    grep -qx '<!-- peers:begin -->' "$doc" && grep -qx '<!-- peers:end -->' "$doc" ||
        die "$doc has no <!-- peers:begin --> and <!-- peers:end --> lines"
    tmp="$(mktemp "$doc.XXXXXX")"
    awk -v report="$report_file" '
        $0 == "<!-- peers:begin -->" {
            print
            while ((getline line < report) > 0) if (++n > 2) print line # skip "## …" and its blank line
            skip = 1
            next
        }
        $0 == "<!-- peers:end -->" { skip = 0 }
        !skip { print }' "$doc" >"$tmp"
    mv "$tmp" "$doc"
    log "table written into $doc"
}

# ---------------------------------------------------------------- main

main() {
    local started_at=$SECONDS target
    install_debian_tools
    case " ${targets[*]} " in *" litellm "*) install_litellm ;; esac
    case " ${targets[*]} " in *" foundry-proxy "*) build_foundry_proxy ;; esac
    case " ${targets[*]} " in *" hyper-"*) build_floor ;; esac
    clk_tck="$(getconf CLK_TCK)"
    load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
    start_upstream
    for target in "${targets[@]}"; do
        case "$target" in
            direct) run_direct ;;
            foundry-proxy) run_foundry_proxy ;;
            hyper-floor) run_floor hyper-floor pooled ;;
            hyper-same-task) run_floor hyper-same-task same-task ;;
            nginx) run_nginx ;;
            litellm) run_litellm ;;
            *) die "unknown target '$target' (direct, foundry-proxy, hyper-floor, hyper-same-task, nginx, litellm)" ;;
        esac
    done
    if [ "$paced_streams" -gt 0 ] && [[ " ${targets[*]} " == *" foundry-proxy "* ]] &&
        [[ " ${targets[*]} " == *" nginx "* ]]; then
        run_paced
    fi
    load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
    if [ "$instr_seconds" -gt 0 ] && [ -z "$build_skip" ] &&
        [[ " ${targets[*]} " == *" foundry-proxy "* ]] && [[ " ${targets[*]} " == *" nginx "* ]]; then
        count_instructions
    fi
    mkdir -p "$bench_dir"
    {
        render_table
        [ "$paced_streams" -eq 0 ] || render_paced
        [ "$instr_seconds" -eq 0 ] || render_instructions
    } >"$report"
    cat "$report"
    log "done in $((SECONDS - started_at)) s; table written to $report"
    if [ "$failed" -ne 0 ]; then
        log "FAILED: at least one row has errors (see status column)"
        exit 1
    fi
    if [ "${UPDATE_DOCS:-}" = 1 ]; then
        update_docs "$report" docs/performance.md
    fi
}

main
