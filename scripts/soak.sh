#!/usr/bin/env bash
# Soak the real binary (release build) under a mixed load for SECONDS (default 600):
# two paced committers racing on CAS, four readers over every read route, eight stream
# followers, a SIGHUP reload of a changed live setting every minute, a checkpoint every few
# seconds. Prints a row per minute (RSS and its drift, threads, fds, commits and latency
# percentiles, reads and latency percentiles, stream events, CAS races, errors, checkpoints,
# reloads), then a summary and the heap's growth per commit (the slope of RssAnon over commits,
# sampled every second; issue 14's goal is ≤ 64 B); ends with SIGTERM, a restart and a full audit
# of the chain.
#
#   scripts/soak.sh [SECONDS]      SOAK_REPORT_SECS / SOAK_HUP_SECS override the intervals
#
# First a warm-up: unpaced commits until SOAK_WARMUP_COMMITS (default 17000, past the writer's
# 16,384 recent proposal ids and the stream's event cache) are acknowledged; the timed run and
# its RssAnon slope start after it, so the slope is growth with history, not bounded memories
# filling. SOAK_WARMUP_COMMITS=0 skips it.
#
# It is tests/soak.rs with SOAK_SECS set; the report is kept in target/soak-<date>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
if ! [[ "$secs" =~ ^[0-9]+$ ]] || [ "$secs" -eq 0 ]; then
    echo "usage: scripts/soak.sh [SECONDS]" >&2
    exit 2
fi
mkdir -p target
log="target/soak-$(date +%Y%m%d-%H%M%S).log"
echo "== soak: ${secs}s (release build; log $log)"
cargo build --release --bins --quiet
set +e
SOAK_SECS="$secs" SOAK_WARMUP_COMMITS="${SOAK_WARMUP_COMMITS:-17000}" \
    cargo test --release --quiet --test soak -- --nocapture 2>&1 | tee "$log" \
    | grep -E '^soak|panicked|assert'
rc=${PIPESTATUS[0]}
set -e
echo "== soak: exit $rc"
exit "$rc"
