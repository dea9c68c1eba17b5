#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, from the same Debian package as services.sh, for
# trying the worker past one machine (and for the tests that stop nodes under a load).
#
#   scripts/cluster.sh [up]    install when missing, start the three nodes (or reuse running
#                              ones) and join nodes 2 and 3 to node 1
#   scripts/cluster.sh down    stop the three nodes and delete the cluster's data
#   scripts/cluster.sh stop N  stop node N (1-3); first waits (up to 120 s) until no quorum
#                              queue needs it for its majority, as a rolling restart would
#   scripts/cluster.sh start N start node N again; returns once it is back in the cluster
#   scripts/cluster.sh status  each node, and the cluster as node 1 (or another) sees it
#   scripts/cluster.sh env     export lines for a worker on the cluster:
#                              eval "$(scripts/cluster.sh env)"
#
# Node N is onboard-cN-<base>@localhost, AMQP on 127.0.0.1:<base + N - 1> (base:
# ONBOARD_CLUSTER_PORT, 5701), distribution on that port + 20000, no management plugin. Data
# and logs: ONBOARD_CLUSTER_DIR (<repo>/.local/cluster), one directory per node. The nodes
# share the Erlang cookie of services.sh's node, so `rabbitmqctl -n NODE` works as there.
# Everything else (installing, running as the rabbitmq user when root, waiting for a node) is
# services.sh's own code: this script sources it.
set -euo pipefail

# shellcheck source=scripts/services.sh
source "$(dirname "${BASH_SOURCE[0]}")/services.sh"

BASE=${ONBOARD_CLUSTER_PORT:-5701}
CLUSTER_DIR=$(realpath -m "${ONBOARD_CLUSTER_DIR:-$LOCAL/cluster}")
NODES=(1 2 3)

cluster_say() { printf '[cluster] %s\n' "$*"; }

# Point services.sh's RabbitMQ variables at node N.
node_env() {
    local n=$1
    [[ $n =~ ^[123]$ ]] || die "no node '$n' (1, 2 or 3)"
    AMQP_PORT=$((BASE + n - 1))
    MGMT=0
    MGMT_PORT=$((BASE + n - 1 + 10000))
    RMQ_DIR="$CLUSTER_DIR/n$n"
    RMQ_PID="$RMQ_DIR/rabbitmq.pid"
    RMQ_STARTUP_LOG="$RMQ_DIR/log/startup.log"
    RMQ_NODE="onboard-c$n-$BASE@localhost"
    RMQ_LOG="$RMQ_DIR/log/$RMQ_NODE.log"
}

node_name() { printf 'onboard-c%s-%s@localhost\n' "$1" "$BASE"; }

ctl() { # N rabbitmqctl-args...
    local n=$1; shift
    node_env "$n"
    rmq rabbitmqctl -n "$RMQ_NODE" -q "$@"
}

# Start node N (its config rewritten, as services.sh does) unless it runs already.
node_start() {
    local n=$1
    node_env "$n"
    if rmq_started_here && amqp_login_ok; then
        cluster_say "node $n: already running ($RMQ_NODE, 127.0.0.1:$AMQP_PORT)"
        return
    fi
    port_open "$AMQP_PORT" && die "port $AMQP_PORT (node $n) is taken; set ONBOARD_CLUSTER_PORT"
    port_open $((AMQP_PORT + 20000)) && die "distribution port $((AMQP_PORT + 20000)) (node $n) is taken; set ONBOARD_CLUSTER_PORT"
    rmq_write_config
    rmq_start
}

# Join node N to node 1 once (a joined node remembers its cluster across restarts).
node_join() {
    local n=$1
    node_env "$n"
    [[ -f $RMQ_DIR/joined ]] && return
    cluster_say "node $n: joining $(node_name 1)"
    ctl "$n" stop_app >/dev/null
    ctl "$n" join_cluster "$(node_name 1)" >/dev/null
    ctl "$n" start_app >/dev/null
    node_env "$n"
    : >"$RMQ_DIR/joined"
}

# True when stopping node N now would leave some quorum queue without a majority.
quorum_critical() {
    node_env "$1"
    ! rmq rabbitmq-queues -n "$RMQ_NODE" -q check_if_node_is_quorum_critical >/dev/null 2>&1
}

