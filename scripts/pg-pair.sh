#!/usr/bin/env bash
# A PostgreSQL primary and its synchronous streaming standby on this machine
# (issue 22), for the failover scenario: the installed server's binaries,
# data under $PG_PAIR_DIR, ports $PG_PAIR_PRIMARY_PORT and $PG_PAIR_STANDBY_PORT.
#
#   fresh         both built anew: initdb, then pg_basebackup of the standby;
#                 returns once the standby streams synchronously
#   kill-primary  the primary stopped as a crash stops it (immediate: no checkpoint)
#   promote       the standby made primary; it stops waiting for a synchronous
#                 standby it no longer has (as Patroni and CloudNativePG do)
#   down          both stopped, their data removed
#   status        each node's role
set -euo pipefail

DIR=${PG_PAIR_DIR:-/tmp/ps-pg-pair}
PRIMARY_PORT=${PG_PAIR_PRIMARY_PORT:-5441}
STANDBY_PORT=${PG_PAIR_STANDBY_PORT:-5442}
STANDBY_NAME=ps_standby

NAME=pg-pair
# shellcheck source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$BIN" ] && [ -x "$BIN/initdb" ] || fail "no PostgreSQL server binaries under /usr/lib/postgresql; run scripts/ensure-services.sh (it installs them)"
command -v psql >/dev/null 2>&1 || fail "psql is missing; run scripts/ensure-services.sh"

# PostgreSQL will not run as root: as root, the nodes run as `postgres`.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

sql() { # port, statement
    psql -h 127.0.0.1 -p "$1" -U postgres -d postgres -Atqc "$2"
}

stop_node() { # data dir
    [ -f "$1/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$1" -m immediate -w stop >/dev/null 2>&1 || true
}

down() {
    stop_node "$DIR/primary"
    stop_node "$DIR/standby"
    rm -rf "$DIR"
}

streaming_sync() {
    [ "$(sql "$PRIMARY_PORT" "SELECT sync_state FROM pg_stat_replication WHERE application_name = '$STANDBY_NAME'")" = sync ]
}

fresh() {
    down
    mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/primary" -U postgres --auth=trust >"$DIR/initdb.log" 2>&1 || fail "initdb failed: see $DIR/initdb.log"
    # Synchronous: a commit returns only once the standby has it (the
    # recommended setting, docs/failover.md), so a failover loses no payment.
    as_pg tee -a "$DIR/primary/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $PRIMARY_PORT
unix_socket_directories = '$DIR'
max_connections = 200
wal_level = replica
max_wal_senders = 5
synchronous_standby_names = '$STANDBY_NAME'
synchronous_commit = on
EOF
    as_pg "$BIN/pg_ctl" -D "$DIR/primary" -l "$DIR/primary.log" -w start >/dev/null || fail "the primary did not start: see $DIR/primary.log"
    as_pg "$BIN/pg_basebackup" -d "host=127.0.0.1 port=$PRIMARY_PORT user=postgres application_name=$STANDBY_NAME" \
        -D "$DIR/standby" -R -X stream -c fast >/dev/null || fail "pg_basebackup failed"
    as_pg tee -a "$DIR/standby/postgresql.conf" >/dev/null <<EOF
port = $STANDBY_PORT
EOF
    as_pg "$BIN/pg_ctl" -D "$DIR/standby" -l "$DIR/standby.log" -w start >/dev/null || fail "the standby did not start: see $DIR/standby.log"
    wait_until "the standby did not stream synchronously" 30 streaming_sync
    say "primary on $PRIMARY_PORT, synchronous standby on $STANDBY_PORT"
}

promote() {
    as_pg "$BIN/pg_ctl" -D "$DIR/standby" -w promote >/dev/null || fail "the standby did not promote: see $DIR/standby.log"
    wait_until "the promoted standby did not take writes" 30 sql "$STANDBY_PORT" "SELECT NOT pg_is_in_recovery() OR NULL"
    # No standby of its own yet: waiting for one would hold every commit.
    sql "$STANDBY_PORT" "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null
    sql "$STANDBY_PORT" "SELECT pg_reload_conf()" >/dev/null
    say "the standby on $STANDBY_PORT is primary"
}

status() {
    for port in "$PRIMARY_PORT" "$STANDBY_PORT"; do
        role=$(sql "$port" "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END" 2>/dev/null || echo down)
        echo "$port $role"
    done
}

case "${1:-}" in
    fresh) fresh ;;
    kill-primary) stop_node "$DIR/primary"; say "primary on $PRIMARY_PORT killed" ;;
    promote) promote ;;
    down) down ;;
    status) status ;;
    *) fail "usage: $0 fresh | kill-primary | promote | down | status" ;;
esac
