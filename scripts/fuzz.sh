#!/usr/bin/env bash
# Fuzzes message parsing and validation for a bounded time, no services needed:
#
#   scripts/fuzz.sh [SECONDS]     each target for SECONDS (default 60)
#
# Targets (fuzz/fuzz_targets/): `parse` feeds any bytes and AMQP properties to
# messages::parse (routing key, message_id, content type, JSON, schema, NUL check);
# `schemas` feeds any JSON value to every command's schema check and to NewClient::parse.
# A panic stops the run and leaves the input in fuzz/artifacts/<target>/ (replay it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`). The corpus grows in fuzz/corpus/,
# seeded from fuzz/seeds/.
#
# cargo-fuzz needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
# Installs cargo-fuzz from crates.io when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"

SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

for target in parse schemas; do
    mkdir -p "fuzz/corpus/$target"
    cp -n fuzz/seeds/"$target"/* "fuzz/corpus/$target/" 2>/dev/null || true
    echo "==> fuzzing $target for ${SECONDS_EACH}s"
    cargo fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_EACH" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "==> no panic in $((SECONDS_EACH * 2))s of fuzzing"
