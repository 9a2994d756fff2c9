# Helpers shared by the bench scripts: `source benches/lib.sh` from a script that runs from the
# repository root. Functions only; nothing runs when it is sourced.

# The rest of the first line of file $1 that starts with $2, waiting for it at most $3 seconds
# (default 10). Returns 1, saying so on stderr, when no such line comes in time.
wait_line() {
    local deadline=$((SECONDS + ${3:-10})) line
    while true; do
        line="$(grep -m1 "^$2" "$1" 2>/dev/null || true)"
        if [ -n "$line" ]; then echo "${line#"$2"}"; return 0; fi
        [ "$SECONDS" -lt "$deadline" ] || { echo "${0##*/}: timed out waiting for '$2' in $1" >&2; return 1; }
        sleep 0.05
    done
}

# One value of the emulator's demo world, as `$1 emulate --print-env` prints it ($1: a built
# foundry-proxy binary; $2: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or MODEL).
# Read from the binary, not from the source, so it is the value the emulator really serves.
demo_value() {
    local env value
    env="$("$1" emulate --print-env)" || { echo "${0##*/}: '$1 emulate --print-env' failed" >&2; return 1; }
    value="$(sed -n "s/^$2=//p" <<<"$env")"
    [ -n "$value" ] || { echo "${0##*/}: '$1 emulate --print-env' printed no $2" >&2; return 1; }
    echo "$value"
}

# The path of bench target $1 built with `cargo build --release` (for the benches that are
# helper programs driven by a script, not run by `cargo bench`).
build_bench() {
    local path
    path="$(cargo build --release -q --bench "$1" --message-format=json-render-diagnostics |
        sed -n "s/.*\"name\":\"$1\".*\"executable\":\"\([^\"]*\)\".*/\1/p" | tail -n1)"
    [ -x "$path" ] || { echo "${0##*/}: cargo built no executable for bench target $1" >&2; return 1; }
    echo "$path"
}
