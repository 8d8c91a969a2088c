#!/usr/bin/env bash
# Runs the whole fleet in the foreground, each line prefixed with its service's
# name, until Ctrl-C; then stops every service gracefully (SIGTERM) and waits.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CARGO_TARGET_DIR:-target}/debug

services=(session-intake payment-gateway session-lifecycle checkout webhook-dispatch charge-scheduler payments-api)
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

# PROCESSOR=stripe: with STRIPE_SECRET_KEY (a test key), real Stripe's test
# mode; without, localstripe on this machine (scripts/ensure-localstripe.sh).
if [ "${PROCESSOR:-sandbox}" = stripe ]; then
    if [ -z "${STRIPE_SECRET_KEY:-}" ]; then
        ./scripts/ensure-localstripe.sh
        export STRIPE_SECRET_KEY=sk_test_localstripe_0123456789 STRIPE_PUBLISHABLE_KEY=pk_test_localstripe_0123456789
        export STRIPE_WEBHOOK_SECRET=whsec_localstripe_test_0123456789
        export STRIPE_API_BASE=http://127.0.0.1:${STRIPE_PROXY_PORT:-8421}
        export STRIPE_JS_URL=http://localhost:${LOCALSTRIPE_PORT:-8420}/js.stripe.com/v3/
        LOCALSTRIPE_PORT=${LOCALSTRIPE_PORT:-8420} STRIPE_PROXY_ADDR=127.0.0.1:${STRIPE_PROXY_PORT:-8421} \
            "$bin/local-stripe" > >(sed -u "s/^/[local-stripe] /") 2>&1 &
        pids+=($!)
    else
        : "${STRIPE_PUBLISHABLE_KEY:?PROCESSOR=stripe with STRIPE_SECRET_KEY needs STRIPE_PUBLISHABLE_KEY (pk_test_…) for the checkout}"
        : "${STRIPE_WEBHOOK_SECRET:?needs STRIPE_WEBHOOK_SECRET: run stripe listen --forward-to localhost:9111/v1/processors/stripe/events and use the whsec_… it prints}"
    fi
fi

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
echo "fleet: the HTTP API is on http://127.0.0.1:8081 (a key: target/debug/psctl keys create --merchant shop --mode test)" >&2
wait
