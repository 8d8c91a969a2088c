#!/usr/bin/env bash
# Runs the whole fleet in the foreground, each line prefixed with its service's
# name, until Ctrl-C; then stops every service gracefully (SIGTERM) and waits.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug

services=(session-intake payment-gateway session-lifecycle checkout webhook-dispatch charge-scheduler)
pids=()
# Local mode: webhook receivers on this machine (plain http, loopback) are allowed.
export WEBHOOK_LOCAL_MODE=${WEBHOOK_LOCAL_MODE:-true}
# Local mode's key for secrets at rest, kept beside the build so stored
# secrets still open after a restart. Production takes PS_SECRET_KEYS from a secret store.
keyfile=${CARGO_TARGET_DIR:-target}/local-secret-keys
[ -s "$keyfile" ] || (umask 077; echo "local1:$(head -c 32 /dev/urandom | base64)" > "$keyfile")
export PS_SECRET_KEYS=${PS_SECRET_KEYS:-$(cat "$keyfile")}
# The checkout's token for the gateway's vault: a fresh one per run unless given.
export VAULT_TOKEN=${VAULT_TOKEN:-$(head -c 32 /dev/urandom | base64 | tr -d '/+=')}

stop() {
    trap - INT TERM
    echo "fleet: stopping ${services[*]}" >&2
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait
}
trap stop INT TERM

"$bin/psctl" migrate
# Local mode: the broker's guest may send commands for every merchant (DESIGN §10).
"$bin/psctl" merchants grant guest '*'
echo "fleet: local mode: broker user guest may act for every merchant (psctl merchants revoke guest '*' to stop that)" >&2
for s in "${services[@]}"; do
    # Process substitution keeps $! the service's own pid, so SIGTERM reaches it.
    "$bin/$s" > >(sed -u "s/^/[$s] /") 2>&1 &
    pids+=($!)
done
echo "fleet: running ${services[*]}; Ctrl-C stops" >&2
wait
