#!/usr/bin/env bash
# Deterministic simulation of the writer + storage (tests/simulation.rs) for SEEDS seeds
# (default 1,000,000) on the release build, across every core (SIM_THREADS=N to choose).
#
#   scripts/simulate.sh [SEEDS] [BASE]     seeds BASE .. BASE+SEEDS (default BASE: random)
#
# A fresh random BASE each run explores new schedules; a failure prints its seed and the command
# that replays it (SIM_SEED=N cargo test --test simulation -- --nocapture). Progress every
# 10,000 seeds; the full output goes to target/simulation-<base>.log and its last "simulation:"
# line is the summary docs/RELIABILITY.md quotes.
set -euo pipefail
cd "$(dirname "$0")/.."

seeds="${1:-1000000}"
base="${2:-$(( $(od -An -N4 -tu4 /dev/urandom | tr -d ' ') * 1000 ))}"
if ! [[ "$seeds" =~ ^[0-9]+$ && "$base" =~ ^[0-9]+$ ]] || [ "$seeds" -eq 0 ]; then
    echo "usage: scripts/simulate.sh [SEEDS] [BASE]" >&2
    exit 2
fi
mkdir -p target
log="target/simulation-$base.log"
echo "== simulation: $seeds seeds from $base (release build; log $log)"
set +e
SIM_SEEDS="$seeds" SIM_SEED_BASE="$base" cargo test --release --quiet --test simulation \
    -- --nocapture 2>&1 | tee "$log" | grep -aE '^simulation:|panicked|replay'
rc=${PIPESTATUS[0]}
set -e
echo "== simulation: exit $rc"
exit "$rc"
