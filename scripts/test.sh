#!/usr/bin/env bash
# The one command that runs every test: start (or reuse) PostgreSQL and RabbitMQ, export the
# configuration the tests read, validate the AsyncAPI and OpenAPI documents (scripts/contract.sh, beside the
# build: it is mostly an npm download the first time), run cargo test. Fails when either fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
scripts/services.sh tools
scripts/services.sh sweep
eval "$(scripts/services.sh env)"
export RUST_BACKTRACE=1
# One build from scratch (CI) gains nothing from incremental compilation's caches, which double
# the size of target/; a developer can set CARGO_INCREMENTAL=1 for their own loop.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

mkdir -p .local
scripts/contract.sh >.local/contract.log 2>&1 &
contract=$!

status=0
cargo test --all-targets --locked -- --test-threads=8 || status=$?

if wait "$contract"; then
    echo "[test] asyncapi.yaml and openapi.yaml are valid (scripts/contract.sh; log: .local/contract.log)"
else
    echo "[test] scripts/contract.sh failed:" >&2
    cat .local/contract.log >&2
    status=1
fi
exit "$status"
