#!/usr/bin/env bash
# The benchmark, in one go, on this machine (broker, database and worker share it):
#
#   a. the ceilings: `onboard-lab bench-ceiling` pre-publishes N messages to a quorum queue and
#      consumes them with prefetch 200 and 16 handlers in flight, one PostgreSQL transaction of
#      four inserts per message, then ack (the bare per-message ceiling); then the batched
#      ceiling: the same four inserts for 128 messages per transaction as four multi-row
#      statements, and the same with one shared counter row bumped per batch (client codes).
#   b. the worker (release build) under `onboard-lab load`: the full onboarding saga of N
#      Singaporean clients (no Xendit; welcome emails written to files), on a fresh database,
#      with the load publisher publishing alongside; then the same from a full queue, as the
#      ceiling is measured (load --prefill: the commands queued first, the clock started when
#      the worker attaches), and that one's ratio to the per-message ceiling; transactions and
#      queue deliveries per onboarding.
#   c. the mixed saga: N clients over all six seeded countries (a sixth are Indonesian, with
#      two Xendit customers each at the local fake, answering after BENCH_XENDIT_LATENCY_MS,
#      0 by default); its ratio.
#   d. `client.created` latency at 80% of the saga's rate; the worker's peak RSS with 10,000
#      commands in flight; the saga's throughput with the clients table pre-filled with 10k
#      and with 1M rows.
#   e. the client profile's migrations (0007-0014) on a database of the schema before them
#      holding 1M clients, while pgbench keeps writing to clients: how long they take and the
#      longest a write waited meanwhile.
#
# For every phase it samples the CPU used by postgres, beam.smp (RabbitMQ), the worker and the
# load publisher (from /proc), and what the rest of the machine used meanwhile.
#
#   scripts/bench.sh                      everything, N = 20000 (about 12 minutes on 2 cores)
#   BENCH_COUNT=5000 scripts/bench.sh     a quicker run
#   BENCH_PHASES="ceiling saga" ...       only some phases (ceiling saga traced mixed created rss
#                                         rows migrate cluster webhooks; and profile, not run by
#                                         default: perf, pg_stat_statements, RabbitMQ's counters)
#
# Results: .local/bench/<timestamp>/ (summary.md, each phase's JSON and its plot as SVG:
# throughput over time and the latency distribution, the worker logs).
# Needs: scripts/services.sh (PostgreSQL and RabbitMQ on 127.0.0.1), psql, curl, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

N=${BENCH_COUNT:-20000}
PHASES=${BENCH_PHASES:-ceiling saga traced mixed created rss rows migrate cluster webhooks}
BIG_ROWS=${BENCH_BIG_ROWS:-1000000}
XENDIT_PORT=${BENCH_XENDIT_PORT:-18099}
# How long the fake Xendit takes to answer in the mixed phase (BENCH_XENDIT_LATENCY_MS).
XENDIT_LATENCY_MS=${BENCH_XENDIT_LATENCY_MS:-0}
OTLP_PORT=${BENCH_OTLP_PORT:-18318}
ROWS_COUNT=${BENCH_ROWS_COUNT:-$((N / 2))}
HTTP_PORT=${BENCH_HTTP_PORT:-18086}
SERVICES=${ONBOARD_SERVICES_SCRIPT:-scripts/services.sh}

"$SERVICES" up >&2
# What earlier test runs left is measured otherwise: autovacuum visits their databases and
# RabbitMQ ticks their idle quorum queues while the benchmark runs.
"$SERVICES" sweep >&2
eval "$("$SERVICES" env)"
ADMIN_URL=$ONBOARD_TEST_DATABASE_URL

# BENCH_BIN and BENCH_LAB run binaries built elsewhere (an A/B of two builds) instead.
if [[ -z ${BENCH_BIN:-} ]]; then
    echo "==> building onboard (release)" >&2
    cargo build --release --locked --quiet
fi
BIN=${BENCH_BIN:-target/release/onboard}
LAB=${BENCH_LAB:-target/release/onboard-lab}   # load, bench-ceiling, fake-xendit, webhooks bench
# Extra flags for every `onboard-lab load` (e.g. --every-event).
LOAD_FLAGS=${BENCH_LOAD_FLAGS:-}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=.local/bench/$STAMP
# The welcome emails (one .eml file per onboarding, SMTP's stand-in) go to memory when it can:
# on a disk that has seen many files made and deleted (every run, every test suite), creating
# one costs the kernel an inode search that grew to most of the worker's CPU (perf: ext4's
# recently_deleted / find_inode_bit) and measured the filesystem, not the worker.
if [[ -d /dev/shm && -w /dev/shm ]]; then MAIL=/dev/shm/onboard-bench-$STAMP; else MAIL=$OUT; fi
mkdir -p "$OUT"
RUN=$(date +%s)
SUMMARY=$OUT/summary.md
HZ=$(getconf CLK_TCK)

export ONBOARD__LOG__FILTER=${ONBOARD__LOG__FILTER:-warn,onboard=warn}
export ONBOARD__HTTP__PORT=$HTTP_PORT

