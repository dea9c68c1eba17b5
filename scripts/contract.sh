#!/usr/bin/env bash
# Validates the published contract with maintained validators from the npm registry, each
# pinned with its lock file under tools/:
#   - asyncapi.yaml, and every schema file it references, with the official AsyncAPI CLI
#     (@asyncapi/cli, tools/asyncapi/);
#   - openapi.yaml (OpenAPI 3.1, whose `webhooks` section describes every webhook body, with
#     the schemas under schemas/webhooks/ and their examples) with Redocly's CLI
#     (@redocly/cli, tools/redocly/; rules in redocly.yaml).
#
#   scripts/contract.sh            install the CLIs when missing, then validate
#
# Nothing global is assumed or changed: Node.js and npm come from apt when missing (Debian's
# nodejs and npm packages), the CLIs go to tools/*/node_modules, npm's cache and the CLIs'
# own settings (analytics off) to .local/. Warnings fail the run as errors do.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOCAL="$ROOT/.local"
CLI="$ROOT/tools/asyncapi/node_modules/.bin/asyncapi"
REDOCLY="$ROOT/tools/redocly/node_modules/.bin/redocly"
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

# Installs tools/<name> again whenever its lock file changed since the last install.
install() {
    local dir="$ROOT/tools/$1" bin=$2 stamp="$ROOT/tools/$1/node_modules/.onboard-lock"
    if [[ ! -x $bin ]] || ! cmp -s "$dir/package-lock.json" "$stamp"; then
        say "installing tools/$1 from the npm registry (tools/$1/package-lock.json)"
        local started=$SECONDS
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error --cache "$LOCAL/npm-cache") \
            || die "npm ci in tools/$1 failed"
        cp "$dir/package-lock.json" "$stamp"
        say "installed in $((SECONDS - started)) s"
    fi
}
install asyncapi "$CLI"
install redocly "$REDOCLY"

# The CLI keeps its settings in $HOME: give it one of its own, analytics off.
export HOME="$LOCAL/asyncapi-home"
mkdir -p "$HOME"
[[ -f $HOME/.asyncapi-analytics ]] || \
    printf '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"onboard-ci"}\n' >"$HOME/.asyncapi-analytics"

say "asyncapi $("$CLI" --version 2>/dev/null | head -n 1): validating asyncapi.yaml"
cd "$ROOT"
"$CLI" validate asyncapi.yaml --fail-severity warn --diagnostics-format stylish

# Redocly's telemetry off; its rules (recommended-strict: warnings are errors) in redocly.yaml.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
say "redocly $("$REDOCLY" --version 2>/dev/null | tail -n 1): linting openapi.yaml"
"$REDOCLY" lint openapi.yaml --config redocly.yaml --format stylish
