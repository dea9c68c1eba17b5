#!/usr/bin/env bash
# The quick start: brings up PostgreSQL and RabbitMQ (Debian packages, no Docker), starts the
# local fake of Xendit and the worker on a fresh demo database, publishes every sample command
# in examples/ and prints the events and the reply each one produced, with the operator console
# running beside it (a demo operator; its address and login printed first). Run from a terminal,
# it then keeps everything up until you press Enter, for the console; otherwise it stops. Run it
# again any time: it starts from a clean demo database each time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

scripts/services.sh up
eval "$(scripts/services.sh env)"

DEMO=.local/demo
rm -rf "$DEMO" && mkdir -p "$DEMO"
echo "==> building onboard"
cargo build --locked --quiet
BIN=target/debug/onboard
LAB=target/debug/onboard-lab   # the fakes and the webhook receiver

# A database of its own, so the samples give the same answers on every run.
DEMO_DB=onboard_demo
ADMIN_URL=${ONBOARD_TEST_DATABASE_URL}
psql "$ADMIN_URL" -q -c "DROP DATABASE IF EXISTS $DEMO_DB WITH (FORCE)" -c "CREATE DATABASE $DEMO_DB" >/dev/null
export ONBOARD__DATABASE__URL=${ADMIN_URL%/*}/$DEMO_DB
export ONBOARD__BROKER__PREFIX=onboarding-demo
export ONBOARD__XENDIT__BASE_URL=http://127.0.0.1:8099
export ONBOARD__XENDIT__SECRET_KEY=xnd_development_demo_key
export ONBOARD__EMAIL__FILE_DIR=$DEMO/mail
# The source system client.import reads from (examples 20-21): the local fake, serving
# examples/source/legacy.json.
export ONBOARD__SOURCES__LEGACY__BASE_URL=http://127.0.0.1:8098
export ONBOARD__SOURCES__LEGACY__TOKEN=demo-source-token
export ONBOARD__HTTP__PORT=${ONBOARD_DEMO_HTTP_PORT:-8080}
# The demo's webhook receiver listens on loopback, which production refuses as a target.
export ONBOARD__WEBHOOKS__ALLOW_PRIVATE_ADDRESSES=true
export RUST_LOG=${RUST_LOG:-info,lapin=warn,sqlx=warn}

"$LAB" fake-xendit --listen 127.0.0.1:8099 >"$DEMO/fake-xendit.log" 2>&1 &
FAKE=$!
"$LAB" fake-source --listen 127.0.0.1:8098 --records examples/source/legacy.json \
    --token "$ONBOARD__SOURCES__LEGACY__TOKEN" >"$DEMO/fake-source.log" 2>&1 &
SOURCE=$!
# A webhook endpoint for every event: a local receiver that checks each signature with the
# endpoint's secret (written to a file by `webhooks add`, never printed), and the delivering
# process, ready before the worker publishes anything.
"$BIN" webhooks add http://127.0.0.1:8097/hook --events '*' --secret-file "$DEMO/webhook-secret"
"$LAB" webhooks receive --listen 127.0.0.1:8097 --secret-file "$DEMO/webhook-secret" >"$DEMO/webhooks-received.log" 2>&1 &
RECEIVER=$!
"$BIN" webhooks serve >"$DEMO/webhooks.log" 2>&1 &
HOOKS=$!
for _ in $(seq 1 60); do
    grep -q "webhook feed ready" "$DEMO/webhooks.log" 2>/dev/null && break
    kill -0 "$HOOKS" 2>/dev/null || { echo "webhooks serve exited:"; tail -n 20 "$DEMO/webhooks.log"; exit 1; }
    sleep 0.5
done
"$BIN" worker >"$DEMO/worker.log" 2>&1 &
WORKER=$!
# The operator console, plain http on loopback, with a demo operator.
export ONBOARD__CONSOLE__LISTEN=127.0.0.1:${ONBOARD_DEMO_CONSOLE_PORT:-8090}
export ONBOARD__CONSOLE__INSECURE_COOKIES=true
CONSOLE_PASSWORD=demo-operator-password
printf '%s\n' "$CONSOLE_PASSWORD" | "$BIN" console users add demo --role operator >/dev/null
"$BIN" console >"$DEMO/console.log" 2>&1 &
CONSOLE=$!
cleanup() {
    kill -TERM "$CONSOLE" 2>/dev/null && wait "$CONSOLE" 2>/dev/null || true
    kill -TERM "$WORKER" 2>/dev/null && wait "$WORKER" 2>/dev/null || true
    kill -TERM "$HOOKS" 2>/dev/null && wait "$HOOKS" 2>/dev/null || true
    kill -TERM "$RECEIVER" 2>/dev/null && wait "$RECEIVER" 2>/dev/null || true
    kill -TERM "$FAKE" 2>/dev/null && wait "$FAKE" 2>/dev/null || true
    kill -TERM "$SOURCE" 2>/dev/null && wait "$SOURCE" 2>/dev/null || true
}
trap cleanup EXIT

echo "==> waiting for the worker to be ready"
for _ in $(seq 1 60); do
    if curl -sf "http://127.0.0.1:$ONBOARD__HTTP__PORT/readyz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$WORKER" 2>/dev/null; then echo "worker exited:"; tail -n 30 "$DEMO/worker.log"; exit 1; fi
    sleep 0.5
done

for _ in $(seq 1 60); do
    curl -sf "http://$ONBOARD__CONSOLE__LISTEN/healthz" >/dev/null 2>&1 && break
    kill -0 "$CONSOLE" 2>/dev/null || { echo "console exited:"; tail -n 20 "$DEMO/console.log"; exit 1; }
    sleep 0.5
done
echo "==> operator console: http://$ONBOARD__CONSOLE__LISTEN/ (user demo, password $CONSOLE_PASSWORD)"

for file in examples/*.json; do
    echo
    echo "==> $file"
    "$BIN" publish "$file" --wait 20
done

echo
echo "==> onboard import examples/bulk/clients.csv (a bulk import; run twice: the second creates nothing)"
for run in first second; do
    echo "--- $run run"
    "$BIN" import examples/bulk/clients.csv --report "$DEMO/import-report.csv"
done
echo "--- rows that did not succeed ($DEMO/import-report.csv):"
cat "$DEMO/import-report.csv"

echo
echo "==> webhooks received by the local endpoint (each signature checked with its secret)"
last=-1
for _ in $(seq 1 40); do
    now=$(grep -c '^webhook ' "$DEMO/webhooks-received.log" || true)
    [[ $now == "$last" && $now -gt 0 ]] && break
    last=$now
    sleep 0.5
done
grep '^webhook ' "$DEMO/webhooks-received.log" | awk '{ print $3, "signature", $5 }' | sort | uniq -c
"$BIN" webhooks list

echo
echo "==> welcome emails written (open them with any mail client):"
ls -1 "$DEMO/mail" 2>/dev/null | sed 's/^/     /' || true
echo "==> worker log: $DEMO/worker.log"
echo "==> console log: $DEMO/console.log"
if [[ -t 0 ]]; then
    echo
    echo "==> the console is at http://$ONBOARD__CONSOLE__LISTEN/ (user demo, password $CONSOLE_PASSWORD):"
    echo "    sample 06's letter waits in Dead letters. Press Enter to stop everything."
    read -r _
fi
