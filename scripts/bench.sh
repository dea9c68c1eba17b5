#!/usr/bin/env bash
# The benchmark of issue 6, in one go, on this machine (broker, database and worker share it):
#
#   a. the bare ceiling: `onboard bench-ceiling` pre-publishes N messages to a quorum queue and
#      consumes them with prefetch 200 and 16 handlers in flight, one PostgreSQL transaction of
#      four inserts per message, then ack. Two diagnostic variants show what a shared counter
#      row (client codes) and a NOTIFY (the outbox trigger) cost per transaction.
#   b. the worker (release build) under `onboard load`: the full onboarding saga of N
#      Singaporean clients (no Xendit; welcome emails written to files), on a fresh database.
#   c. their ratio against the 40% target; `client.created` p99 at half the saga's rate; the
#      worker's peak RSS with 1,000 commands in flight; the saga's throughput with the clients
#      table pre-filled with 10k and with 100k rows.
#
# For every phase it samples the CPU used by postgres, beam.smp (RabbitMQ), the worker and the
# load publisher (from /proc), and what the rest of the machine used meanwhile.
#
#   scripts/bench.sh                      everything, N = 20000 (about 10 minutes on 2 cores)
#   BENCH_COUNT=5000 scripts/bench.sh     a quicker run
#   BENCH_PHASES="ceiling saga" ...       only some phases (ceiling saga created rss rows)
#
# Results: .local/bench/<timestamp>/ (summary.md, each phase's JSON, the worker logs).
# Needs: scripts/services.sh (PostgreSQL and RabbitMQ on 127.0.0.1), psql, curl, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

N=${BENCH_COUNT:-20000}
PHASES=${BENCH_PHASES:-ceiling saga created rss rows}
ROWS_COUNT=${BENCH_ROWS_COUNT:-$((N / 2))}
HTTP_PORT=${BENCH_HTTP_PORT:-18086}
SERVICES=${ONBOARD_SERVICES_SCRIPT:-scripts/services.sh}

"$SERVICES" up >&2
eval "$("$SERVICES" env)"
ADMIN_URL=$ONBOARD_TEST_DATABASE_URL

echo "==> building onboard (release)" >&2
cargo build --release --locked --quiet
BIN=target/release/onboard

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=.local/bench/$STAMP
mkdir -p "$OUT"
RUN=$(date +%s)
SUMMARY=$OUT/summary.md
HZ=$(getconf CLK_TCK)

export ONBOARD__LOG__FILTER=${ONBOARD__LOG__FILTER:-warn,onboard=warn}
export ONBOARD__HTTP__PORT=$HTTP_PORT

WORKER=""
cleanup() {
    if [[ -n $WORKER ]]; then kill -TERM "$WORKER" 2>/dev/null || true; wait "$WORKER" 2>/dev/null || true; fi
}
trap cleanup EXIT

say() { printf '==> %s\n' "$*" >&2; }
md() { printf '%s\n' "$*" >>"$SUMMARY"; }

fresh_db() { # name -> exports ONBOARD__DATABASE__URL
    psql "$ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null 2>&1
    export ONBOARD__DATABASE__URL=${ADMIN_URL%/*}/$1
}

# CPU ticks so far: postgres beam.smp worker load busy(all) total(all), from /proc.
snap() {
    local pg=0 beam=0 w=0 l=0 f line comm rest t pid
    for f in /proc/[0-9]*/stat; do
        { read -r line <"$f"; } 2>/dev/null || continue
        pid=${line%% *}
        comm=${line#*(}; comm=${comm%)*}
        rest=${line##*) }
        # shellcheck disable=SC2086 # split the fields on purpose
        set -- $rest
        t=$(( ${12} + ${13} ))
        case $comm in
            postgres) pg=$((pg + t)) ;;
            beam.smp) beam=$((beam + t)) ;;
        esac
        [[ $pid == "${WORKER:-x}" ]] && w=$((w + t))
        [[ $pid == "${LOADER:-x}" ]] && l=$((l + t))
    done
    local _ u n s i io irq sirq st
    read -r _ u n s i io irq sirq st _ </proc/stat
    echo "$pg $beam $w $l $((u + n + s + irq + sirq + st)) $((u + n + s + i + io + irq + sirq + st)) $(date +%s.%N)"
}

# "% of one core" per process group between two snapshots, and the machine's busy share.
cpu_line() {
    local -a x y
    read -r -a x <<<"$1"; read -r -a y <<<"$2"
    awk -v hz="$HZ" \
        -v pg="$((y[0] - x[0]))" -v beam="$((y[1] - x[1]))" -v w="$((y[2] - x[2]))" -v l="$((y[3] - x[3]))" \
        -v busy="$((y[4] - x[4]))" -v total="$((y[5] - x[5]))" -v t0="${x[6]}" -v t1="${y[6]}" \
        'BEGIN {
            secs = t1 - t0; if (secs <= 0) secs = 1;
            ours = pg + beam + w + l; other = busy - ours; if (other < 0) other = 0;
            printf "postgres %.0f%%, beam.smp %.0f%%, '"${LABEL_W:-worker}"' %.0f%%, ", 100 * pg / hz / secs, 100 * beam / hz / secs, 100 * w / hz / secs;
            if ("'"${LABEL_L:-load}"'" != "-") printf "'"${LABEL_L:-load}"' %.0f%%, ", 100 * l / hz / secs;
            printf "rest of the machine %.0f%% (%% of one core; machine busy %.0f%% of %d cores)",
                100 * other / hz / secs, 100 * busy / (total > 0 ? total : 1), '"$(nproc)"';
        }'
}