WORKER=""
FAKE=""
RECEIVER=""
CLUSTER=""
cleanup() {
    if [[ -n $WORKER ]]; then kill -TERM "$WORKER" 2>/dev/null || true; wait "$WORKER" 2>/dev/null || true; fi
    if [[ -n $FAKE ]]; then kill -TERM "$FAKE" 2>/dev/null || true; wait "$FAKE" 2>/dev/null || true; fi
    if [[ -n $RECEIVER ]]; then kill -TERM "$RECEIVER" 2>/dev/null || true; wait "$RECEIVER" 2>/dev/null || true; fi
    if [[ -n $CLUSTER ]]; then scripts/cluster.sh down >&2 || true; fi
    if [[ $MAIL == /dev/shm/* ]]; then rm -rf "$MAIL"; fi
    # Every queue and exchange this run declared, the ceiling's included, and a phase's that an
    # interruption left: kept, they pile up over runs in the broker the next runs measure
    # (the unrouted events of one interrupted saga phase are tens of thousands of messages).
    if declare -F drop_prefix >/dev/null; then drop_prefix "bench-$RUN"; fi
}
trap cleanup EXIT

say() { printf '==> %s\n' "$*" >&2; }
md() { printf '%s\n' "$*" >>"$SUMMARY"; }

fresh_db() { # name [template] -> exports ONBOARD__DATABASE__URL
    local try err
    for try in $(seq 1 20); do
        # Another session on it or on the template (an autovacuum worker): say why, try again.
        if err=$(psql "$ADMIN_URL" -qX -v ON_ERROR_STOP=1 -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" \
                -c "CREATE DATABASE $1${2:+ TEMPLATE $2}" 2>&1 >/dev/null); then
            export ONBOARD__DATABASE__URL=${ADMIN_URL%/*}/$1
            return 0
        fi
        echo "fresh_db $1 (try $try): $err" >&2
        sleep 1
    done
    return 1
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

# Fills a migrated database's clients (and users) with N rows of the seed's columns only, so it
# works on the schema before the profile too.
prefill() { # url rows
    psql "$1" -qX -v ON_ERROR_STOP=1 <<SQL
INSERT INTO clients (client_code, email, client_alias, client_type, country_code, psp_id, phone)
SELECT 'PF-' || lpad(g::text, 9, '0'), 'prefill-' || g || '@prefill.example', 'Prefill ' || g,
       'CORPORATE', 'SG', 2, '+65' || lpad(g::text, 8, '0')
FROM generate_series(1, $2) g;
INSERT INTO users (client_id, username, email, phone)
SELECT client_id, client_alias, email, phone FROM clients;
VACUUM ANALYZE clients; VACUUM ANALYZE users;
SQL
}

json_num() { sed -n "s/.*\"$1\": *\([0-9.e+-]*\).*/\1/p" "$2" | head -n 1; }

# Busy and total jiffies of all CPUs so far (user nice system irq softirq steal; and idle iowait).
cpu_now() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat; }

# Waits (up to 30 s) until the machine is quiet: under 10% busy over half a second. What a phase
# leaves behind (autovacuum of its tables, the broker deleting its queues, the prefill's last
# writes) otherwise runs inside the next measurement, and a ceiling measured on a quiet machine
# would be held against a saga that was not. Says how long it waited.
settle() {
    local t0 b0 n0 b1 n1 waited
    t0=$(date +%s.%N)
    for _ in $(seq 1 60); do
        read -r b0 n0 <<<"$(cpu_now)"
        sleep 0.5
        read -r b1 n1 <<<"$(cpu_now)"
        (( n1 > n0 && (b1 - b0) * 10 < n1 - n0 )) && break
    done
    waited=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    say "   (machine quiet after ${waited} s)"
}

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

# Starts `onboard-lab load` with the given flags against prefix $1, JSON to $2, in the
# background (LOADER).
LOADER=""
start_load() {
    local prefix=$1 out=$2; shift 2
    # shellcheck disable=SC2086 # LOAD_FLAGS is a list of flags
    ONBOARD__BROKER__PREFIX=$prefix "$LAB" load --json --plot "${out%.json}.svg" $LOAD_FLAGS "$@" >"$out" 2>>"$OUT/load.log" &
    LOADER=$!
}

# Waits for the load, sampling CPU from the snapshot $1 (one taken now when not given), and
# sets CPU (the CPU line of the run).
await_load() {
    local a=${1:-} b
    [[ -n $a ]] || a=$(snap)
    b=$a
    # The last snapshot is taken once the load is gone, so its CPU lacks the load's own: the
    # load's figure is the last one read while it was still there after the reading (a
    # snapshot taken as it exits may miss it, and the first one has it when it was started
    # before: a prefilling load's; the line would show its share negative).
    local s l
    l=$(cut -d' ' -f4 <<<"$a")
    while kill -0 "$LOADER" 2>/dev/null; do
        sleep 0.5
        s=$(snap)
        kill -0 "$LOADER" 2>/dev/null && l=$(cut -d' ' -f4 <<<"$s")
    done
    wait "$LOADER" || true
    LOADER=""
    read -r -a s <<<"$(snap)"
    s[3]=$l
    b="${s[*]}"
    CPU=$(cpu_line "$a" "$b")
}

# Runs `onboard-lab load` with the given flags against prefix $1, JSON to $2, sampling CPU.
run_load() {
    start_load "$@"
    await_load
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
    echo "- onboard $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)'), release build${BENCH_BIN:+ $BENCH_BIN}; N = $N${LOAD_FLAGS:+; load flags: $LOAD_FLAGS}"
    echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} >"$SUMMARY"

CEILING="" CEILING_AGAIN="" SAGA="" STREAMED="" MIXED="" BATCHED=""

# Runs `onboard-lab bench-ceiling` with the given flags, JSON to $1; sets RATE_OUT (messages/s)
# and CEILING_CPU (the CPU line of the run).
run_ceiling() {
    local out=$1 a b; shift
    "$LAB" bench-ceiling -n "$N" --json "$@" >"$out" &
    WORKER=$!
    a=$(snap); b=$a
    # A snapshot counts only when the process was still there after it was taken: its
    # PostgreSQL sessions end with it, and their CPU with them, so the last snapshot is one
    # taken while it ran (one taken as it exited may lack its own CPU or its sessions').
    local s
    while kill -0 "$WORKER" 2>/dev/null; do
        sleep 0.25
        s=$(snap)
        kill -0 "$WORKER" 2>/dev/null && b=$s
    done
    wait "$WORKER"
    WORKER=""
    CEILING_CPU=$(LABEL_W=bench-ceiling LABEL_L=- cpu_line "$a" "$b")
    RATE_OUT=$(json_num messages_per_sec "$out")
}

# --- a. the ceilings -----------------------------------------------------------------------------
if [[ " $PHASES " == *" ceiling "* ]]; then
    say "a. bare ceiling: $N messages"
    settle
    fresh_db onboard_bench_ceiling
    export ONBOARD__BROKER__PREFIX=bench-$RUN
    run_ceiling "$OUT/ceiling.json"
    CEILING=$RATE_OUT
    md "## a. Ceilings"
    md ""
    md "Quorum queue, one transaction of four inserts (inbox, client, user, outbox) per message, ack."
    md ""
    md "- bare, per message (prefetch 200, 16 in flight): **$(printf '%.0f' "$CEILING") messages/s** ($N messages)"
    md "  - CPU: $CEILING_CPU"
    say "   $(printf '%.0f' "$CEILING") messages/s"
    for variant in "" --counter; do
        run_ceiling "$OUT/ceiling-batched$variant.json" --batch 128 --prefetch 512 --in-flight 2 $variant
        v=$RATE_OUT
        case $variant in
            "") BATCHED=$v; md "- batched, 128 per transaction as four multi-row statements (prefetch 512, 2 batches in flight): **$(printf '%.0f' "$v") messages/s**" ;;
            --counter) md "- batched as above, with one shared counter row bumped per batch (as client codes are): **$(printf '%.0f' "$v") messages/s**" ;;
        esac
        md "  - CPU: $CEILING_CPU"
        say "   batched$variant: $(printf '%.0f' "$v") messages/s"
    done
    md ""
    unset ONBOARD__BROKER__PREFIX
