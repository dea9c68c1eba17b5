#!/usr/bin/env bash
# Prometheus on loopback, scraping running onboard workers and evaluating
# deploy/prometheus/alerts.yml, for anyone who wants to look (not needed by the tests).
#
#   scripts/observe.sh [HOST:PORT ...]   the workers' HTTP addresses (default 127.0.0.1:8080)
#
# Runs in the foreground until Ctrl-C; UI on http://127.0.0.1:${ONBOARD_PROMETHEUS_PORT:-9090}
# (Alerts tab: the rules and their state). Data under .local/prometheus/, kept between runs.
# Uses Debian's prometheus package (scripts/services.sh tools installs it).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${ONBOARD_PROMETHEUS_PORT:-9090}
DIR="$ROOT/.local/prometheus"

command -v prometheus >/dev/null || "$ROOT/scripts/services.sh" tools
command -v prometheus >/dev/null || { echo "observe: no prometheus binary on PATH" >&2; exit 1; }

targets=("$@")
(( ${#targets[@]} )) || targets=(127.0.0.1:8080)
mkdir -p "$DIR/data"
cp "$ROOT/deploy/prometheus/alerts.yml" "$DIR/alerts.yml"
{
    echo "# Written by scripts/observe.sh on every start."
    echo "global:"
    echo "  scrape_interval: 5s"
    echo "  evaluation_interval: 5s"
    echo "rule_files: [alerts.yml]"
    echo "scrape_configs:"
    echo "  - job_name: onboard"
    echo "    static_configs:"
    printf '      - targets: ['
    local_sep=""
    for t in "${targets[@]}"; do printf '%s"%s"' "$local_sep" "$t"; local_sep=", "; done
    echo "]"
} >"$DIR/prometheus.yml"
promtool check config "$DIR/prometheus.yml" >/dev/null
echo "observe: Prometheus on http://127.0.0.1:$PORT scraping ${targets[*]} (Ctrl-C to stop)"
exec prometheus --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/data" \
    --web.listen-address="127.0.0.1:$PORT" --log.level=warn
