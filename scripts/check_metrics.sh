#!/usr/bin/env bash
# `promtool check metrics` on a live /metrics: start the server on a temporary copy of
# configs/dev.toml (ephemeral ports, a temporary data_dir), scrape it once, lint the scrape, stop
# the server by its PID. Exits non-zero if promtool names any problem (abbreviated units,
# missing HELP, counters without _total, ...).
#
# Usage: scripts/check_metrics.sh [PATH-TO-svc-registry]   (default: target/release/svc-registry)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-target/release/svc-registry}"
[ -x "$bin" ] || { echo "error: $bin is not built (cargo build --release)" >&2; exit 1; }
command -v promtool >/dev/null || { echo "error: promtool is not installed (apt-get install prometheus)" >&2; exit 1; }

work="$(mktemp -d)"
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

sed -e 's#^registry_addr = .*#registry_addr = "127.0.0.1:0"#' \
    -e 's#^metrics_addr = .*#metrics_addr = "127.0.0.1:0"#' \
    -e 's#^data_dir = .*#data_dir = "data"#' \
    -e '/^uds_path = /d' \
    -e "s#^keys_file = .*#keys_file = \"$PWD/configs/dev-keys/auth-keys.toml\"#" \
    -e "s#^backup_root = .*#backup_root = \"$work\"#" \
    configs/dev.toml >"$work/dev.toml"
env -u RUST_LOG -u REGISTRY_ADDR -u METRICS_ADDR -u RON_BUS_SOCK \
    "$bin" --config "$work/dev.toml" 2>"$work/log" &
pid=$!

# The ready line names the metrics listener's real (ephemeral) address.
addr=""
for _ in $(seq 1 200); do
    addr="$(sed -n 's/.*role=read-plane .*metrics_addr=\([0-9.:]*\).*/\1/p' "$work/log" | head -n1)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "error: the server exited:" >&2; cat "$work/log" >&2; exit 1; }
    sleep 0.05
done
[ -n "$addr" ] || { echo "error: the server did not become ready in 10 s:" >&2; cat "$work/log" >&2; exit 1; }

curl -fsS "http://$addr/metrics" >"$work/metrics"
echo "scraped $(grep -c '^# HELP' "$work/metrics") metric families from http://$addr/metrics"
promtool check metrics <"$work/metrics"
echo "promtool check metrics: clean"