json_num() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$2" | head -n 1; }

start_worker() { # prefix, log; extra env may be set by the caller
    "$BIN" migrate >/dev/null
    ONBOARD__BROKER__PREFIX=$1 "$BIN" worker >"$2" 2>&1 &
    WORKER=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$HTTP_PORT/readyz" >/dev/null 2>&1 && return 0
        kill -0 "$WORKER" 2>/dev/null || { tail -n 20 "$2" >&2; echo "worker exited" >&2; exit 1; }
        sleep 0.2
    done
    echo "worker not ready" >&2; exit 1
}

stop_worker() {
    [[ -n $WORKER ]] || return 0
    kill -TERM "$WORKER" 2>/dev/null || true
    wait "$WORKER" 2>/dev/null || true
    WORKER=""
}

hwm_kb() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$1/status"; }

# Runs `onboard load` with the given flags against prefix $1, JSON to $2, sampling CPU.
# Sets CPU (the CPU line of the run).
LOADER=""
run_load() {
    local prefix=$1 out=$2; shift 2
    local a b
    ONBOARD__BROKER__PREFIX=$prefix "$BIN" load --json "$@" >"$out" &
    LOADER=$!
    a=$(snap); b=$a
    while kill -0 "$LOADER" 2>/dev/null; do
        sleep 1
        kill -0 "$LOADER" 2>/dev/null && b=$(snap)
    done
    wait "$LOADER" || true
    LOADER=""
    CPU=$(cpu_line "$a" "$b")
}

# Deletes the queues and exchanges of a prefix (management API, when it is on).
drop_prefix() {
    local p=$1 mg=http://127.0.0.1:${ONBOARD_RABBITMQ_MGMT_PORT:-15672}/api
    curl -sf -u guest:guest "$mg/overview" >/dev/null 2>&1 || return 0
    local name
    for name in $(curl -sf -u guest:guest "$mg/queues/%2f?columns=name" | grep -o "\"name\":\"${p}[^\"]*\"" | cut -d'"' -f4); do
        curl -sf -u guest:guest -X DELETE "$mg/queues/%2f/$name" >/dev/null || true
    done
    for name in $(curl -sf -u guest:guest "$mg/exchanges/%2f?columns=name" | grep -o "\"name\":\"${p}[^\"]*\"" | cut -d'"' -f4); do
        curl -sf -u guest:guest -X DELETE "$mg/exchanges/%2f/$name" >/dev/null || true
    done
}

# --- the machine ------------------------------------------------------------------------------
{
    echo "# onboard benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
    echo "- PostgreSQL $(psql "$ADMIN_URL" -AtX -c 'SHOW server_version') (synchronous_commit=$(psql "$ADMIN_URL" -AtX -c 'SHOW synchronous_commit'), shared_buffers=$(psql "$ADMIN_URL" -AtX -c 'SHOW shared_buffers')), RabbitMQ $(curl -sf -u guest:guest "http://127.0.0.1:${ONBOARD_RABBITMQ_MGMT_PORT:-15672}/api/overview" | sed -n 's/.*"rabbitmq_version":"\([^"]*\)".*/\1/p' || echo '?'), all on this machine"
    echo "- onboard $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)'), release build; N = $N"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$SUMMARY"

CEILING="" SAGA="" HALF=""

# --- a. the bare ceiling ----------------------------------------------------------------------
if [[ " $PHASES " == *" ceiling "* ]]; then
    say "a. bare ceiling: $N messages"
    fresh_db onboard_bench_ceiling
    export ONBOARD__BROKER__PREFIX=bench-$RUN
    "$BIN" bench-ceiling -n "$N" --json >"$OUT/ceiling.json" &
    WORKER=$!
    a=$(snap); b=$a
    while kill -0 "$WORKER" 2>/dev/null; do sleep 1; kill -0 "$WORKER" 2>/dev/null && b=$(snap); done
    wait "$WORKER"
    WORKER=""
    CEILING=$(json_num messages_per_sec "$OUT/ceiling.json")
    md "## a. Bare ceiling"
    md ""
    md "Quorum queue, prefetch 200, 16 in flight, one transaction of four inserts per message, ack."
    md ""
    md "- **$(printf '%.0f' "$CEILING") messages/s** ($N messages)"
    md "- CPU: $(LABEL_W=bench-ceiling LABEL_L=- cpu_line "$a" "$b")"
    say "   $(printf '%.0f' "$CEILING") messages/s"
    # What the saga's first step adds to that loop, one thing at a time.
    for variant in --counter --notify; do
        "$BIN" bench-ceiling -n "$((N / 4))" --json $variant >"$OUT/ceiling$variant.json"
        v=$(json_num messages_per_sec "$OUT/ceiling$variant.json")
        case $variant in
            --counter) md "- the same loop, each transaction first bumping one shared counter row (as client codes do): $(printf '%.0f' "$v") messages/s" ;;
            --notify) md "- the same loop with a NOTIFY in each transaction (as the outbox trigger does): $(printf '%.0f' "$v") messages/s" ;;
        esac
        say "   $variant: $(printf '%.0f' "$v") messages/s"
    done
    md ""
    unset ONBOARD__BROKER__PREFIX