fi

# Deliveries the running worker took from the commands queue so far (its own counter), for
# queue hops.
delivered() {
    curl -sf "http://127.0.0.1:$HTTP_PORT/metrics" |
        awk '/^onboard_messages_received_total[{]/ { s += $2 } END { printf "%d", s }'
}

# Per-onboarding cost in PostgreSQL and in queue deliveries, for the summary.
cost_line() { # database n (while its worker still runs)
    local commits inserted updated hops
    read -r commits inserted updated < <(psql "$ADMIN_URL" -AtX -F ' ' -c "SELECT xact_commit, tup_inserted, tup_updated FROM pg_stat_database WHERE datname = '$1'")
    hops=$(delivered)
    printf -- "- per onboarding: %s transactions in PostgreSQL (every statement outside a transaction counts as one; the sweeper, heartbeat and relay included), %s rows inserted, %s rows updated (the ceiling: 1, 4, 0); %s deliveries taken from the commands queue (queue hops; the worker's own count)" \
        "$(awk -v c="$commits" -v n="$2" 'BEGIN { printf "%.2f", c / n }')" \
        "$(awk -v c="$inserted" -v n="$2" 'BEGIN { printf "%.1f", c / n }')" \
        "$(awk -v c="$updated" -v n="$2" 'BEGIN { printf "%.1f", c / n }')" \
        "$(awk -v c="${hops:-0}" -v n="$2" 'BEGIN { printf "%.2f", c / n }')"
}

