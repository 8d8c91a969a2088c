#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ answer on 127.0.0.1: starts them when
# installed but stopped, installs them from Debian packages when absent (as
# root), and otherwise stops with the command to run. Also creates the
# `payment_sessions` database. Set PS_SKIP_SERVICE_CHECK=1 when AMQP_URL and
# DATABASE_URL point at services managed elsewhere.
set -euo pipefail

[ "${PS_SKIP_SERVICE_CHECK:-0}" = 1 ] && exit 0

say() { printf 'services: %s\n' "$*" >&2; }
fail() { printf 'services: ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # description, seconds, command...
    local what=$1 secs=$2; shift 2
    for _ in $(seq 1 "$((secs * 2))"); do
        "$@" && return 0
        sleep 0.5
    done
    fail "$what did not come up within ${secs}s"
}

apt_install() {
    is_root || fail "$* is not installed. Run: sudo apt-get update && sudo apt-get install -y $*"
    say "installing $* from Debian packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_ready() { port_open 5432; }
pg_login() { psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; }

start_postgres() {
    is_root || fail "PostgreSQL is installed but not running. Run: sudo pg_ctlcluster $(ls /etc/postgresql 2>/dev/null | tail -n 1 || echo '<version>') main start"
    local started=0
    for v in $(ls /etc/postgresql 2>/dev/null); do
        [ -d "/etc/postgresql/$v/main" ] || continue
        say "starting PostgreSQL $v"
        pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
        started=1
    done
    [ $started = 1 ] || fail "PostgreSQL is installed but has no cluster. Run: sudo pg_createcluster --start <version> main"
}

ensure_postgres() {
    if ! pg_ready; then
        if ! command -v pg_ctlcluster >/dev/null 2>&1; then
            apt_install postgresql postgresql-client
        fi
        start_postgres
        wait_for "PostgreSQL" 60 pg_ready
    fi
    command -v psql >/dev/null 2>&1 || apt_install postgresql-client
    if ! pg_login; then
        # A fresh Debian cluster wants a password on TCP; the documented default
        # URL has none. Only a local cluster we may administer is changed.
        is_root && [ -d /etc/postgresql ] || fail "cannot log in to PostgreSQL on 127.0.0.1 as 'postgres' without a password. Allow it in pg_hba.conf (host all postgres 127.0.0.1/32 trust), or set DATABASE_URL and TEST_DATABASE_ADMIN_URL with credentials and PS_SKIP_SERVICE_CHECK=1"
        for hba in /etc/postgresql/*/main/pg_hba.conf; do
            grep -q '^host all all 127.0.0.1/32 trust' "$hba" && continue
            say "allowing passwordless TCP logins from 127.0.0.1 in $hba (development set-up)"
            sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        done
        for v in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$v" main reload 2>/dev/null || true; done
        wait_for "PostgreSQL login" 20 pg_login
    fi
    if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'payment_sessions'")" != 1 ]; then
        say "creating database payment_sessions"
        psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE payment_sessions' >/dev/null
    fi
    say "PostgreSQL ready on 127.0.0.1:5432"
}

amqp_ready() { port_open 5672; }

ensure_rabbitmq() {
    if ! amqp_ready; then
        command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
        is_root || fail "RabbitMQ is installed but not running. Run: sudo rabbitmq-server -detached"
        say "starting RabbitMQ"
        rabbitmq-server -detached >/dev/null 2>&1 || true
        wait_for "RabbitMQ" 120 amqp_ready
    fi
    # The port opens before the broker has finished booting.
    if command -v rabbitmqctl >/dev/null 2>&1 && is_root; then
        rabbitmqctl -q await_startup --timeout 120 >/dev/null 2>&1 || fail "RabbitMQ did not finish starting; see its log (rabbitmq-diagnostics status)"
    fi
    say "RabbitMQ ready on 127.0.0.1:5672"
}

ensure_postgres
ensure_rabbitmq