fi

# --- b. the full saga ---------------------------------------------------------------------------
if [[ " $PHASES " == *" saga "* ]]; then
    say "b. worker: full onboarding saga of $N Singaporean clients"
    fresh_db onboard_bench
    export ONBOARD__EMAIL__FILE_DIR=$OUT/mail
    start_worker "bench-$RUN-saga" "$OUT/worker-saga.log"
    run_load "bench-$RUN-saga" "$OUT/saga.json" -n "$N" --countries SG --outcome completed --timeout 120
    SAGA=$(json_num throughput_per_sec "$OUT/saga.json")
    md "## b. Full onboarding saga, $N Singaporean clients"
    md ""
    md "Worker defaults (prefetch $(grep -m1 '^prefetch' config/default.toml | tr -dc 0-9), concurrency $(grep -m1 '^concurrency' config/default.toml | tr -dc 0-9), $(grep -m1 '^max_connections' config/default.toml | tr -dc 0-9) database connections); \`onboard load\` publishes as fast as the broker confirms and waits for each \`client.onboarding_completed\`."
    md ""
    md "- **$(printf '%.0f' "$SAGA") onboardings/s** ($(json_num elapsed_seconds "$OUT/saga.json") s for $(json_num published "$OUT/saga.json") commands, $(json_num missing_count "$OUT/saga.json") without an outcome)"
    md "- latency publish -> completed (ms; the whole backlog is queued at once): p50 $(json_num p50_ms "$OUT/saga.json"), p95 $(json_num p95_ms "$OUT/saga.json"), p99 $(json_num p99_ms "$OUT/saga.json"), max $(json_num max_ms "$OUT/saga.json")"
    md "- CPU: $CPU"
    md "- worker peak RSS: $(( $(hwm_kb "$WORKER") / 1024 )) MB"
    # What one onboarding costs the database (the fresh database saw nothing else).
    read -r commits inserted updated < <(psql "$ADMIN_URL" -AtX -F ' ' -c "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database WHERE datname = 'onboard_bench'")
    md "- per onboarding, in PostgreSQL: $(awk -v c="$commits" -v n="$N" 'BEGIN { printf "%.1f", c / n }') transactions (read-only statements count as one each), $(awk -v c="$inserted" -v n="$N" 'BEGIN { printf "%.1f", c / n }') rows inserted, $(awk -v c="$updated" -v n="$N" 'BEGIN { printf "%.1f", c / n }') rows updated (the ceiling: 1, 4, 0)"
    say "   $(printf '%.0f' "$SAGA") onboardings/s"

    # c. at half that rate, how fast is client.created?
    if [[ " $PHASES " == *" created "* ]]; then
        HALF=$(awk -v s="$SAGA" 'BEGIN { printf "%d", s / 2 }')
        (( HALF > 0 )) || HALF=1
        HALF_N=$(( HALF * 20 ))
        say "c. client.created at half that rate: $HALF/s for 20 s"
        run_load "bench-$RUN-saga" "$OUT/created-half-rate.json" -n "$HALF_N" --rate "$HALF" --countries SG --outcome created --timeout 120
        md ""
        md "## c. \`client.created\` latency at half the saga's rate ($HALF commands/s for 20 s, the saga running behind it)"
        md ""
        md "- p50 $(json_num p50_ms "$OUT/created-half-rate.json") ms, p95 $(json_num p95_ms "$OUT/created-half-rate.json") ms, **p99 $(json_num p99_ms "$OUT/created-half-rate.json") ms** (target at most 50 ms), max $(json_num max_ms "$OUT/created-half-rate.json") ms"
        md "- CPU: $CPU"
        say "   p99 $(json_num p99_ms "$OUT/created-half-rate.json") ms"
    fi
    stop_worker
    drop_prefix "bench-$RUN-saga"
    md ""
