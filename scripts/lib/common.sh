# Helpers the local-services scripts share. Source it after setting NAME
# (what the script calls itself in its messages).

say() { printf '%s: %s\n' "$NAME" "$*" >&2; }
fail() { printf '%s: ERROR: %s\n' "$NAME" "$*" >&2; exit 1; }

# wait_until WHAT SECONDS COMMAND...: polls COMMAND (quietly, every 0.2 s)
# until it succeeds; fails saying WHAT if it has not within SECONDS.
wait_until() {
    local what=$1 secs=$2; shift 2
    for _ in $(seq 1 "$((secs * 5))"); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.2
    done
    fail "$what within ${secs}s"
}
