#!/usr/bin/env bash
# Local PostgreSQL and RabbitMQ for onboard's tests and development, without Docker.
#
#   scripts/services.sh [up]   install (apt) when missing, start both, or reuse running ones
#   scripts/services.sh down   stop what this script started (nothing else)
#   scripts/services.sh status what is running, and whether the expected credentials work
#   scripts/services.sh env    export lines for the worker and the tests:
#                              eval "$(scripts/services.sh env)"
#   scripts/services.sh tools  install what the tests use beside the services when missing:
#                              promtool (Debian's prometheus package; its own service is
#                              left stopped), chromium and chromedriver (chromium-driver)
#   scripts/services.sh sweep  drop what earlier test runs left (onboard_test_* databases,
#                              test-* queues and exchanges); scripts/test.sh runs it first
#
# Data, logs and config live under <repo>/.local/. Ports: ONBOARD_PG_PORT (5432),
# ONBOARD_AMQP_PORT (5672), ONBOARD_RABBITMQ_MGMT_PORT (15672). The management plugin is on by
# default (it adds no measurable start time here); ONBOARD_RABBITMQ_MANAGEMENT=0 turns it off.
# The RabbitMQ node is onboard@localhost (onboard-<port>@localhost on another port):
#   rabbitmqctl -n onboard@localhost status      (as root or as rabbitmq)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL="$ROOT/.local"

PG_PORT=${ONBOARD_PG_PORT:-5432}
AMQP_PORT=${ONBOARD_AMQP_PORT:-5672}
MGMT_PORT=${ONBOARD_RABBITMQ_MGMT_PORT:-15672}
MGMT=${ONBOARD_RABBITMQ_MANAGEMENT:-1}

PG_USER=onboard PG_PASSWORD=onboard PG_DB=onboard
AMQP_USER=guest AMQP_PASSWORD=guest

