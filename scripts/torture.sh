#!/usr/bin/env bash
# Crash-loop torture of the real process: ROUNDS rounds (default 1000) of
#   start → 4 concurrent committers → SIGKILL at a random moment (50–300 ms in)
#   → every 4th round also a start that is SIGKILLed 0–60 ms into its start-up (recovery)
#   → restart → every acknowledged commit present with its hash, the chain links
#     (the whole chain audited with every quorum signature every 25 rounds and at the end)
#
#   scripts/torture.sh [ROUNDS]            CRASH_SEED=N to repeat a schedule
#
# It is tests/crash.rs's SIGKILL loop (CI runs 20 rounds of it) on the release build. The full
# output goes to target/torture-<seed>.log; the last line is the summary for docs/RELIABILITY.md.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-1000}"
if ! [[ "$rounds" =~ ^[0-9]+$ ]] || [ "$rounds" -eq 0 ]; then
    echo "usage: scripts/torture.sh [ROUNDS]" >&2
    exit 2
fi
seed="${CRASH_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
mkdir -p target
log="target/torture-$seed.log"
echo "== torture: $rounds rounds, CRASH_SEED=$seed (release build; log $log)"
cargo build --release --bins --quiet
started=$(date +%s)
set +e
CRASH_ROUNDS="$rounds" CRASH_SEED="$seed" cargo test --release --quiet --test crash \
    sigkill_under_concurrent_commits_loses_no_acknowledged_commit -- --exact --nocapture \
    >"$log" 2>&1
rc=$?
set -e
grep -E '^round [0-9]*[05]0:' "$log" || true
grep -E 'panicked|assert|FAILED' "$log" | head -n 20 || true
grep -E '^crash loop: [0-9]+ SIGKILLs' "$log" || true
echo "== torture: exit $rc after $(( $(date +%s) - started ))s (CRASH_SEED=$seed)"
exit "$rc"
