#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine (issue 22): three nodes of the
# installed RabbitMQ with their own names, ports and data under
# $RABBIT_CLUSTER_DIR; no containers. The machine's own broker (5672) is not
# touched. Node N listens for AMQP on 5680+N and for Erlang distribution on
# 25680+N; it is ps-rabbitN@localhost.
#
#   up             the three nodes fresh, clustered; returns once all run
#   down           all stopped, their data removed
#   kill N         node N killed (SIGKILL to its VM), as a machine loss is
#   start N        node N started again (it rejoins by itself)
#   partition N    node N cut off from the others (its distribution links
#                  dropped and refused) until `heal N`
#   heal N         node N reachable again
#   restart N      node N stopped cleanly and started (one step of a rolling restart)
#   ctl ARGS       rabbitmqctl against node 1 (or -n ps-rabbitN@localhost ARGS)
#   status         each node, running or not
set -euo pipefail

DIR=${RABBIT_CLUSTER_DIR:-/tmp/ps-rabbit-cluster}
RABBIT_BIN=${RABBIT_BIN:-/usr/lib/rabbitmq/bin}

NAME=rabbit-cluster
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

[ -x "$RABBIT_BIN/rabbitmq-server" ] || fail "no RabbitMQ under $RABBIT_BIN; run scripts/ensure-services.sh (it installs it), or set RABBIT_BIN"

node() { echo "ps-rabbit$1@localhost"; }
amqp_port() { echo $((5680 + $1)); }
dist_port() { echo $((25680 + $1)); }

# Each node's environment: its own files and ports, none of the machine's broker's.
node_env() {
    local n=$1 d="$DIR/n$1"
    echo HOME="$DIR" \
        RABBITMQ_NODENAME="$(node "$n")" \
        RABBITMQ_NODE_PORT="$(amqp_port "$n")" \
        RABBITMQ_DIST_PORT="$(dist_port "$n")" \
        RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
        RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$d/mnesia" \
        RABBITMQ_LOG_BASE="$d/log" \
        RABBITMQ_PID_FILE="$d/pid"
}

ctl() { # node number, args...
    local n=$1; shift
    # A CLI that fails leaves its erl_crash.dump with the cluster's files, not in the caller's directory.
    env HOME="$DIR" ERL_CRASH_DUMP="$DIR/erl_crash.dump" "$RABBIT_BIN/rabbitmqctl" -q -n "$(node "$n")" "$@"
}

running() { ctl "$1" status >/dev/null 2>&1; }

start_node() {
    local n=$1
    # shellcheck disable=SC2046
    env $(node_env "$n") "$RABBIT_BIN/rabbitmq-server" -detached >/dev/null 2>&1
    wait_until "node $n did not start (see $DIR/n$n/log)" 60 running "$n"
    ctl "$n" await_startup >/dev/null
}

prepare_node() {
    local n=$1 d="$DIR/n$1"
    mkdir -p "$d/mnesia" "$d/log"
    cat >"$d/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
loopback_users = none
# A node cut off from the majority stops serving rather than diverging.
cluster_partition_handling = pause_minority
# As the fleet's own broker takes them (deploy/k8s/rabbitmq.yaml).
max_message_size = 2097152
EOF
    echo '[].' >"$d/enabled_plugins"
    : >"$d/rabbitmq-env.conf"
}

vm_pid() { # the node's Erlang VM
    cat "$DIR/n$1/pid" 2>/dev/null || true
}

up() {
    down
    mkdir -p "$DIR"
    # One cookie for the three, in their own HOME.
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/.erlang.cookie"
    chmod 400 "$DIR/.erlang.cookie"
    for n in 1 2 3; do prepare_node "$n"; done
    start_node 1
    for n in 2 3; do
        start_node "$n"
        ctl "$n" stop_app
        ctl "$n" join_cluster "$(node 1)"
        ctl "$n" start_app
    done
    say "three nodes clustered: amqp on $(amqp_port 1), $(amqp_port 2), $(amqp_port 3)"
}

down() {
    for n in 1 2 3; do
        local pid
        pid=$(vm_pid "$n")
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    done
    # The VMs' helpers (epmd stays: the machine's broker uses it too).
    pkill -9 -f "$DIR/n[123]/" 2>/dev/null || true
    rm -rf "$DIR"
}

partition() {
    local n=$1 others=()
    for other in 1 2 3; do [ "$other" = "$n" ] || others+=("$other"); done
    local a b me
    a="'$(node "${others[0]}")'" b="'$(node "${others[1]}")'" me="'$(node "$n")'"
    # In one step on the cut-off node, while still connected: each side given
    # a wrong cookie for the other (two different ones, so neither handshake
    # can succeed), then the links dropped at once, so the other two see it
    # go together and stay a majority (no partial partition between).
    ctl "$n" eval "
        [true = rpc:call(O, erlang, set_cookie, [$me, 'cut-off-outside']) || O <- [$a, $b]],
        [true = erlang:set_cookie(O, 'cut-off-inside') || O <- [$a, $b]],
        [erlang:disconnect_node(O) || O <- [$a, $b]]." >/dev/null
    say "node $n cut off"
}

heal() {
    local n=$1 cookie
    cookie=$(cat "$DIR/.erlang.cookie")
    for other in 1 2 3; do
        [ "$other" = "$n" ] && continue
        ctl "$n" eval "erlang:set_cookie('$(node "$other")', '$cookie')." >/dev/null
        ctl "$other" eval "erlang:set_cookie('$(node "$n")', '$cookie'), net_adm:ping('$(node "$n")')." >/dev/null
    done
    say "node $n reachable again"
}

status() {
    for n in 1 2 3; do
        if running "$n"; then echo "$n $(node "$n") running"; else echo "$n $(node "$n") down"; fi
    done
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    kill) pid=$(vm_pid "${2:?node}"); [ -n "$pid" ] || fail "node $2 has no pid"; kill -9 "$pid"; say "node $2 killed" ;;
    start) start_node "${2:?node}"; say "node $2 started" ;;
    restart) ctl "${2:?node}" stop >/dev/null; start_node "$2"; say "node $2 restarted" ;;
    partition) partition "${2:?node}" ;;
    heal) heal "${2:?node}" ;;
    ctl) shift; if [ "${1:-}" = "-n" ]; then n=$2; shift 2; ctl "$n" "$@"; else ctl 1 "$@"; fi ;;
    status) status ;;
    *) fail "usage: $0 up | down | kill N | start N | restart N | partition N | heal N | ctl ARGS | status" ;;
esac