# --- b. the full saga ---------------------------------------------------------------------------
if [[ " $PHASES " == *" saga "* ]]; then
    say "b. worker: full onboarding saga of $N Singaporean clients"
    fresh_db onboard_bench
    settle
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail
    start_worker "bench-$RUN-saga" "$OUT/worker-saga.log"
    run_load "bench-$RUN-saga" "$OUT/saga.json" -n "$N" --countries SG --outcome completed --timeout 120
    SAGA=$(json_num throughput_per_sec "$OUT/saga.json")
    md "## b. Full onboarding saga, $N Singaporean clients"
    md ""
    md "Worker defaults (prefetch $(grep -m1 '^prefetch' config/default.toml | tr -dc 0-9), concurrency $(grep -m1 '^concurrency' config/default.toml | tr -dc 0-9), $(grep -m1 '^max_connections' config/default.toml | tr -dc 0-9) database connections); \`onboard-lab load\` publishes as fast as the broker confirms and waits for each \`client.onboarding_completed\`."
    md ""
    md "- **$(printf '%.0f' "$SAGA") onboardings/s** ($(json_num elapsed_seconds "$OUT/saga.json") s for $(json_num published "$OUT/saga.json") commands, $(json_num missing_count "$OUT/saga.json") without an outcome)"
    md "- latency publish -> completed (ms; the whole backlog is queued at once): p50 $(json_num p50_ms "$OUT/saga.json"), p95 $(json_num p95_ms "$OUT/saga.json"), p99 $(json_num p99_ms "$OUT/saga.json"), max $(json_num max_ms "$OUT/saga.json")"
    md "- CPU: $CPU"
    md "- worker peak RSS: $(( $(hwm_kb "$WORKER") / 1024 )) MB"
    # What one onboarding costs (the fresh database and queue saw nothing else).
    md "$(cost_line onboard_bench "$N")"
    say "   $(printf '%.0f' "$SAGA") onboardings/s"
    STREAMED=$SAGA

    # b'. The same saga measured as the ceiling is: the whole backlog queued first, the clock
    # started when the worker attaches to the full queue (onboard-lab load --prefill), so what
    # publishing the commands costs (the load publisher and the broker taking them in, on the
    # same two cores) is out of the figure, as it is out of the ceiling's.
    stop_worker
    say "b'. worker: the same saga from a full queue (the ceiling's method)"
    fresh_db onboard_bench
    rm -f "$OUT/full.ready"
    start_load "bench-$RUN-full" "$OUT/saga-full.json" \
        --prefill --ready-file "$OUT/full.ready" -n "$N" --countries SG --outcome completed --timeout 120
    for _ in $(seq 1 1200); do
        [[ -e $OUT/full.ready ]] && break
        kill -0 "$LOADER" 2>/dev/null || break
        sleep 0.1
    done
    [[ -e $OUT/full.ready ]] || { tail -n 20 "$OUT/load.log" >&2; echo "the load never queued its commands" >&2; exit 1; }
    # The fresh database's migrations first, outside the CPU window (start_worker's own
    # migrate then finds nothing to do): their CPU is no onboarding's.
    "$BIN" migrate >/dev/null
    settle
    a=$(snap)
    start_worker "bench-$RUN-full" "$OUT/worker-full.log"
    await_load "$a"
    SAGA=$(json_num throughput_per_sec "$OUT/saga-full.json")
    md ""
    md "From a full queue, as the ceiling is measured (\`onboard-lab load --prefill\`: the $N commands queued first, the clock started when the worker attaches; a fresh database):"
    md ""
    md "- **$(printf '%.0f' "$SAGA") onboardings/s** ($(json_num elapsed_seconds "$OUT/saga-full.json") s for $(json_num published "$OUT/saga-full.json") commands, $(json_num missing_count "$OUT/saga-full.json") without an outcome); with the publisher alongside (above): $(printf '%.0f' "$STREAMED")/s"
    md "- CPU from the worker's start: $CPU"
    F=$OUT/saga-full.json
    md "- outcomes over time (s from the worker's attach): first $(printf '%.2f' "$(json_num first_s "$F")"), 10% $(printf '%.2f' "$(json_num p10_s "$F")"), 50% $(printf '%.2f' "$(json_num p50_s "$F")"), 90% $(printf '%.2f' "$(json_num p90_s "$F")"), 99% $(printf '%.2f' "$(json_num p99_s "$F")"); between 10% and 90%: $(awk -v a="$(json_num p10_s "$F")" -v b="$(json_num p90_s "$F")" -v n="$N" 'BEGIN { if (b > a) printf "%.0f", 0.8 * n / (b - a); else print "n/a" }')/s (the pipeline's fill and drain left out)"
    md "$(cost_line onboard_bench "$N")"
    say "   $(printf '%.0f' "$SAGA") onboardings/s from a full queue"
    stop_worker
    drop_prefix "bench-$RUN-full"
    # The bare ceiling again, right after: the machine's speed drifts (the ceiling measured
    # 2,389 to 4,927 messages/s within an hour on the same VM), and a ratio is only as good
    # as the two figures being taken on the same machine. The issue's ratio stays the one to
    # the ceiling measured first; this one shows how far the machine moved meanwhile.
    if [[ -n $CEILING ]]; then
        say "   bare ceiling again, after the saga"
        saga_db=$ONBOARD__DATABASE__URL
        fresh_db onboard_bench_ceiling
        settle
        ONBOARD__BROKER__PREFIX=bench-$RUN-again run_ceiling "$OUT/ceiling-again.json"
        CEILING_AGAIN=$RATE_OUT
        drop_prefix "bench-$RUN-again"
        export ONBOARD__DATABASE__URL=$saga_db   # the phases below go on with the saga's database
        say "   $(printf '%.0f' "$CEILING_AGAIN") messages/s"
    fi

    # d. at 80% of that rate (and, to show the curve, at 25% and 50%), how fast is
    # client.created?
    if [[ " $PHASES " == *" created "* ]]; then
        start_worker "bench-$RUN-saga" "$OUT/worker-saga.log.2"
        md ""
        md "## d. \`client.created\` latency under a steady load (20 s at each rate, the saga running behind it)"
        md ""
        for pct in 25 50 80; do
            RATE=$(awk -v s="$STREAMED" -v p="$pct" 'BEGIN { printf "%d", s * p / 100 }')
            (( RATE > 0 )) || RATE=1
            say "d. client.created at $pct% of that rate: $RATE/s for 20 s"
            run_load "bench-$RUN-saga" "$OUT/created-$pct-pct.json" -n "$(( RATE * 20 ))" --rate "$RATE" --countries SG --outcome created --timeout 120
            p99=$(json_num p99_ms "$OUT/created-$pct-pct.json")
            # Whether the worker kept up: the rate the creates were answered at (first publish
            # to last outcome) against the rate offered; below it, the latency is a backlog's.
            kept="answered at $(printf '%.0f' "$(json_num throughput_per_sec "$OUT/created-$pct-pct.json")")/s"
            line="- $pct% of the saga's rate ($RATE commands/s, $kept): p50 $(json_num p50_ms "$OUT/created-$pct-pct.json") ms, p95 $(json_num p95_ms "$OUT/created-$pct-pct.json") ms, p99 $p99 ms, max $(json_num max_ms "$OUT/created-$pct-pct.json") ms; $(json_num missing_count "$OUT/created-$pct-pct.json") without an outcome; CPU: $CPU"
            if [[ $pct == 80 ]]; then
                line="- **80% of the saga's rate ($RATE commands/s, $kept): p99 $p99 ms** (goal at most 50 ms), p50 $(json_num p50_ms "$OUT/created-$pct-pct.json") ms, p95 $(json_num p95_ms "$OUT/created-$pct-pct.json") ms, max $(json_num max_ms "$OUT/created-$pct-pct.json") ms; $(json_num missing_count "$OUT/created-$pct-pct.json") without an outcome; CPU: $CPU"
            fi
            md "$line"
            say "   p99 $p99 ms"
        done
    fi
    stop_worker
    drop_prefix "bench-$RUN-saga"
    md ""
fi

