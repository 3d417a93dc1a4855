#!/usr/bin/env bash
# perf/arenas.sh [ROUNDS]: the write path with the server's malloc arena cap (one per core, set by
# main) against glibc's default (MALLOC_ARENA_MAX=8 × cores in the environment, which main then
# leaves alone), the same release binary, alternated ROUNDS times (default 3; ARENAS_SETTINGS="capped
# 4 16" to compare other caps, a number being MALLOC_ARENA_MAX): `/submit` 1-of-1
# and the three-step 2-of-3 flow, 64 clients, 5 s each, fsync batch. Prints one line per run
# (writes/s, p50 / p99 ms) and keeps the loadgen JSON in perf/out/raw/arenas-*.json. It answers
# whether fewer arenas cost the write path lock contention (docs/PERFORMANCE.md, the soak).
# Needs target/release/svc-registry and the loadgen (perf/run.sh builds both; PERF_PREBUILT=1
# with PERF_BIN / PERF_LG to use others).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'stop_all' EXIT
trap 'exit 130' INT TERM
rounds=${1:-3}
[ -x "$BIN" ] && [ -x "$LG" ] || { echo "build first: perf/run.sh builds $BIN and $LG" >&2; exit 2; }
mkdir -p "$RAW" "$TMPD"
default_arenas=$((8 * $(nproc)))

run_one() { # run_one LABEL FLOW M N ARENAS (ARENAS empty: the server's own cap)
    local label=$1 flow=$2 m=$3 n=$4 arenas=$5 dir="$TMPD/arenas"
    rm -rf "$dir"
    write_config "$dir" "$m" "$n" batch
    # Only the server sees the setting: exported for its start, removed before the load starts.
    if [ -n "$arenas" ]; then export MALLOC_ARENA_MAX=$arenas; fi
    start_registry "arenas-$label" "$dir"
    unset MALLOC_ARENA_MAX
    local out="$RAW/arenas-$label-$flow-${m}of$n.json"
    "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients 64 --secs 5 \
        --signers "$n" --threshold "$m" --flow "$flow" --max-proposals 60000 >"$out"
    stop_registry
    python3 - "$out" "$label" "$flow" "${m}-of-$n" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
l = d["commit_latency"]
print(f"{sys.argv[2]:>12} {sys.argv[3]:>10} {sys.argv[4]}: {d['commits_per_s']:>9,.0f} writes/s"
      f"  p50 {l['p50_ms']} ms  p99 {l['p99_ms']} ms")
PY
}

for r in $(seq 1 "$rounds"); do
    for setting in ${ARENAS_SETTINGS:-capped $default_arenas}; do
        if [ "$setting" = capped ]; then label=capped arenas=""; else label=max$setting arenas=$setting; fi
        run_one "$label-r$r" submit 1 1 "$arenas"
        run_one "$label-r$r" three-step 2 3 "$arenas"
    done
done