PG_DIR="$LOCAL/postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/log/postgres.log"
PG_SOCK="$PG_DIR/run"
# A unix socket path must fit in 107 bytes; a deep checkout would not.
if (( ${#PG_SOCK} > 80 )); then PG_SOCK="/tmp/onboard-pg-$(id -u)-$PG_PORT"; fi

RMQ_DIR="$LOCAL/rabbitmq"
RMQ_LIB=/usr/lib/rabbitmq/bin
RMQ_PID="$RMQ_DIR/rabbitmq.pid"
RMQ_STARTUP_LOG="$RMQ_DIR/log/startup.log"
if [[ $AMQP_PORT == 5672 ]]; then RMQ_NODE_DEFAULT=onboard@localhost; else RMQ_NODE_DEFAULT="onboard-$AMQP_PORT@localhost"; fi
RMQ_NODE=${ONBOARD_RABBITMQ_NODENAME:-$RMQ_NODE_DEFAULT}
RMQ_LOG="$RMQ_DIR/log/$RMQ_NODE.log"

# PostgreSQL refuses to run as root and RabbitMQ should not: as root, run each as its own
# system user; as anyone else, run both as yourself.
if (( EUID == 0 )); then PG_OS_USER=postgres RMQ_OS_USER=rabbitmq; else PG_OS_USER=$(id -un) RMQ_OS_USER=$(id -un); fi

say() { printf '[services] %s\n' "$*"; }
warn() { printf '[services] warning: %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

# Print the end of a log file to stderr, for failures (Erlang terms make very long lines).
show_log() {
    local f=$1
    if [[ -f $f ]]; then
        printf '[services] --- last lines of %s ---\n' "$f" >&2
        tail -n "${2:-30}" "$f" | cut -c1-300 >&2 || true
        printf '[services] ---\n' >&2
    fi
}

# Why a RabbitMQ node did not come up: the boot error (one line on stdout, "init terminating
# in do_boot ..."), then the first errors this start wrote to the node log.
RMQ_LOG_START=0
rmq_show_failure() {
    show_log "$RMQ_STARTUP_LOG" 6
    local errors
    # (grep -m ends the pipe early: with pipefail that is a failure, hence || true.)
    errors=$(tail -n +"$((RMQ_LOG_START + 1))" "$RMQ_LOG" 2>/dev/null | grep -m 12 '\[error\]' | cut -c1-300 || true)
    if [[ -n $errors ]]; then
        printf '[services] --- first errors in %s ---\n%s\n[services] ---\n' "$RMQ_LOG" "$errors" >&2
    fi
}

as_root() {
    if (( EUID == 0 )); then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root for: $* (no sudo found)"; fi
}

# The command line that runs a command as another OS user (root only), with that user's HOME,
# in USER_CMD. As non-root, the command as is.
user_cmd() {
    local user=$1; shift
    if (( EUID != 0 )); then USER_CMD=("$@"); return; fi
    local home
    home=$(getent passwd "$user" | cut -d: -f6)
    USER_CMD=(setpriv --reuid="$user" --regid="$user" --init-groups env HOME="$home" USER="$user" LOGNAME="$user" "$@")
}

# Close every fd above 2 of the current (sub)shell. Daemons started from here must hold none
# of ours: not the lock of this script (fd 9), not a pipe that a CI runner waits on.
close_extra_fds() {
    local f fd
    for f in /proc/"$BASHPID"/fd/*; do
        fd=${f##*/}
        if (( fd > 2 )); then exec {fd}>&- 2>/dev/null || true; fi
    done
}

# Run a command as another OS user, from / so tools do not trip over an unreadable working
# directory.
as_user() {
    local USER_CMD
    user_cmd "$@"
    (cd / && close_extra_fds && exec "${USER_CMD[@]}")
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() {
    # shellcheck disable=SC2016 # $1 is expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

# Directories this script creates for a service user must be reachable by that user, which
# needs search (x) permission on every ancestor (e.g. /root is 0700 on Debian). Grant o+x (not
# read) where it is missing, from / down, so each message names a directory that needed it.
ensure_traversable() {
    local user=$1 dir=$2 d path=""
    (( EUID == 0 )) || return 0
    as_user "$user" test -x "$dir" && return 0
    local parts
    IFS=/ read -r -a parts <<<"${dir#/}"
    for d in "${parts[@]}"; do
        path="$path/$d"
        if ! as_user "$user" test -x "$path"; then
            say "granting o+x on $path so that $user can reach ${dir#"$ROOT"/}"
            chmod o+x "$path"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# installation

pg_bindir() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1 || true)
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl ]] || return 1
    printf '%s\n' "$d"
}

apt_has_candidate() {
    local p policy
    for p in "$@"; do
        policy=$(apt-cache policy "$p" 2>/dev/null || true)
        [[ $policy == *"Candidate: "[0-9]* ]] || return 1
    done
}

ensure_installed() {
    local want=()
    pg_bindir >/dev/null || want+=(postgresql)
    [[ -x $RMQ_LIB/rabbitmq-server ]] || want+=(rabbitmq-server)
    (( ${#want[@]} )) || return 0
    command -v apt-get >/dev/null || die "please install ${want[*]}: apt-get not found"
    local log="$LOCAL/apt.log"
    say "installing ${want[*]} with apt-get (log: $log)"
    local install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}")
    if ! apt_has_candidate "${want[@]}"; then
        say "package lists are missing or stale: apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$log" 2>&1 || { show_log "$log"; die "apt-get update failed"; }
    fi
    if ! as_root "${install[@]}" >>"$log" 2>&1; then
        # Old lists can point at packages the mirror no longer has: refresh once and retry.
        say "apt-get install failed; refreshing package lists and retrying"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || { show_log "$log"; die "apt-get update failed"; }
        as_root "${install[@]}" >>"$log" 2>&1 || { show_log "$log"; die "apt-get install ${want[*]} failed"; }
    fi
    pg_bindir >/dev/null || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
    [[ -x $RMQ_LIB/rabbitmq-server ]] || die "rabbitmq-server installed but no $RMQ_LIB/rabbitmq-server"
    say "installed ${want[*]}"
}

# What the tests use beside the services, from Debian's packages: promtool (package
# prometheus) for the alert rules' tests, chromium and chromedriver (chromium-driver) for the
# console's browser tests. The prometheus package also brings a Prometheus service, which this
# script stops and disables where systemd runs it: scripts/observe.sh starts its own.
ensure_tools() {
    local want=() command package
    for pair in promtool:prometheus chromium:chromium chromedriver:chromium-driver; do
        command=${pair%%:*} package=${pair#*:}
        if command -v "$command" >/dev/null; then
            say "tools: $command present"
        else
            want+=("$package")
        fi
    done
    ((${#want[@]})) || return 0
    command -v apt-get >/dev/null || die "please install ${want[*]}: apt-get not found"
    local log="$LOCAL/apt.log" install=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}")
    say "tools: installing ${want[*]} with apt-get (log: $log)"
    if ! apt_has_candidate "${want[@]}"; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || { show_log "$log"; die "apt-get update failed"; }
    fi
    if ! as_root "${install[@]}" >>"$log" 2>&1; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || { show_log "$log"; die "apt-get update failed"; }
        as_root "${install[@]}" >>"$log" 2>&1 || { show_log "$log"; die "apt-get install ${want[*]} failed"; }
    fi
    if [[ " ${want[*]} " == *" prometheus "* && -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    for pair in promtool:prometheus chromium:chromium chromedriver:chromium-driver; do
        command -v "${pair%%:*}" >/dev/null || die "${pair#*:} installed but no ${pair%%:*} on PATH"
    done
    say "tools: installed ${want[*]}"
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

PG_BIN=

pg() { as_user "$PG_OS_USER" "$@"; }

# Superuser session over the private unix socket of the cluster in .local/.
pg_super_psql() {
    pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U postgres -d postgres "$@"
}

pg_started_here() {
    [[ -f $PG_DATA/PG_VERSION && -n $PG_BIN ]] && pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1
}

# Port of the postmaster started here (line 4 of postmaster.pid).
pg_here_port() { sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null; }

pg_stop_here() {
    say "postgres: stopping"
    pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null || { show_log "$PG_LOG"; die "postgres: stop failed"; }
    say "postgres: stopped"
}

pg_login_ok() {
    PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 "$PG_BIN/psql" -X -q -w -h 127.0.0.1 -p "$PG_PORT" \
        -U "$PG_USER" -d "$PG_DB" -tAc 'select 1' >/dev/null 2>&1
}

# Role and database the worker and the tests use; safe to run on every `up`.
pg_provision() {
    "$@" <<SQL
DO \$\$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
  -- The benchmark checkpoints after filling a table, so the fill is not written out while it
  -- measures (PostgreSQL 15+; older servers have no such role).
  IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pg_checkpoint') THEN
    EXECUTE 'GRANT pg_checkpoint TO $PG_USER';
  END IF;
END
\$\$;
SELECT 'CREATE DATABASE $PG_DB OWNER $PG_USER' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
-- A template with pg_stat_statements (which only a superuser may create) for the benchmark's
-- profile phase: its database is made from it, and $PG_USER may read and reset the figures.
GRANT pg_read_all_stats TO $PG_USER;
-- The benchmark drops its database between phases WITH (FORCE), which must end the autovacuum
-- worker that a phase's writes woke on it.
GRANT pg_signal_backend TO $PG_USER;
SELECT 'CREATE DATABASE onboard_pgss_template' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'onboard_pgss_template')
\gexec
\connect onboard_pgss_template
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
GRANT EXECUTE ON FUNCTION pg_stat_statements_reset(oid, oid, bigint) TO $PG_USER;
ALTER DATABASE onboard_pgss_template IS_TEMPLATE true;
SQL
}

pg_init() {
    [[ -f $PG_DATA/PG_VERSION ]] && return 0
    say "postgres: initdb in ${PG_DATA#"$ROOT"/}"
    install -d -m 0755 -o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")" "$PG_DIR" "$PG_DIR/log"
    ensure_traversable "$PG_OS_USER" "$PG_DIR"
    rm -rf "$PG_DATA"
    if ! pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
            -E UTF8 --no-locale >"$PG_DIR/log/initdb.log" 2>&1; then
        show_log "$PG_DIR/log/initdb.log"; die "postgres: initdb failed"
    fi
    # Settings this script owns live in onboard.conf, rewritten on every start.
    printf "\ninclude_if_exists = 'onboard.conf'\n" | pg tee -a "$PG_DATA/postgresql.conf" >/dev/null
}

pg_start() {
    ensure_traversable "$PG_OS_USER" "$PG_DIR"
    # The unix socket is for the superuser only (trust auth): keep its directory private.
    install -d -m 0700 -o "$PG_OS_USER" -g "$(id -gn "$PG_OS_USER")" "$PG_SOCK"
    pg tee "$PG_DATA/onboard.conf" >/dev/null <<CONF
# Written by scripts/services.sh on every start; edit there.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK'
# Tests run in parallel, each with its own pool and its own database.
max_connections = 400
# Sized as a production server of this machine would be rather than initdb's minimum
# (128MB, 1GB of WAL between checkpoints): the 1M-client benchmark's indexes stay in memory,
# and checkpoints (each followed by a burst of full-page writes) come every few minutes, not
# every few seconds of load.
shared_buffers = 1GB
max_wal_size = 4GB
checkpoint_timeout = 15min
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
# Per-statement cost for scripts/bench.sh's profile phase (calls, rows and time per onboarding),
# as production servers usually have it; an extension only where a database creates it.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
CONF
    say "postgres: starting on 127.0.0.1:$PG_PORT (log: ${PG_LOG#"$ROOT"/})"
    if ! pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 90 start >/dev/null 2>"$PG_DIR/log/pg_ctl.err"; then
        cat "$PG_DIR/log/pg_ctl.err" >&2 || true
        show_log "$PG_LOG"; die "postgres: failed to start"
    fi
}

pg_up() {
    PG_BIN=$(pg_bindir)
    if pg_started_here && [[ $(pg_here_port) != "$PG_PORT" ]]; then
        say "postgres: the server started here listens on port $(pg_here_port); restarting it on $PG_PORT"
        pg_stop_here
    fi
    if pg_started_here; then
        pg_provision pg_super_psql >/dev/null || { show_log "$PG_LOG"; die "postgres: could not create role/database"; }
        say "postgres: already running (started here), 127.0.0.1:$PG_PORT"
        return
    fi
    if "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 3; then
        if pg_login_ok; then
            say "postgres: reusing the server already on 127.0.0.1:$PG_PORT ($PG_USER/$PG_PASSWORD works)"
            return
        fi
        # A Debian cluster (e.g. started by systemd after apt-get install) answers here: as root we
        # can reach it as its superuser over its own socket and add what we need.
        if (( EUID == 0 )) && [[ -S /var/run/postgresql/.s.PGSQL.$PG_PORT ]] &&
           pg_provision as_user postgres "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h /var/run/postgresql \
               -p "$PG_PORT" -d postgres >/dev/null 2>&1 && pg_login_ok; then
            say "postgres: reusing the system cluster on 127.0.0.1:$PG_PORT (added role/database $PG_DB)"
            warn "its max_connections is not managed here; parallel tests may need more than 100"
            return
        fi
        die "postgres: something answers on 127.0.0.1:$PG_PORT but $PG_USER/$PG_PASSWORD cannot log in to $PG_DB; stop it or set ONBOARD_PG_PORT"
    fi
    port_open "$PG_PORT" && die "postgres: port $PG_PORT is taken by something that is not PostgreSQL; set ONBOARD_PG_PORT"
    pg_init
    pg_start
    pg_provision pg_super_psql >/dev/null || { show_log "$PG_LOG"; die "postgres: could not create role/database"; }
    pg_login_ok || { show_log "$PG_LOG"; die "postgres: started, but $PG_USER cannot log in over TCP"; }
    say "postgres: ready, database $PG_DB, role $PG_USER (LOGIN CREATEDB), max_connections 400"
}

pg_down() {
    PG_BIN=$(pg_bindir 2>/dev/null) || { say "postgres: not installed, nothing to stop"; return; }
    if pg_started_here; then
        pg_stop_here
    else
        say "postgres: not running from ${PG_DATA#"$ROOT"/}, nothing to stop"
    fi
}

pg_status() {
    PG_BIN=$(pg_bindir 2>/dev/null) || { say "postgres: not installed"; return 1; }
    local how="not started here"
    pg_started_here && how="started here, port $(pg_here_port), pid $(head -n 1 "$PG_DATA/postmaster.pid")"
    if pg_login_ok; then
        say "postgres: up on 127.0.0.1:$PG_PORT ($how), $PG_USER/$PG_PASSWORD can log in to $PG_DB"
    elif "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 3; then
        say "postgres: something answers on 127.0.0.1:$PG_PORT ($how) but $PG_USER cannot log in"; return 1
    else
        say "postgres: down on 127.0.0.1:$PG_PORT"; return 1
    fi
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ

rmq_home() {
    # The Debian wrappers (/usr/sbin/rabbitmqctl etc.) run the CLI as the rabbitmq user with
    # HOME set to its home, so the node must use the Erlang cookie found there: then
    # `rabbitmqctl -n NODE ...` works from root and from rabbitmq alike.
    local home
    home=$(getent passwd "$RMQ_OS_USER" | cut -d: -f6)
    if [[ -n $home && -d $home ]] && as_user "$RMQ_OS_USER" test -w "$home"; then
        printf '%s\n' "$home"
    else
        printf '%s\n' "$RMQ_DIR/home"
    fi
}

# The command line of a RabbitMQ program, as the broker's user with this node's environment,
# in USER_CMD.
rmq_cmd() {
    local prog=$1; shift
    user_cmd "$RMQ_OS_USER" env \
        HOME="$RMQ_HOME" \
        RABBITMQ_NODENAME="$RMQ_NODE" \
        RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$AMQP_PORT" \
        RABBITMQ_DIST_PORT="$((AMQP_PORT + 20000))" \
        RABBITMQ_CONF_ENV_FILE="$RMQ_DIR/etc/rabbitmq-env.conf" \
        RABBITMQ_CONFIG_FILE="$RMQ_DIR/etc/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$RMQ_DIR/etc/advanced.config" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$RMQ_DIR/etc/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$RMQ_DIR/mnesia" \
        RABBITMQ_LOG_BASE="$RMQ_DIR/log" \
        RABBITMQ_PID_FILE="$RMQ_PID" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        "$RMQ_LIB/$prog" "$@"
}

rmq() {
    local USER_CMD
    rmq_cmd "$@"
    (cd / && close_extra_fds && exec "${USER_CMD[@]}")
}

rmq_pid() {
    local pid
    [[ -f $RMQ_PID ]] || return 1
    pid=$(tr -dc 0-9 <"$RMQ_PID")
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == beam* ]] || return 1
    printf '%s\n' "$pid"
}

rmq_started_here() { rmq_pid >/dev/null; }

# Node name or AMQP port of the node started here (as recorded at its start).
rmq_here() {
    local node=$RMQ_NODE port=$AMQP_PORT
    [[ -f $RMQ_DIR/running ]] && read -r node port <"$RMQ_DIR/running"
    if [[ $1 == node ]]; then printf '%s\n' "$node"; else printf '%s\n' "$port"; fi
}

epmd_running() { port_open 4369; }

# AMQP 0-9-1 handshake in plain bash: connect, log in with PLAIN, open vhost "/", close.
# Succeeds only when the broker accepts the credentials, with no client library needed.
amqp_probe() {
    local port=$1 user=$2 pass=$3 vhost=/ hdr bytes
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    # Read one frame; print "class method" of a method frame.
    read_method() {
        local h size rest
        h=$(dd bs=1 count=7 <&3 2>/dev/null | od -An -tu1) || return 1
        read -r -a hdr <<<"$h"
        (( ${#hdr[@]} == 7 )) || return 1
        size=$(( (hdr[3] << 24) | (hdr[4] << 16) | (hdr[5] << 8) | hdr[6] ))
        h=$(dd bs=1 count=4 <&3 2>/dev/null | od -An -tu1) || return 1
        read -r -a rest <<<"$h"
        (( ${#rest[@]} == 4 )) || return 1
        dd bs=1 count=$((size - 4 + 1)) <&3 >/dev/null 2>&1
        echo "$(( (rest[0] << 8) | rest[1] )) $(( (rest[2] << 8) | rest[3] ))"
    }
    u8() { bytes+=("$1"); }
    u16() { bytes+=($(( ($1 >> 8) & 255 )) $(( $1 & 255 ))); }
    u32() { bytes+=($(( ($1 >> 24) & 255 )) $(( ($1 >> 16) & 255 )) $(( ($1 >> 8) & 255 )) $(( $1 & 255 ))); }
    str() { local s=$1 i; for ((i = 0; i < ${#s}; i++)); do bytes+=("$(printf '%d' "'${s:i:1}")"); done; }
    shortstr() { u8 "${#1}"; str "$1"; }
    send_method() { # payload in bytes[]
        local payload=("${bytes[@]}")
        bytes=(); u8 1; u16 0; u32 "${#payload[@]}"; bytes+=("${payload[@]}"); u8 206
        # shellcheck disable=SC2059 # the format is the frame itself, as \x escapes
        printf "$(printf '\\x%02x' "${bytes[@]}")" >&3
        bytes=()
    }
    printf 'AMQP\x00\x00\x09\x01' >&3
    [[ $(read_method) == "10 10" ]] || return 1                            # connection.start
    bytes=(); u16 10; u16 11; u32 0; shortstr PLAIN
    u32 $(( ${#user} + ${#pass} + 2 )); u8 0; str "$user"; u8 0; str "$pass"; shortstr en_US
    send_method                                                            # start-ok
    [[ $(read_method) == "10 30" ]] || return 1                            # tune (else: refused)
    u16 10; u16 31; u16 1; u32 4096; u16 0; send_method                    # tune-ok, minimal
    u16 10; u16 40; shortstr "$vhost"; shortstr ""; u8 0; send_method      # open
    [[ $(read_method) == "10 41" ]] || return 1                            # open-ok
    u16 10; u16 50; u16 200; shortstr ""; u16 0; u16 0; send_method        # close
    read_method >/dev/null || true                                         # close-ok
    exec 3>&-
}

amqp_login_ok() {
    timeout 10 bash -c "$(declare -f amqp_probe); amqp_probe \"\$@\"" _ "$AMQP_PORT" "$AMQP_USER" "$AMQP_PASSWORD" 2>/dev/null
}

rmq_write_config() {
    install -d -m 0755 -o "$RMQ_OS_USER" -g "$(id -gn "$RMQ_OS_USER")" \
        "$RMQ_DIR" "$RMQ_DIR/etc" "$RMQ_DIR/log" "$RMQ_DIR/mnesia"
    ensure_traversable "$RMQ_OS_USER" "$RMQ_DIR"
    local plugins="[]."
    [[ $MGMT == 1 ]] && plugins="[rabbitmq_management]."
    rmq_write "$RMQ_DIR/etc/enabled_plugins" <<<"$plugins"
    # An empty env file, so /etc/rabbitmq/rabbitmq-env.conf does not apply to this node.
    rmq_write "$RMQ_DIR/etc/rabbitmq-env.conf" <<<"# see scripts/services.sh"
    rmq_write "$RMQ_DIR/etc/advanced.config" <<<"[]."
    rmq_write "$RMQ_DIR/etc/rabbitmq.conf" <<CONF
# Written by scripts/services.sh on every start; edit there.
# The AMQP listener (127.0.0.1:$AMQP_PORT) comes from RABBITMQ_NODE_IP_ADDRESS/PORT.
# guest/guest may log in, from loopback only (the default).
loopback_users.guest = true
management.tcp.ip = 127.0.0.1
management.tcp.port = $MGMT_PORT
# The UI and the tools need object counts and depths, not message rates, which cost the
# node CPU on every message (RabbitMQ's advice for busy nodes).
management.rates_mode = none
log.file.level = info
log.console = false
CONF
    # Erlang creates a missing cookie at boot; the CLI racing it could create another one.
    local cookie="$RMQ_HOME/.erlang.cookie"
    if [[ ! -f $cookie ]]; then
        install -d -m 0700 -o "$RMQ_OS_USER" -g "$(id -gn "$RMQ_OS_USER")" "$RMQ_HOME"
        local c
        c=$(head -c 4096 /dev/urandom | LC_ALL=C tr -dc '[:upper:]')
        (umask 077; printf '%s' "${c:0:20}" >"$cookie")
        chown "$RMQ_OS_USER:" "$cookie" 2>/dev/null || true
        chmod 0400 "$cookie"
    fi
}

rmq_write() { as_user "$RMQ_OS_USER" tee "$1" >/dev/null; }

rmq_start() {
    local mgmt_note="management UI on http://127.0.0.1:$MGMT_PORT"
    [[ $MGMT == 1 ]] || mgmt_note="management plugin off"
    say "rabbitmq: starting node $RMQ_NODE on 127.0.0.1:$AMQP_PORT, $mgmt_note (log: ${RMQ_LOG#"$ROOT"/})"
    epmd_running || touch "$RMQ_DIR/.epmd-started-here"
    rm -f "$RMQ_PID"
    # Which node and port this checkout runs, for `down` and for a later `up` on another port.
    printf '%s %s\n' "$RMQ_NODE" "$AMQP_PORT" >"$RMQ_DIR/running"
    RMQ_LOG_START=0
    [[ -f $RMQ_LOG ]] && RMQ_LOG_START=$(wc -l <"$RMQ_LOG")
    # One process (exec all the way), in a session of its own, all output to a file and no fd
    # of ours: the node outlives this script, ignores the terminal and does not hold a CI pipe.
    local USER_CMD
    rmq_cmd rabbitmq-server
    (cd / && close_extra_fds && exec setsid "${USER_CMD[@]}" </dev/null >>"$RMQ_STARTUP_LOG" 2>&1) &
    local launcher=$! deadline=$((SECONDS + 120))
    disown "$launcher" 2>/dev/null || true
    until rmq_started_here && amqp_login_ok; do
        if ! kill -0 "$launcher" 2>/dev/null; then
            rmq_show_failure; die "rabbitmq: the node exited during startup"
        fi
        (( SECONDS < deadline )) || { rmq_show_failure; die "rabbitmq: not ready after 120s (node still running, pid file ${RMQ_PID#"$ROOT"/})"; }
        sleep 1
    done
    # The AMQP port opens last, but ask the node itself too: this also proves that the CLI
    # (and so the Erlang cookie and epmd) works, which quorum queue tooling depends on.
    if ! rmq rabbitmqctl -n "$RMQ_NODE" -q await_startup --timeout 60 >/dev/null 2>"$RMQ_DIR/log/cli.err"; then
        cat "$RMQ_DIR/log/cli.err" >&2; show_log "$RMQ_LOG"; die "rabbitmq: rabbitmqctl cannot reach $RMQ_NODE"
    fi
}

rmq_up() {
    RMQ_HOME=$(rmq_home)
    if rmq_started_here && [[ $(rmq_here port) != "$AMQP_PORT" ]]; then
        say "rabbitmq: the node started here listens on port $(rmq_here port); restarting it on $AMQP_PORT"
        rmq_stop_here
    fi
    if rmq_started_here; then
        if amqp_login_ok; then
            say "rabbitmq: already running (started here), node $RMQ_NODE, 127.0.0.1:$AMQP_PORT"
            return
        fi
        say "rabbitmq: node started here is still booting; waiting"
        local deadline=$((SECONDS + 120))
        until amqp_login_ok; do
            (( SECONDS < deadline )) || { show_log "$RMQ_LOG"; die "rabbitmq: node is running but refuses $AMQP_USER/$AMQP_PASSWORD on port $AMQP_PORT"; }
            sleep 1
        done
        say "rabbitmq: ready"
        return
    fi
    if port_open "$AMQP_PORT"; then
        amqp_login_ok || die "rabbitmq: something answers on 127.0.0.1:$AMQP_PORT but does not accept $AMQP_USER/$AMQP_PASSWORD on vhost /; stop it or set ONBOARD_AMQP_PORT"
        say "rabbitmq: reusing the broker already on 127.0.0.1:$AMQP_PORT ($AMQP_USER/$AMQP_PASSWORD works)"
        return
    fi
    port_open $((AMQP_PORT + 20000)) && die "rabbitmq: distribution port $((AMQP_PORT + 20000)) is taken (another node?); set ONBOARD_AMQP_PORT"
    if [[ $MGMT == 1 ]] && port_open "$MGMT_PORT"; then
        die "rabbitmq: management port $MGMT_PORT is taken; set ONBOARD_RABBITMQ_MGMT_PORT, or ONBOARD_RABBITMQ_MANAGEMENT=0"
    fi
    rmq_write_config
    rmq_start
    say "rabbitmq: ready (rabbitmqctl -n $RMQ_NODE status works; guest/guest on 127.0.0.1:$AMQP_PORT)"
}

# Stop the node this checkout started (by the name it was started with).
rmq_stop_here() {
    local pid node
    pid=$(rmq_pid) || return 0
    node=$(rmq_here node)
    say "rabbitmq: stopping node $node (pid $pid)"
    # `stop <pidfile>` returns once the OS process is gone.
    if ! rmq rabbitmqctl -n "$node" -q stop "$RMQ_PID" >/dev/null 2>&1; then
        warn "rabbitmqctl stop failed; sending SIGTERM to $pid"
        kill -TERM "$pid" 2>/dev/null || true
    fi
    local i
    for ((i = 0; i < 60; i++)); do [[ -d /proc/$pid ]] || break; sleep 1; done
    [[ ! -d /proc/$pid ]] || die "rabbitmq: pid $pid still alive after 60s"
    rm -f "$RMQ_PID" "$RMQ_DIR/running"
    say "rabbitmq: stopped"
}

rmq_down() {
    [[ -x $RMQ_LIB/rabbitmq-server ]] || { say "rabbitmq: not installed, nothing to stop"; return; }
    RMQ_HOME=$(rmq_home)
    if rmq_started_here; then
        rmq_stop_here
    else
        say "rabbitmq: no node running from ${RMQ_DIR#"$ROOT"/}, nothing to stop"
    fi
    # epmd outlives the node; stop it too if this script started it and no node uses it.
    if [[ -f $RMQ_DIR/.epmd-started-here ]]; then
        if epmd_running && [[ -z $(epmd -names 2>/dev/null | grep '^name ' || true) ]]; then
            epmd -kill >/dev/null 2>&1 || true
            say "rabbitmq: stopped epmd"
        fi
        rm -f "$RMQ_DIR/.epmd-started-here"
    fi
}

rmq_status() {
    [[ -x $RMQ_LIB/rabbitmq-server ]] || { say "rabbitmq: not installed"; return 1; }
    local how="not started here" pid
    pid=$(rmq_pid) && how="started here, node $(rmq_here node), port $(rmq_here port), pid $pid"
    if amqp_login_ok; then
        say "rabbitmq: up on 127.0.0.1:$AMQP_PORT ($how), $AMQP_USER/$AMQP_PASSWORD can log in"
    elif port_open "$AMQP_PORT"; then
        say "rabbitmq: something answers on 127.0.0.1:$AMQP_PORT ($how) but $AMQP_USER cannot log in"; return 1
    else
        say "rabbitmq: down on 127.0.0.1:$AMQP_PORT${pid:+ ($how)}"; return 1
    fi
    if [[ -n ${pid:-} ]] && port_open "$MGMT_PORT"; then say "rabbitmq: management UI http://127.0.0.1:$MGMT_PORT (guest/guest)"; fi
}

# ---------------------------------------------------------------------------------------------

lock() {
    mkdir -p "$LOCAL"
    exec 9>"$LOCAL/.services.lock"
    flock -n 9 && return
    say "waiting for another scripts/services.sh to finish (lock: ${LOCAL#"$ROOT"/}/.services.lock)"
    flock -w 300 9 || die "another scripts/services.sh holds $LOCAL/.services.lock"
}

print_env() {
    printf 'export %s\n' \
        "ONBOARD__BROKER__URL=amqp://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$AMQP_PORT/%2f" \
        "ONBOARD__DATABASE__URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB" \
        "ONBOARD_TEST_DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/postgres"
}

# What earlier test runs left behind (a test that failed or was killed does not clean up): the
# test databases (onboard_test_*) and the test prefixes' queues and exchanges (test-*). Idle
# quorum queues keep RabbitMQ busy, so a machine that ran the suites many times measures a
# slower broker. Only for when no test runs: scripts/test.sh calls it before its own run.
sweep() {
    local db n=0 kind name
    for db in $(PGPASSWORD=$PG_PASSWORD "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -AtX \
            -c "SELECT datname FROM pg_database WHERE datname LIKE 'onboard\_test\_%'"); do
        PGPASSWORD=$PG_PASSWORD "$(pg_bindir)/psql" -h 127.0.0.1 -p "$PG_PORT" -U "$PG_USER" -d "$PG_DB" -qAtX \
            -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" && n=$((n + 1))
    done
    say "sweep: $n test databases left by earlier runs dropped"
    local api=http://127.0.0.1:$MGMT_PORT/api
    if ! curl -sf -u "$AMQP_USER:$AMQP_PASSWORD" "$api/overview" >/dev/null 2>&1; then
        say "sweep: no management API on $MGMT_PORT; test queues left as they are"
        return 0
    fi
    for kind in queues exchanges; do
        n=0
        for name in $(curl -sf -u "$AMQP_USER:$AMQP_PASSWORD" "$api/$kind/%2f?columns=name" |
                grep -o '"name":"test-[^"]*"' | cut -d'"' -f4); do
            curl -sf -u "$AMQP_USER:$AMQP_PASSWORD" -X DELETE "$api/$kind/%2f/$name" >/dev/null && n=$((n + 1))
        done
        say "sweep: $n test $kind left by earlier runs deleted"
    done
}

main() {
    local cmd=${1:-up}
    case $cmd in
        up)
            lock
            ensure_installed
            pg_up
            rmq_up
            say "up; for the worker and tests: eval \"\$(scripts/services.sh env)\""
            ;;
        down)
            lock
            rmq_down
            pg_down
            ;;
        status)
            local rc=0
            pg_status || rc=1
            rmq_status || rc=1
            return "$rc"
            ;;
        env) print_env ;;
        sweep)
            lock
            sweep
            ;;
        tools)
            lock
            ensure_tools
            ;;
        -h|--help|help) sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (up, down, status, env, tools, sweep)" ;;
    esac
}

# Sourcing this file (for testing its functions) defines them without running anything.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