# --- p. where an onboarding's cost goes ------------------------------------------------------------
# The saga of b once more, measured from inside (so its own rate is not the figure; b's is):
# the worker's CPU profile (perf, DWARF call graphs, drawn as a flame graph by inferno),
# PostgreSQL's per-statement cost (pg_stat_statements: calls, rows and time per onboarding), and
# RabbitMQ's (socket reads and writes and bytes on the worker's connections, per onboarding).
# Opt-in: BENCH_PHASES="... profile".
# The worker's connections' socket reads, writes and bytes, one line per connection ("name
# recv_cnt send_cnt recv_oct send_oct"), read live from the node (the management API's figures
# are sampled, and its message rates are off here). Needs rabbitmqctl's rights (root).
rabbit_connections() {
    timeout 30 rabbitmqctl -n "${ONBOARD_RABBITMQ_NODE:-onboard@localhost}" list_connections -q --no-table-headers \
        name recv_cnt send_cnt recv_oct send_oct 2>/dev/null | sed 's/ -> /->/' || true
}
if [[ " $PHASES " == *" profile "* ]]; then
    say "p. where an onboarding's cost goes: the saga of $N SG clients profiled"
    # Made from scripts/services.sh's template, which has pg_stat_statements.
    fresh_db onboard_bench_profile onboard_pgss_template || fresh_db onboard_bench_profile
    md "## p. Where an onboarding's cost goes ($N SG onboardings, profiled: the rate of this run is not a figure)"
    md ""
    PGSS=""
    if psql "$ONBOARD__DATABASE__URL" -qAtX -c "SELECT count(*) FROM pg_stat_statements" >/dev/null 2>&1; then
        PGSS=1
    else
        md "- pg_stat_statements is not loaded (restart PostgreSQL with scripts/services.sh down; up)"
    fi
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-profile
    start_worker "bench-$RUN-profile" "$OUT/worker-profile.log"
    [[ -n $PGSS ]] && psql "$ONBOARD__DATABASE__URL" -qAtX -c "SELECT pg_stat_statements_reset()" >/dev/null
    rabbit_connections >"$OUT/connections-before.tsv"
    PERF_PID=""
    if command -v perf >/dev/null; then
        perf record -q -F 199 --call-graph dwarf,32768 -p "$WORKER" -o "$OUT/perf.data" \
            -- sleep "${BENCH_PROFILE_SECONDS:-4}" >/dev/null 2>"$OUT/perf.log" &
        PERF_PID=$!
    else
        md "- perf is not installed (apt-get install linux-perf): no CPU profile"
    fi
    run_load "bench-$RUN-profile" "$OUT/profile.json" -n "$N" --countries SG --outcome completed --timeout 120
    [[ -n $PERF_PID ]] && wait "$PERF_PID" || true
    rabbit_connections >"$OUT/connections-after.tsv"
    md "- this run: $(printf '%.0f' "$(json_num throughput_per_sec "$OUT/profile.json")") onboardings/s under perf; CPU: $CPU"
    md ""
    if [[ -s $OUT/connections-after.tsv ]]; then
        # The connections open before and after the load: the worker's (the load's came and went).
        md "RabbitMQ, the worker's connections (\`rabbitmqctl list_connections\`), per onboarding:"
        md ""
        md "| socket reads | socket writes | bytes received | bytes sent |"
        md "| ---: | ---: | ---: | ---: |"
        md "$(awk -v n="$N" 'NR == FNR { a[$1] = $2 " " $3 " " $4 " " $5; next }
            ($1 in a) { split(a[$1], x, " "); r += $2 - x[1]; w += $3 - x[2]; i += $4 - x[3]; o += $5 - x[4] }
            END { printf "| %.2f | %.2f | %.0f | %.0f |", r / n, w / n, i / n, o / n }' \
            "$OUT/connections-before.tsv" "$OUT/connections-after.tsv")"
        md ""
    else
        md "- rabbitmqctl could not be asked (not root?): no per-connection figures"
    fi
    if [[ -n $PGSS ]]; then
        md "PostgreSQL, the statements of this database by total time (per onboarding; \`pg_stat_statements\`, top level):"
        md ""
        md "| calls | rows | ms | ms per call | statement |"
        md "| ---: | ---: | ---: | ---: | --- |"
        psql "$ONBOARD__DATABASE__URL" -AtX -F '|' -v n="$N" >>"$SUMMARY" <<'SQL'
SELECT '| ' || round(calls::numeric / :n, 2), round(rows::numeric / :n, 2),
       round((total_exec_time / :n)::numeric, 3), round(mean_exec_time::numeric, 3),
       '`' || left(regexp_replace(query, '\s+', ' ', 'g'), 110) || '` |'
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query NOT ILIKE '%pg_stat_statements%'
ORDER BY total_exec_time DESC LIMIT 15
SQL
        md ""
        # psql interpolates :n in what it reads, not in -c.
        md "$(psql "$ONBOARD__DATABASE__URL" -AtX -v n="$N" <<<"SELECT format('- all statements: %s calls, %s ms of execution per onboarding', round(sum(calls)::numeric / :n, 1), round((sum(total_exec_time) / :n)::numeric, 3)) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())")"
        md "$(cost_line onboard_bench_profile "$N")"
        md ""
    fi
    stop_worker
    drop_prefix "bench-$RUN-profile"
    if [[ -s $OUT/perf.data ]]; then
        # inferno draws the flame graph; installed once under .local/tools.
        if [[ ! -x .local/tools/bin/inferno-flamegraph ]]; then
            cargo install --locked --quiet --root .local/tools inferno >&2
        fi
        perf script -i "$OUT/perf.data" 2>/dev/null | .local/tools/bin/inferno-collapse-perf >"$OUT/worker.folded"
        .local/tools/bin/inferno-flamegraph --title "onboard worker, full SG saga" <"$OUT/worker.folded" >"$OUT/worker-flamegraph.svg"
        md "The worker's CPU under the saga: [flame graph](worker-flamegraph.svg) (\`perf record -F 199 --call-graph dwarf\`, drawn by inferno). The share of its samples spent in each of the worker's own functions (inclusive) and in the frames that burn it (self):"
        md ""
        md "| inclusive | the worker's function | | self | frame |"
        md "| ---: | --- | --- | ---: | --- |"
        # Frames cleaned of hashes and closures; a function counted once per stack.
        awk '{ n = $NF; total += n; $NF = ""; k = split($0, f, ";"); delete seen
               for (i = 1; i <= k; i++) { g = f[i]; sub(/^ +| +$/, "", g); sub(/::h[0-9a-f]+$/, "", g); sub(/::\{\{closure\}\}.*/, "", g)
                   if (i == k) self[g] += n
                   if (g ~ /^onboard::/ && !(g in seen)) { seen[g] = 1; inc[g] += n } } }
             END { for (g in inc) printf "I\t%.1f\t%s\n", 100 * inc[g] / total, g
                   for (g in self) printf "S\t%.1f\t%s\n", 100 * self[g] / total, g }' \
            "$OUT/worker.folded" >"$OUT/worker-shares.tsv"
        paste -d '\t' \
            <(awk -F '\t' '$1 == "I"' "$OUT/worker-shares.tsv" | sort -t $'\t' -k2,2 -rn | head -n 20 | cut -f2,3) \
            <(awk -F '\t' '$1 == "S"' "$OUT/worker-shares.tsv" | sort -t $'\t' -k2,2 -rn | head -n 20 | cut -f2,3) |
            while IFS=$'\t' read -r ishare iframe sshare sframe; do
                md "| $ishare% | \`${iframe:0:80}\` | | $sshare% | \`${sframe:0:80}\` |"
            done
        md ""
    fi
fi

