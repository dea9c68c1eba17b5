#!/usr/bin/env bash
# Validates asyncapi.yaml, and every schema file it references, with the official AsyncAPI
# CLI from the npm registry (@asyncapi/cli, pinned with its lock file in tools/asyncapi/).
#
#   scripts/contract.sh            install the CLI when missing, then validate
#
# Nothing global is assumed or changed: Node.js and npm come from apt when missing (Debian's
# nodejs and npm packages), the CLI goes to tools/asyncapi/node_modules, npm's cache and the
# CLI's own settings (analytics off) to .local/. Warnings fail the run as errors do.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/tools/asyncapi"
LOCAL="$ROOT/.local"
CLI="$TOOLS/node_modules/.bin/asyncapi"
mkdir -p "$LOCAL"

say() { printf '[contract] %s\n' "$*"; }
die() { printf '[contract] error: %s\n' "$*" >&2; exit 1; }
as_root() { if (( EUID == 0 )); then "$@"; else sudo -n "$@"; fi; }

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if ! command -v npm >/dev/null || (( $(node_major) < 18 )); then
    command -v apt-get >/dev/null || die "please install Node.js 18 or later and npm: apt-get not found"
    log="$LOCAL/apt.log"
    say "installing nodejs and npm with apt-get (log: $log)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$log" 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "apt-get install nodejs npm failed"; }
    (( $(node_major) >= 18 )) || die "Node.js $(node --version) is too old for the AsyncAPI CLI (18 or later)"
fi

# Installed again whenever the lock file changed since the last install.
stamp="$TOOLS/node_modules/.onboard-lock"
if [[ ! -x $CLI ]] || ! cmp -s "$TOOLS/package-lock.json" "$stamp"; then
    say "installing @asyncapi/cli from the npm registry (tools/asyncapi/package-lock.json)"
    started=$SECONDS
    (cd "$TOOLS" && npm ci --no-audit --no-fund --loglevel=error --cache "$LOCAL/npm-cache") \
        || die "npm ci failed"
    cp "$TOOLS/package-lock.json" "$stamp"
    say "installed in $((SECONDS - started)) s"
fi

# The CLI keeps its settings in $HOME: give it one of its own, analytics off.
export HOME="$LOCAL/asyncapi-home"
mkdir -p "$HOME"
[[ -f $HOME/.asyncapi-analytics ]] || \
    printf '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"onboard-ci"}\n' >"$HOME/.asyncapi-analytics"

say "asyncapi $("$CLI" --version 2>/dev/null | head -n 1): validating asyncapi.yaml"
cd "$ROOT"
"$CLI" validate asyncapi.yaml --fail-severity warn --diagnostics-format stylish