cluster_up() {
    lock
    ensure_installed
    install -d "$CLUSTER_DIR"
    RMQ_DIR=$CLUSTER_DIR
    RMQ_HOME=$(rmq_home)
    # Node 1's files first: that also creates the shared Erlang cookie if missing, which three
    # nodes booting at once would race to do.
    node_env 1
    rmq_write_config
    # The three boot at once: a node restarted after the others stopped waits for them.
    local pids=() n failed=0
    for n in "${NODES[@]}"; do
        (node_start "$n") &
        pids+=("$!")
    done
    for n in "${!pids[@]}"; do wait "${pids[$n]}" || failed=1; done
    (( failed == 0 )) || die "a node did not start (logs under $CLUSTER_DIR/n*/log)"
    node_env 1
    : >"$RMQ_DIR/joined"
    node_join 2
    node_join 3
    cluster_say "up: $(ctl 1 eval 'length(rabbit_nodes:all_running()).' 2>/dev/null || echo '?') nodes running; for a worker: eval \"\$(scripts/cluster.sh env)\""
}

cluster_down() {
    lock
    [[ -d $CLUSTER_DIR ]] || { cluster_say "no cluster in $CLUSTER_DIR"; return; }
    RMQ_DIR=$CLUSTER_DIR
    RMQ_HOME=$(rmq_home)
    local n
    for n in "${NODES[@]}"; do
        node_env "$n"
        if rmq_started_here; then rmq_stop_here; fi
    done
    rm -rf "$CLUSTER_DIR"
    cluster_say "down; data deleted"
}

cluster_stop_node() {
    local n=$1 deadline=$((SECONDS + 120))
    lock
    RMQ_DIR=$CLUSTER_DIR
    RMQ_HOME=$(rmq_home)
    node_env "$n"
    rmq_started_here || { cluster_say "node $n is not running"; return; }
    while quorum_critical "$n"; do
        (( SECONDS < deadline )) || die "node $n is still needed for some quorum queue's majority after 120 s"
        sleep 1
    done
    node_env "$n"
    rmq_stop_here
}

cluster_start_node() {
    local n=$1
    lock
    RMQ_DIR=$CLUSTER_DIR
    RMQ_HOME=$(rmq_home)
    node_start "$n"
    ctl "$n" await_startup --timeout 60 >/dev/null
    cluster_say "node $n: back in the cluster"
}

cluster_status() {
    RMQ_DIR=$CLUSTER_DIR
    RMQ_HOME=$(rmq_home)
    local n running=
    for n in "${NODES[@]}"; do
        node_env "$n"
        if rmq_started_here && amqp_login_ok; then
            cluster_say "node $n: up, $RMQ_NODE on 127.0.0.1:$AMQP_PORT"
            running=${running:-$n}
        else
            cluster_say "node $n: down ($RMQ_NODE, 127.0.0.1:$AMQP_PORT)"
        fi
    done
    [[ -n $running ]] || return 1
    cluster_say "running, as node $running sees it: $(ctl "$running" eval 'rabbit_nodes:all_running().')"
}

print_cluster_env() {
    local n urls=()
    for n in "${NODES[@]}"; do
        urls+=("amqp://$AMQP_USER:$AMQP_PASSWORD@127.0.0.1:$((BASE + n - 1))/%2f")
    done
    local IFS=,
    printf 'export %s\n' "ONBOARD__BROKER__URLS=${urls[*]}" "ONBOARD__BROKER__REPLICATED_QUEUES=true"
}

cluster_main() {
    local cmd=${1:-up}
    case $cmd in
        up) cluster_up ;;
        down) cluster_down ;;
        stop) [[ -n ${2:-} ]] || die "stop which node? (1, 2 or 3)"; cluster_stop_node "$2" ;;
        start) [[ -n ${2:-} ]] || die "start which node? (1, 2 or 3)"; cluster_start_node "$2" ;;
        status) cluster_status ;;
        env) print_cluster_env ;;
        -h|--help|help) sed -n '2,/^set /{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
        *) die "unknown command '$cmd' (up, down, stop N, start N, status, env)" ;;
    esac
}

cluster_main "$@"