# --- b2. the full saga with its traces exported ---------------------------------------------------
# The same load as b with telemetry.otlp_endpoint set: every span made and exported over OTLP/HTTP
# to `onboard traces receive --quiet` (which decodes each request and counts the spans).
if [[ " $PHASES " == *" traced "* ]]; then
    say "b2. worker: the full saga of $N Singaporean clients, traces exported over OTLP"
    fresh_db onboard_bench_traced
    "$BIN" traces receive --quiet --listen "127.0.0.1:$OTLP_PORT" >"$OUT/otlp-receiver.log" 2>&1 &
    RECEIVER=$!
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-traced
    ONBOARD__TELEMETRY__OTLP_ENDPOINT=http://127.0.0.1:$OTLP_PORT \
        start_worker "bench-$RUN-traced" "$OUT/worker-traced.log"
    run_load "bench-$RUN-traced" "$OUT/traced.json" -n "$N" --countries SG --outcome completed --timeout 120
    TRACED=$(json_num throughput_per_sec "$OUT/traced.json")
    RSS_TRACED=$(( $(hwm_kb "$WORKER") / 1024 ))
    stop_worker
    kill -TERM "$RECEIVER" 2>/dev/null || true
    wait "$RECEIVER" 2>/dev/null || true
    RECEIVER=""
    SPANS=$(sed -n 's/.*"spans_received": *\([0-9]*\).*/\1/p' "$OUT/otlp-receiver.log" | tail -n 1)
    md "## b2. Full saga with traces exported over OTLP, $N Singaporean clients"
    md ""
    md "- **$(printf '%.0f' "$TRACED") onboardings/s** with every span exported$( [[ -n ${STREAMED:-} ]] && printf ' (b, untraced, in this run: %.0f/s, %s%%)' "$STREAMED" "$(awk -v t="$TRACED" -v s="$STREAMED" 'BEGIN { printf "%.1f", 100 * t / s }')")"
    md "- latency publish -> completed (ms): p50 $(json_num p50_ms "$OUT/traced.json"), p95 $(json_num p95_ms "$OUT/traced.json"), p99 $(json_num p99_ms "$OUT/traced.json"); $(json_num missing_count "$OUT/traced.json") without an outcome"
    md "- spans received by the OTLP receiver: ${SPANS:-?} ($(awk -v s="${SPANS:-0}" -v n="$N" 'BEGIN { printf "%.2f", s / n }') per onboarding; an onboarding makes 7: receive, handle, saga welcome_email, email.send and 3 publishes; fewer means the exporter's queue overflowed and dropped some)"
    md "- CPU: $CPU"
    md "- worker peak RSS: $RSS_TRACED MB"
    md ""
    drop_prefix "bench-$RUN-traced"
    say "   $(printf '%.0f' "$TRACED") onboardings/s traced, ${SPANS:-?} spans received"
fi

# --- c. the mixed saga: all six countries, Xendit for a sixth ------------------------------------
if [[ " $PHASES " == *" mixed "* ]]; then
    say "c. worker: mixed saga of $N clients over SG US IN AU VN ID (fake Xendit)"
    fresh_db onboard_bench_mixed
    "$LAB" fake-xendit --listen "127.0.0.1:$XENDIT_PORT" --latency-ms "$XENDIT_LATENCY_MS" >"$OUT/fake-xendit.log" 2>&1 &
    FAKE=$!
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-mixed
    # The fake has no rate limit; ours (60 a minute for a development key) would measure the
    # limit, not the worker.
    ONBOARD__XENDIT__BASE_URL=http://127.0.0.1:$XENDIT_PORT ONBOARD__XENDIT__SECRET_KEY=xnd_development_bench \
        ONBOARD__XENDIT__REQUESTS_PER_MINUTE=1000000 start_worker "bench-$RUN-mixed" "$OUT/worker-mixed.log"
    run_load "bench-$RUN-mixed" "$OUT/mixed.json" -n "$N" --countries SG,US,IN,AU,VN,ID --outcome completed --timeout 120
    MIXED=$(json_num throughput_per_sec "$OUT/mixed.json")
    md "## c. Mixed onboarding saga, $N clients over the six seeded countries"
    md ""
    md "A sixth of the clients are Indonesian: two Xendit customers each, at \`onboard-lab fake-xendit\` on loopback answering after $XENDIT_LATENCY_MS ms."
    md ""
    md "- **$(printf '%.0f' "$MIXED") onboardings/s** ($(json_num elapsed_seconds "$OUT/mixed.json") s, $(json_num missing_count "$OUT/mixed.json") without an outcome)"
    md "- latency publish -> completed (ms): p50 $(json_num p50_ms "$OUT/mixed.json"), p99 $(json_num p99_ms "$OUT/mixed.json")"
    md "- CPU: $CPU"
    md "$(cost_line onboard_bench_mixed "$N")"
    md ""
    say "   $(printf '%.0f' "$MIXED") onboardings/s"
    stop_worker
    kill -TERM "$FAKE" 2>/dev/null || true; wait "$FAKE" 2>/dev/null || true; FAKE=""
    drop_prefix "bench-$RUN-mixed"
fi

# --- d. worker RSS with 10,000 commands in flight --------------------------------------------------
if [[ " $PHASES " == *" rss "* ]]; then
    say "d. worker RSS with 10,000 commands in flight"
    fresh_db onboard_bench_rss
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-rss
    ONBOARD__BROKER__PREFETCH=10000 start_worker "bench-$RUN-rss" "$OUT/worker-rss.log"
    idle=$(hwm_kb "$WORKER")
    run_load "bench-$RUN-rss" "$OUT/rss.json" -n "$(( N > 20000 ? N : 20000 ))" --countries SG --max-outstanding 10000 --timeout 120
    peak=$(hwm_kb "$WORKER")
    stop_worker
    drop_prefix "bench-$RUN-rss"
    md "## d. Worker memory with 10,000 commands in flight"
    md ""
    md "Prefetch 10,000; \`onboard-lab load --max-outstanding 10000\` keeps 10,000 commands open (published and without an outcome) at a time."
    md ""
    md "- **peak RSS (VmHWM) $((peak / 1024)) MB** (goal at most 150 MB); $((idle / 1024)) MB after start"
    md "- throughput meanwhile $(printf '%.0f' "$(json_num throughput_per_sec "$OUT/rss.json")") onboardings/s, $(json_num missing_count "$OUT/rss.json") without an outcome"
    md ""
    say "   peak RSS $((peak / 1024)) MB"
fi

