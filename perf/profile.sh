#!/usr/bin/env bash
# perf/profile.sh: callgrind profiles of the read path and the commit path of the release binary.
#
#   read path:   GET /registry/head on 8 keep-alive connections (loadgen conncheck)
#   commit path: propose → 2 approvals → commit, 8 pipelined committers, fsync = batch
#   submit path: one POST /submit with 2 signatures, 8 pipelined clients, fsync = batch
#
# Counters are zeroed once the server is ready (start-up is not counted) and dumped after the
# load, so the totals divide by the number of requests / commits served. Output under
# perf/out/profile/: the raw callgrind files and callgrind_annotate summaries (exclusive and
# inclusive), plus instructions per request / per commit in summary.txt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'stop_all' EXIT
ensure_tools valgrind callgrind_annotate python3 curl
PROF="$OUT/profile"
mkdir -p "$RAW" "$TMPD" "$PROF"
rm -f "$PROF"/*
build_all

# start_callgrind NAME DIR: like start_registry, under valgrind.
start_callgrind() {
    local name=$1 dir=$2 i
    local err="$RAW/$name.stderr"
    valgrind --tool=callgrind --callgrind-out-file="$PROF/$name.%p.out" \
        --separate-threads=no --dump-instr=no "$BIN" --config "$dir/config.toml" 2>"$err" >/dev/null &
    SPID=$!
    PERF_PIDS+=("$SPID")
    for i in $(seq 1 600); do
        if grep -q 'role=write-plane' "$err" 2>/dev/null; then
            RA=$(grep -o 'role=read-plane registry_addr=[^ ]*' "$err" | head -1 | sed 's/.*=//')
            MA=$(grep -o 'role=read-plane .*metrics_addr=[^ ]*' "$err" | head -1 | sed 's/.*metrics_addr=//')
            return 0
        fi
        sleep 0.1
    done
    log "callgrind server $name not ready"; tail "$err" >&2; return 1
}

annotate() {
    local name=$1 f
    f=$(ls "$PROF/$name".*.out* | grep -v '\.txt$' | sort | tail -1)
    callgrind_annotate --inclusive=no --threshold=100 "$f" 2>/dev/null | sed -n "24,90p" >"$PROF/$name-exclusive.txt"
    callgrind_annotate --inclusive=yes --threshold=100 "$f" 2>/dev/null | sed -n "24,100p" >"$PROF/$name-inclusive.txt"
    callgrind_annotate "$f" 2>/dev/null | grep 'PROGRAM TOTALS' | awk '{gsub(",","",$1); print $1}'
}

: >"$PROF/summary.txt"

log "read path under callgrind"
write_config "$TMPD/prof-read" 1 1 batch
start_callgrind read "$TMPD/prof-read"
"$LG" fill --addr "$RA" --descriptors 1000 --ops 100 >/dev/null
callgrind_control --zero "$SPID" >/dev/null 2>&1
"$LG" conncheck --addr "$RA" --path /registry/head --conns 8 --secs 10 >"$PROF/read-load.json"
callgrind_control --dump=after-load "$SPID" >/dev/null 2>&1
stop_registry
n=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(int(d["rps"]*d["secs"]))' "$PROF/read-load.json")
ir=$(annotate read)
echo "read path: $ir instructions for $n GET /registry/head = $((ir / n)) per request" | tee -a "$PROF/summary.txt"

log "commit path under callgrind"
write_config "$TMPD/prof-commit" 2 3 batch
start_callgrind commit "$TMPD/prof-commit"
callgrind_control --zero "$SPID" >/dev/null 2>&1
"$LG" writes --addr "$RA" --clients 8 --secs 10 --signers 3 --threshold 2 --max-proposals 20000 >"$PROF/commit-load.json"
callgrind_control --dump=after-load "$SPID" >/dev/null 2>&1
stop_registry
n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits"])' "$PROF/commit-load.json")
o=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["overtaken_retries"])' "$PROF/commit-load.json")
ir=$(annotate commit)
echo "commit path: $ir instructions for $n commits (+$o overtaken commit retries), 2-of-3 = $((ir / n)) per commit (propose + 2 approvals + commit, verification included)" | tee -a "$PROF/summary.txt"

log "submit path under callgrind"
write_config "$TMPD/prof-submit" 2 3 batch
start_callgrind submit "$TMPD/prof-submit"
callgrind_control --zero "$SPID" >/dev/null 2>&1
"$LG" writes --addr "$RA" --clients 8 --secs 10 --signers 3 --threshold 2 --flow submit --max-proposals 20000 >"$PROF/submit-load.json"
callgrind_control --dump=after-load "$SPID" >/dev/null 2>&1
stop_registry
n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits"])' "$PROF/submit-load.json")
o=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["overtaken_retries"])' "$PROF/submit-load.json")
ir=$(annotate submit)
echo "submit path: $ir instructions for $n submits (+$o overtaken retries), 2-of-3 = $((ir / n)) per write (one request, verification included)" | tee -a "$PROF/summary.txt"
rm -rf "$TMPD/prof-read" "$TMPD/prof-commit" "$TMPD/prof-submit"
log "wrote $PROF"
