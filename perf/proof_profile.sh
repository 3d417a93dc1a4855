#!/usr/bin/env bash
# perf/proof_profile.sh: instructions and system calls per transparency-log proof request
# (issue 19), next to GET /registry/head, on a tree of 100,001 leaves (docs/PERFORMANCE.md,
# "Proof routes profiled").
#
#   data:   `loadgen synth --versions 100000`, server fsync = "never"
#   load:   10 s per route of wrk -t1 -c16: inclusion proofs of random versions
#           (perf/wrk/tlog_proof.lua), consistency proofs from a random old size, /registry/head
#   counts: callgrind counters zeroed after the background history check, dumped after each
#           route; requests counted by http_requests_total; then strace -c -f for 4 s bursts.
#
# Output: perf/out/proof-profile/summary.txt (and the raw callgrind and strace files).
# Uses the release binaries as built (PERF_PREBUILT=1 to skip the build).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'stop_all' EXIT
ensure_tools valgrind callgrind_control callgrind_annotate strace wrk python3 curl
PROF="$OUT/proof-profile"
mkdir -p "$RAW" "$TMPD" "$PROF"
rm -rf "${PROF:?}"/* "$TMPD/proof-profile"
build_all
SIZE=100001
dir="$TMPD/proof-profile"
write_config "$dir" 1 1 never
"$LG" synth --dir "$dir/data" --versions $((SIZE - 1)) >"$PROF/synth.json"

cat >"$PROF/consistency.lua" <<'LUA'
local size = tonumber(os.getenv("TLOG_SIZE") or "1")
math.randomseed(os.time())
request = function()
    return wrk.format("GET", "/registry/proof/consistency?old=" .. math.random(1, size) .. "&new=" .. size)
end
LUA

# Ready: the tree served whole and the background history check over (it would be counted).
wait_ready() {
    local err=$1 i
    for i in $(seq 1 1200); do grep -q 'role=write-plane' "$err" 2>/dev/null && break; sleep 0.2; done
    RA=$(grep -o 'role=read-plane registry_addr=[^ ]*' "$err" | head -1 | sed 's/.*=//')
    MA=$(grep -o 'role=read-plane .*metrics_addr=[^ ]*' "$err" | head -1 | sed 's/.*metrics_addr=//')
    for i in $(seq 1 1200); do [ "$(curl -fs "http://$RA/registry/checkpoint" | sed -n 2p)" = $SIZE ] && break; sleep 0.2; done
    for i in $(seq 1 1200); do grep -q 'background history check passed' "$err" && return 0; sleep 0.5; done
    log "not ready"; return 1
}
count() { curl -fs "http://$MA/metrics" | awk -v k="http_requests_total{code=\"200\",route=\"$1\"}" '$1==k {print $2}'; }
load() {
    case $1 in
        incl) TLOG_SIZE=$SIZE wrk -t1 -c16 -d"$2"s -s "$ROOT/perf/wrk/tlog_proof.lua" "http://$RA" ;;
        cons) TLOG_SIZE=$SIZE wrk -t1 -c16 -d"$2"s -s "$PROF/consistency.lua" "http://$RA" ;;
        head) wrk -t1 -c16 -d"$2"s "http://$RA/registry/head" ;;
    esac
}
route() { case $1 in incl) echo /registry/proof/inclusion ;; cons) echo /registry/proof/consistency ;; head) echo /registry/head ;; esac; }

log "proof routes under callgrind (${SIZE} leaves)"
err="$RAW/proof-profile-callgrind.stderr"
valgrind --tool=callgrind --callgrind-out-file="$PROF/callgrind.%p.out" --separate-threads=no \
    --dump-instr=no "$BIN" --config "$dir/config.toml" 2>"$err" >/dev/null &
SPID=$!
PERF_PIDS+=("$SPID")
wait_ready "$err"
for r in incl cons head; do
    c0=$(count "$(route $r)"); c0=${c0:-0}
    callgrind_control --zero "$SPID" >/dev/null 2>&1
    load $r 10 >"$PROF/callgrind-$r-wrk.txt" 2>&1
    callgrind_control --dump="$r" "$SPID" >/dev/null 2>&1
    n=$(( $(count "$(route $r)") - c0 ))
    f=$(grep -l "Trigger: dump $r\$" "$PROF"/callgrind.*.out.* | head -1)
    ir=$(callgrind_annotate "$f" 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{gsub(",","",$1); print $1}')
    echo "$r: $ir instructions for $n requests = $((ir / n)) per request" | tee -a "$PROF/summary.txt"
done
stop_registry

log "proof routes under strace -c"
start_registry proof-profile-strace "$dir"
wait_ready "$RAW/proof-profile-strace.stderr"
for r in incl head; do
    c0=$(count "$(route $r)"); c0=${c0:-0}
    strace -c -f -p "$SPID" -o "$PROF/strace-$r.txt" 2>/dev/null &
    st=$!
    sleep 1
    load $r 4 >"$PROF/strace-$r-wrk.txt" 2>&1
    kill -INT "$st"; wait "$st" || true
    n=$(( $(count "$(route $r)") - c0 ))
    calls=$(awk '$NF=="total" {print $4}' "$PROF/strace-$r.txt")
    preads=$(awk '$NF=="pread64" {print $4}' "$PROF/strace-$r.txt")
    echo "$r: $calls system calls (pread64 ${preads:-0}) for $n requests = $(python3 -c "print(round($calls / $n, 2))") per request" | tee -a "$PROF/summary.txt"
done
stop_registry
rm -rf "$dir"
log "wrote $PROF"
