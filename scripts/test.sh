#!/usr/bin/env bash
# The one command that runs every test: start (or reuse) PostgreSQL and RabbitMQ, export the
# configuration the tests read, run cargo test. The exit code is cargo's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/services.sh up
scripts/services.sh tools
eval "$(scripts/services.sh env)"
export RUST_BACKTRACE=1

exec cargo test --all-targets --locked -- --test-threads=8