# --- d. 10k vs 1M rows in clients --------------------------------------------------------------------
if [[ " $PHASES " == *" rows "* ]]; then
    md "## d. Throughput with the clients table pre-filled"
    md ""
    md "$ROWS_COUNT onboardings (SG) per run on a database whose clients (and users) tables already hold the rows; the two databases take turns, twice each (a run is a few seconds, and a shared machine's speed drifts more than that between two runs)."
    md ""
    for rows in 10000 "$BIG_ROWS"; do
        say "d. filling a database with $rows clients"
        fresh_db "onboard_bench_rows_$rows"
        ONBOARD__DATABASE__URL=${ADMIN_URL%/*}/onboard_bench_rows_$rows "$BIN" migrate >/dev/null
            prefill "${ADMIN_URL%/*}/onboard_bench_rows_$rows" "$rows"
    done
    # Start the measurements from a clean state: the fills' pages written out now, not by the
    # checkpointer and the kernel while the worker runs (needs pg_checkpoint, which
    # scripts/services.sh grants).
    psql "$ADMIN_URL" -qX -c "CHECKPOINT" || echo "(no CHECKPOINT: the fill may still be written out while measuring)" >&2
    sync
    declare -A ROWS_SUM
    for round in 1 2; do
        for rows in 10000 "$BIG_ROWS"; do
            say "d. $ROWS_COUNT onboardings over $rows existing clients (round $round)"
            export ONBOARD__DATABASE__URL=${ADMIN_URL%/*}/onboard_bench_rows_$rows
            export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-rows-$rows-$round
            start_worker "bench-$RUN-rows$rows-$round" "$OUT/worker-rows-$rows-$round.log"
            run_load "bench-$RUN-rows$rows-$round" "$OUT/rows-$rows-$round.json" -n "$ROWS_COUNT" --countries SG --timeout 120
            stop_worker
            drop_prefix "bench-$RUN-rows$rows-$round"
            rate=$(json_num throughput_per_sec "$OUT/rows-$rows-$round.json")
            ROWS_SUM[$rows]=$(awk -v a="${ROWS_SUM[$rows]:-0}" -v b="$rate" 'BEGIN { print a + b }')
            md "- $rows rows, round $round: **$(printf '%.0f' "$rate") onboardings/s**, p99 $(json_num p99_ms "$OUT/rows-$rows-$round.json") ms; CPU: $CPU"
            say "   $(printf '%.0f' "$rate") onboardings/s"
        done
    done
    md "- mean of the two rounds: $(awk -v a="${ROWS_SUM[10000]}" 'BEGIN { printf "%.0f", a / 2 }') onboardings/s over 10k clients, $(awk -v a="${ROWS_SUM[$BIG_ROWS]}" 'BEGIN { printf "%.0f", a / 2 }') over $BIG_ROWS: **$(awk -v a="${ROWS_SUM[10000]}" -v b="${ROWS_SUM[$BIG_ROWS]}" 'BEGIN { printf "%+.1f%%", 100 * (b - a) / a }')** (goal: within 10%)"
    md ""
    for rows in 10000 "$BIG_ROWS"; do
        psql "$ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS onboard_bench_rows_$rows WITH (FORCE)" >/dev/null 2>&1 || true
    done
fi

# --- e. the profile's migrations on 1M clients, under writes ------------------------------------
if [[ " $PHASES " == *" migrate "* ]]; then
    md "## e. The client profile's migrations on $BIG_ROWS clients, under writes"
    md ""
    DB=onboard_bench_migrate
    fresh_db "$DB"
    URL=$ONBOARD__DATABASE__URL
    say "e. a database of the schema before the profile (migration 6), filled with $BIG_ROWS clients"
    "$BIN" migrate --to 6 >/dev/null
    prefill "$URL" "$BIG_ROWS"
    psql "$ADMIN_URL" -qX -c "CHECKPOINT" >/dev/null 2>&1 || true
    # Two writers, each transaction updating a random client and creating one, as the worker
    # would; per-second aggregates of their latency (max included).
    cat >"$OUT/migrate-writes.sql" <<SQL
\\set id random(1, $BIG_ROWS)
BEGIN;
UPDATE clients SET updated = now() WHERE client_id = :id;
INSERT INTO clients (client_code, email, client_alias, client_type, country_code, psp_id, phone)
VALUES ('MW-' || substr(md5(random()::text), 1, 14), gen_random_uuid()::text || '@mw.example',
        'Writer', 'CORPORATE', 'SG', 2, '+6500000000');
END;
SQL
    WRITE_SECS=${BENCH_MIGRATE_WRITE_SECS:-150}
    (cd "$OUT" && pgbench -n -c 2 -j 2 -T "$WRITE_SECS" -f migrate-writes.sql -l --aggregate-interval=1 \
        --log-prefix=migrate-writes "$URL" >migrate-pgbench.txt 2>&1) &
    PGB=$!
    sleep 10
    say "e. migrating to the latest version while pgbench writes"
    START_MS=$(date +%s%3N)
    "$BIN" migrate | tee "$OUT/migrate.txt" >&2
    END_MS=$(date +%s%3N)
    wait "$PGB" || true
    # Aggregate lines: epoch count sum sum2 min max (latencies in µs), one file per thread.
    read -r DURING BEFORE TXS <<<"$(cat "$OUT"/migrate-writes.[0-9]* | awk -v s="$START_MS" -v e="$END_MS" '
        { t = $1 * 1000; if (t + 1000 >= s && t <= e) { if ($6 > during) during = $6; n += $2 }
          else if ($6 > before) before = $6 }
        END { printf "%.0f %.0f %d", during / 1000, before / 1000, n }')"
    md "- migrations 0007-0014: **$(awk -v a="$START_MS" -v b="$END_MS" 'BEGIN { printf "%.1f", (b - a) / 1000 }') s** on $BIG_ROWS clients and $BIG_ROWS users ($(tail -n 1 "$OUT/migrate.txt"))"
    md "- longest write (update + insert on clients) while they ran: **$DURING ms** over $TXS transactions; outside them: $BEFORE ms (pgbench, 2 clients, ${WRITE_SECS} s: $(grep -m1 '^tps' "$OUT/migrate-pgbench.txt" || echo 'see migrate-pgbench.txt'))"
    if (( (END_MS - START_MS) / 1000 > WRITE_SECS - 10 )); then
        md "- (the migrations outlasted the writers: raise BENCH_MIGRATE_WRITE_SECS for a full picture)"
    fi
    grep -q "number of transactions actually processed" "$OUT/migrate-pgbench.txt" \
        || md "- (pgbench did not finish cleanly: see migrate-pgbench.txt)"
    md ""
    psql "$ADMIN_URL" -qX -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
fi

# --- f. past one machine: a three-node cluster -------------------------------------------------
CLUSTER_CEILING="" CLUSTER_SAGA=""
if [[ " $PHASES " == *" cluster "* ]]; then
    say "f. a three-node RabbitMQ cluster on this machine (scripts/cluster.sh)"
    export ONBOARD_CLUSTER_DIR=$OUT/cluster ONBOARD_CLUSTER_PORT=${BENCH_CLUSTER_PORT:-5801}
    CLUSTER=1
    scripts/cluster.sh up >&2
    eval "$(scripts/cluster.sh env)"
    fresh_db onboard_bench_cluster_ceiling
    ONBOARD__BROKER__PREFIX=bench-$RUN-cluster run_ceiling "$OUT/cluster-ceiling.json"
    CLUSTER_CEILING=$RATE_OUT
    CLUSTER_CEILING_CPU=$CEILING_CPU
    say "   ceiling on the cluster: $(printf '%.0f' "$CLUSTER_CEILING") messages/s"
    fresh_db onboard_bench_cluster
    export ONBOARD__EMAIL__FILE_DIR=$MAIL/mail-cluster
    start_worker "bench-$RUN-cluster-saga" "$OUT/worker-cluster.log"
    run_load "bench-$RUN-cluster-saga" "$OUT/cluster-saga.json" -n "$N" --countries SG --outcome completed --timeout 120
    CLUSTER_SAGA=$(json_num throughput_per_sec "$OUT/cluster-saga.json")
    stop_worker
    say "   full saga on the cluster: $(printf '%.0f' "$CLUSTER_SAGA") onboardings/s"
    md "## f. Past one machine: three RabbitMQ nodes (on this same machine), every queue replicated to all three"
    md ""
    md "- bare ceiling on the cluster: **$(printf '%.0f' "$CLUSTER_CEILING") messages/s**$([[ -n $CEILING ]] && printf ' (single node, same run: %.0f)' "$CEILING")"
    md "  - CPU: $CLUSTER_CEILING_CPU"
    md "- full SG saga on the cluster: **$(printf '%.0f' "$CLUSTER_SAGA") onboardings/s** = $(awk -v s="$CLUSTER_SAGA" -v c="$CLUSTER_CEILING" 'BEGIN { printf "%.1f%%", 100 * s / c }') of the cluster's ceiling$([[ -n $STREAMED ]] && printf ' (single node, same run: %.0f)' "$STREAMED"); latency publish -> completed p50 $(json_num p50_ms "$OUT/cluster-saga.json") ms, p99 $(json_num p99_ms "$OUT/cluster-saga.json") ms; $(json_num missing_count "$OUT/cluster-saga.json") without an outcome"
    md "  - CPU: $CPU (beam.smp: the three cluster nodes and the idle single node)"
    md "- three nodes on one 2-core machine do three times a node's work on the same cores: a lower bound for three machines, where each node has its own."
    md ""
    scripts/cluster.sh down >&2
    CLUSTER=""
    unset ONBOARD__BROKER__URLS ONBOARD__BROKER__REPLICATED_QUEUES
fi

# --- g. webhooks -------------------------------------------------------------------------------
if [[ " $PHASES " == *" webhooks "* ]]; then
    md "## g. Webhooks: $N events to a local endpoint answering at once"
    md ""
    fresh_db onboard_bench_webhooks
    for variant in "" --hanging; do
        say "g. webhooks bench $variant"
        # (No CPU split here: the bench's database sessions end with it, and /proc no longer
        # has what they used.)
        line=$("$LAB" webhooks bench -n "$N" $variant 2>>"$OUT/webhooks-bench.log" | tail -n 1)
        md "- $line"
        say "   $line"
    done
    md ""
fi

# --- the ratios ---------------------------------------------------------------------------------
if [[ -n $CEILING ]]; then
    md "## Against the per-message ceiling ($(printf '%.0f' "$CEILING") messages/s)"
    md ""
    ratio() { awk -v s="$1" -v c="${2:-$CEILING}" 'BEGIN { printf "%.1f%%", 100 * s / c }'; } # rate [against]
    if [[ -n $SAGA ]]; then
        md "- full SG saga from a full queue, as the ceiling is measured: $(printf '%.0f' "$SAGA") / $(printf '%.0f' "$CEILING") = **$(ratio "$SAGA")** (issue 24: at least 80%, goal 100%)"
        md "- full SG saga with the load publisher alongside on the same cores: $(printf '%.0f' "$STREAMED") / $(printf '%.0f' "$CEILING") = $(ratio "$STREAMED")"
        [[ -n $CEILING_AGAIN ]] && md "- the bare ceiling measured again right after the saga: $(printf '%.0f' "$CEILING_AGAIN") messages/s ($(awk -v a="$CEILING_AGAIN" -v c="$CEILING" 'BEGIN { printf "%+.1f%%", 100 * (a - c) / c }') from the first: the machine's drift within this run); the saga from a full queue against it: $(ratio "$SAGA" "$CEILING_AGAIN")"
    fi
    [[ -n $MIXED ]] && md "- mixed saga (publisher alongside): $(printf '%.0f' "$MIXED") / $(printf '%.0f' "$CEILING") = $(ratio "$MIXED")"
    [[ -n $BATCHED ]] && md "- the batched ceiling is $(awk -v b="$BATCHED" -v c="$CEILING" 'BEGIN { printf "%.1f", b / c }')x the per-message one"
    md ""
fi
md "Raw results: \`$OUT/\`."
# The welcome emails (one .eml per onboarding) are not needed once counted.
rm -rf "$OUT"/mail* "$MAIL"/mail*
[[ $MAIL == /dev/shm/* ]] && rm -rf "$MAIL"

echo
cat "$SUMMARY"