fi

# --- c. worker RSS with 1,000 commands in flight ---------------------------------------------------
if [[ " $PHASES " == *" rss "* ]]; then
    say "c. worker RSS with 1,000 commands in flight"
    fresh_db onboard_bench_rss
    export ONBOARD__EMAIL__FILE_DIR=$OUT/mail-rss
    ONBOARD__BROKER__PREFETCH=1000 ONBOARD__WORKER__CONCURRENCY=1000 start_worker "bench-$RUN-rss" "$OUT/worker-rss.log"
    idle=$(hwm_kb "$WORKER")
    run_load "bench-$RUN-rss" "$OUT/rss.json" -n "$N" --countries SG --max-outstanding 1000 --timeout 120
    peak=$(hwm_kb "$WORKER")
    stop_worker
    drop_prefix "bench-$RUN-rss"
    md "## c. Worker memory with 1,000 commands in flight"
    md ""
    md "Prefetch 1000 and concurrency 1000; \`onboard load --max-outstanding 1000\` keeps 1,000 commands open for $N commands."
    md ""
    md "- **peak RSS (VmHWM) $((peak / 1024)) MB** (target at most 150 MB); $((idle / 1024)) MB after start"
    md "- throughput meanwhile $(printf '%.0f' "$(json_num throughput_per_sec "$OUT/rss.json")") onboardings/s, $(json_num missing_count "$OUT/rss.json") without an outcome"
    md ""
    say "   peak RSS $((peak / 1024)) MB"
fi

# --- c. 10k vs 100k rows in clients -----------------------------------------------------------------
if [[ " $PHASES " == *" rows "* ]]; then
    md "## c. Throughput with the clients table pre-filled"
    md ""
    md "$ROWS_COUNT onboardings (SG) on a fresh database whose clients (and users) tables already hold the rows."
    md ""
    declare -A ROWS_RATE
    for rows in 10000 100000; do
        say "c. $ROWS_COUNT onboardings over $rows existing clients"
        fresh_db onboard_bench_rows
        "$BIN" migrate >/dev/null
        psql "$ONBOARD__DATABASE__URL" -qX -v ON_ERROR_STOP=1 <<SQL
INSERT INTO clients (client_code, email, client_alias, client_type, country_code, psp_id, phone)
SELECT 'PF-' || lpad(g::text, 9, '0'), 'prefill-' || g || '@prefill.example', 'Prefill ' || g,
       'CORPORATE', 'SG', 2, '+65' || lpad(g::text, 8, '0')
FROM generate_series(1, $rows) g;
INSERT INTO users (client_id, username, email, phone)
SELECT client_id, client_alias, email, phone FROM clients;
VACUUM ANALYZE clients; VACUUM ANALYZE users;
SQL
        export ONBOARD__EMAIL__FILE_DIR=$OUT/mail-rows-$rows
        start_worker "bench-$RUN-rows$rows" "$OUT/worker-rows-$rows.log"
        run_load "bench-$RUN-rows$rows" "$OUT/rows-$rows.json" -n "$ROWS_COUNT" --countries SG --timeout 120
        stop_worker
        drop_prefix "bench-$RUN-rows$rows"
        ROWS_RATE[$rows]=$(json_num throughput_per_sec "$OUT/rows-$rows.json")
        md "- $rows rows: **$(printf '%.0f' "${ROWS_RATE[$rows]}") onboardings/s**, p99 $(json_num p99_ms "$OUT/rows-$rows.json") ms; CPU: $CPU"
        say "   $(printf '%.0f' "${ROWS_RATE[$rows]}") onboardings/s"
    done
    md "- difference: $(awk -v a="${ROWS_RATE[10000]}" -v b="${ROWS_RATE[100000]}" 'BEGIN { printf "%+.1f%%", 100 * (b - a) / a }') at 100k against 10k (target: within 10%)"
    md ""
fi

# --- the ratio ----------------------------------------------------------------------------------
if [[ -n $CEILING && -n $SAGA ]]; then
    md "## Saga against the ceiling"
    md ""
    md "- $(printf '%.0f' "$SAGA") / $(printf '%.0f' "$CEILING") = **$(awk -v s="$SAGA" -v c="$CEILING" 'BEGIN { printf "%.1f%%", 100 * s / c }')** of the bare ceiling (target at least 40%, i.e. $(awk -v c="$CEILING" 'BEGIN { printf "%.0f", 0.4 * c }') onboardings/s here)"
    md ""
fi
md "Raw results: \`$OUT/\`."
# The welcome emails (one .eml per onboarding) are not needed once counted.
rm -rf "$OUT"/mail*

echo
cat "$SUMMARY"
