#!/usr/bin/env bash
# perf/run.sh [--quick] [--only SECTION[,SECTION...]]
#
# The end-to-end performance harness of issue 7 (and the benchmark paragraphs of issues 4 and 5).
# Builds the release binaries and perf/loadgen, installs wrk, nginx, etcd, fio from Debian if
# missing, runs every measurement against 127.0.0.1 only, bounded in time, stops every process it
# started (by PID), and writes:
#
#   perf/out/results.md   the Markdown table (goals marked met / MISSED)
#   perf/out/raw/         every raw output (wrk text, loadgen/fio JSON, server logs)
#
# Sections: reads, writes, stream, startup, footprint, history, tls, pq, auth. --quick shortens every run (2 s instead of
# 5 s, one round instead of two) and skips the 1M and 100k-version data sets. Full run ≈ 11–14 min
# (pq alone ≈ 2.5 min), --quick ≈ 3.5 min, on 2 cores (plus the build). Add --only SECTION,... to run some sections.
# Section tlog (issue 19) runs only when named: --only tlog (≈ 1.5 min, --quick ≈ 45 s).
# `retention` (issue 21) runs only when named (--only retention): perf/retention_measure.rs
# (an amnesiac follower and an authority with retain_versions = 10000 through RETENTION_N
# single-op commits, default 200,000, 40,000 with --quick; ≈ 3 min) and commit p99 with the
# window on vs off, side by side (small segments so drops happen during the measurement).
# PERF_PREBUILT=1 with PERF_BIN and PERF_LG runs binaries built elsewhere (no build here).
# `follow` (issue 15: follower catch-up and commit → follower latency) runs only when named
# (--only follow): it builds perf/follow_measure.rs as a release test binary (FOLLOW_N versions,
# default 100,000, 20,000 with --quick; ≈ 3 min plus the build).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

QUICK=0
ONLY="reads,writes,stream,startup,footprint,history,tls,pq,auth"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --only) ONLY=$2; shift ;;
        *) echo "usage: perf/run.sh [--quick] [--only reads,writes,stream,startup,footprint,history,tls,pq,auth,follow,tlog,retention]" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

if [ $QUICK = 1 ]; then D=2; ROUNDS=1; WD=2; else D=5; ROUNDS=2; WD=5; fi

trap 'stop_all' EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Only the tools the chosen sections use (a partial run installs nothing it does not need).
tools=(python3 curl)
if want reads; then tools+=(wrk nginx etcd etcdctl); fi
if want writes; then tools+=(etcd etcdctl fio); fi
if want pq; then tools+=(fio); fi
if want startup || want footprint; then tools+=(strip); fi
if want history; then tools+=(wrk); fi
if want tls; then tools+=(wrk nginx openssl); fi
if want auth; then tools+=(wrk); fi
if want tlog; then tools+=(wrk nginx); fi
ensure_tools "${tools[@]}"
mkdir -p "$RAW" "$TMPD"
# A partial run (--only) keeps the other sections' raw files, so the report stays whole.
if [ "$ONLY" = "reads,writes,stream,startup,footprint,history,tls,pq,auth" ]; then rm -rf "${RAW:?}"/*; fi
rm -rf "${TMPD:?}"/*
build_all
if [ "$ONLY" != "reads,writes,stream,startup,footprint,history,tls,pq,auth" ] && [ -f "$RAW/env.txt" ]; then
    echo "re-run of $ONLY: $(date -u +%FT%TZ), git $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null), loadavg at start $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/env.txt"
else {
    echo "date: $(date -u +%FT%TZ)"
    echo "quick: $QUICK"
    echo "nproc: $(nproc)"
    echo "kernel: $(uname -srm)"
    lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|Hypervisor|L2|L3)' | sed 's/  */ /g'
    echo "rustc: $(rustc --version)"
    echo "git: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo none)"
    echo "loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$RAW/env.txt"
fi

# ---------------------------------------------------------------- reads
if want reads; then
    log "reads: server with 1,000 descriptors in 10 versions of 100 ops, then 5 of 1 op"
    write_config "$TMPD/reads" 1 1 batch
    start_registry reads "$TMPD/reads"
    "$LG" fill --addr "$RA" --descriptors 1000 --ops 100 >"$RAW/reads-fill.json"
    # Five single-op versions (11..15): a typical commit record.
    "$LG" fill --addr "$RA" --descriptors 5 --ops 1 >>"$RAW/reads-fill.json"
    www="$TMPD/www"
    mkdir -p "$www"
    declare -A OURS=([head]=/registry/head [version]=/registry/13 [version100]=/registry/5 [descriptor]=/registry/descriptors/node/node-00000042)
    for p in head version version100 descriptor; do
        curl -fs "http://$RA${OURS[$p]}" >"$www/$p.json"
    done
    start_nginx "$www"
    start_etcd
    for p in head version version100 descriptor; do
        key=$(printf 'perf/%s' "$p" | base64 -w0)
        val=$(base64 -w0 <"$www/$p.json")
        curl -fs -X POST "http://$ETCD_ADDR/v3/kv/put" -d "{\"key\":\"$key\",\"value\":\"$val\"}" >/dev/null
        echo "{\"key\":\"$key\"}" >"$TMPD/etcd-$p.body"
        wc -c <"$www/$p.json" | tr -d ' ' >"$RAW/bytes-$p.txt"
        curl -fs -X POST "http://$ETCD_ADDR/v3/kv/range" -d "@$TMPD/etcd-$p.body" | wc -c | tr -d ' ' >"$RAW/bytes-etcd-$p.txt"
    done
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="ours nginx etcd"; else order="etcd nginx ours"; fi
        for p in head version version100 descriptor; do
            for c in 64 1000; do
                for srv in $order; do
                    f="$RAW/wrk-$p-c$c-$srv-r$round.txt"
                    case $srv in ours) cpid=$SPID ;; nginx) cpid=$NGINX_PID ;; etcd) cpid=$ETCD_PID ;; esac
                    cpu0=$(python3 "$ROOT/perf/cpu.py" "$cpid")
                    case $srv in
                        ours) wrk -t2 -c$c -d${D}s --timeout 5s --latency "http://$RA${OURS[$p]}" >"$f" 2>&1 ;;
                        nginx) wrk -t2 -c$c -d${D}s --timeout 5s --latency "http://$NGINX_ADDR/$p.json" >"$f" 2>&1 ;;
                        etcd) WRK_BODY="$(cat "$TMPD/etcd-$p.body")" wrk -t2 -c$c -d${D}s --timeout 5s --latency \
                            -s "$ROOT/perf/wrk/post.lua" "http://$ETCD_ADDR/v3/kv/range" >"$f" 2>&1 ;;
                    esac
                    echo "server_cpu_s $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$cpu0" "$(python3 "$ROOT/perf/cpu.py" "$cpid")")" >>"$f"
                    log "reads $p c=$c $srv r$round: $(grep Requests/sec "$f" | tr -s ' ')"
                done
            done
        done
    done
    # Per-connection service (wrk's Lua API has no connection identity, so loadgen counts).
    for c in 64 1000; do
        "$LG" conncheck --addr "$RA" --path /registry/head --conns $c --secs $D >"$RAW/conncheck-ours-c$c.json"
        "$LG" conncheck --addr "$NGINX_ADDR" --path /head.json --conns $c --secs $D >"$RAW/conncheck-nginx-c$c.json"
        log "conncheck c=$c ours: $(cat "$RAW/conncheck-ours-c$c.json")"
    done
    curl -fs "http://$MA/metrics" >"$RAW/reads-metrics.txt" || true
    stop_pid "$ETCD_PID"; forget_pid "$ETCD_PID"
    stop_pid "$NGINX_PID"; forget_pid "$NGINX_PID"
    stop_registry
fi

# ---------------------------------------------------------------- writes
if want writes; then
    log "writes: fio fdatasync latency of the disk under $TMPD"
    mkdir -p "$TMPD/fio"
    fio --name=append-fdatasync --directory="$TMPD/fio" --rw=write --bs=4k --size=256m \
        --fdatasync=1 --ioengine=sync --runtime=$((WD > 3 ? 4 : 2)) --time_based \
        --output-format=json >"$RAW/fio-append.json" 2>"$RAW/fio-append.stderr"
    rm -f "$TMPD"/fio/*
    fio --name=overwrite-fdatasync --directory="$TMPD/fio" --rw=write --bs=4k --size=16m \
        --overwrite=1 --fdatasync=1 --ioengine=sync --runtime=$((WD > 3 ? 4 : 2)) --time_based \
        --output-format=json >"$RAW/fio-overwrite.json" 2>"$RAW/fio-overwrite.stderr"
    rm -rf "$TMPD/fio"
    fio_after() {
        mkdir -p "$TMPD/fio"
        fio --name=append-fdatasync --directory="$TMPD/fio" --rw=write --bs=4k --size=256m \
            --fdatasync=1 --ioengine=sync --runtime=$((WD > 3 ? 4 : 2)) --time_based \
            --output-format=json >"$RAW/fio-append-after.json" 2>"$RAW/fio-append-after.stderr"
        rm -rf "$TMPD/fio"
    }
    for fsync in batch always; do
        for q in 2of3 5of7; do
            m=${q%of*}; n=${q#*of}
            dir="$TMPD/w-$fsync-$q"
            write_config "$dir" "$m" "$n" "$fsync"
            start_registry "w-$fsync-$q" "$dir"
            for c in 1 16 64; do
                "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients $c --secs $WD \
                    --signers "$n" --threshold "$m" --max-proposals $((WD * 5000)) \
                    >"$RAW/writes-$fsync-$q-c$c.json"
                log "writes $fsync $q C=$c: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commits_per_s"], "commits/s p99", d["commit_latency"]["p99_ms"], "ms batch", d["server"].get("mean_batch"))' "$RAW/writes-$fsync-$q-c$c.json")"
            done
            if [ "$fsync-$q" = batch-2of3 ]; then
                # The same point as one request per write: /submit of an envelope with both
                # signatures.
                "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients 64 --secs $WD \
                    --signers "$n" --threshold "$m" --flow submit \
                    --max-proposals $((WD * 8000)) >"$RAW/writes-submit-2of3-c64.json"
                log "writes batch 2of3 C=64 /submit: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commits_per_s"], "writes/s p99", d["commit_latency"]["p99_ms"], "ms")' "$RAW/writes-submit-2of3-c64.json")"
            fi
            stop_registry
            rm -rf "$dir/data"
        done
    done
    log "writes: uncoordinated committers (contended), 2-of-3 batch, C=16"
    dir="$TMPD/w-contended"
    write_config "$dir" 2 3 batch
    start_registry w-contended "$dir"
    "$LG" writes --mode contended --addr "$RA" --metrics "$MA" --clients 16 --secs $WD \
        --signers 3 --threshold 2 >"$RAW/writes-contended-c16.json"
    stop_registry
    rm -rf "$dir/data"
    log "writes: 1-of-1 quorum vs etcd durable puts"
    dir="$TMPD/w-1of1"
    write_config "$dir" 1 1 batch
    start_registry w-1of1 "$dir"
    start_etcd
    for c in 1 16 64; do
        "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients $c --secs $WD --signers 1 --threshold 1 \
            --max-proposals $((WD * 6000)) >"$RAW/writes-1of1-c$c.json"
        "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients $c --secs $WD --signers 1 --threshold 1 \
            --flow submit --max-proposals $((WD * 9000)) >"$RAW/writes-submit-1of1-c$c.json"
        if [ $c != 1 ]; then
            # Free send order: the writer, not the clients, puts the submits in order (it holds
            # one that arrives before its predecessor).
            "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients $c --secs $WD --signers 1 --threshold 1 \
                --flow submit --send-order free --max-proposals $((WD * 12000)) >"$RAW/writes-submitfree-1of1-c$c.json"
        fi
        "$LG" etcd-puts --addr "$ETCD_ADDR" --pid "$ETCD_PID" --clients $c --secs $WD >"$RAW/etcd-puts-c$c.json"
        log "1of1 C=$c: ours $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits_per_s"])' "$RAW/writes-1of1-c$c.json")/s, /submit $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits_per_s"])' "$RAW/writes-submit-1of1-c$c.json")/s (free order $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["commits_per_s"])' "$RAW/writes-submitfree-1of1-c$c.json" 2>/dev/null || echo -)/s), etcd $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["puts_per_s"])' "$RAW/etcd-puts-c$c.json")/s"
    done
    stop_pid "$ETCD_PID"; forget_pid "$ETCD_PID"
    stop_registry
    rm -rf "$dir/data" "$TMPD/etcd"
    log "writes: verify_strict on one thread (yardstick)"
    "$LG" verifyloop --secs 2 >"$RAW/verifyloop.json"
fi

# ---------------------------------------------------------------- stream
if want stream; then
    dir="$TMPD/stream"
    write_config "$dir" 1 1 batch
    start_registry stream "$dir"
    if [ $QUICK = 1 ]; then K=40; else K=150; fi
    for n in 1 100 1000; do
        "$LG" stream --addr "$RA" --subscribers $n --commits $K --interval-ms 20 --pid "$SPID" \
            >"$RAW/stream-n$n.json"
        log "stream n=$n: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("ack->event p50", d["ack_to_event"]["p50_ms"], "p99", d["ack_to_event"]["p99_ms"], "missing", d["events_missing"], "sse us/event", d["cpu"].get("sse_us_per_event"))' "$RAW/stream-n$n.json")"
    done
    curl -fs "http://$MA/metrics" >"$RAW/stream-metrics.txt" || true
    stop_registry
    rm -rf "$dir/data"
fi

# ---------------------------------------------------------------- startup + footprint
# coldstart DIR NAME [EXPECT] [FLAGS]: three cold starts, raw JSON lines.
coldstart() {
    local dir=$1 name=$2 expect=${3:-} flags=${4:-} i
    : >"$RAW/coldstart-$name.jsonl"
    for i in 1 2 3; do
        sync
        "$LG" coldstart --bin "$BIN" --config "$dir/config.toml" --expect-version "$expect" \
            --flags "$flags" >>"$RAW/coldstart-$name.jsonl"
    done
    log "coldstart $name: $(python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; print(sorted(x["first_head_ms"] for x in r), "ms; rss", r[-1]["idle_rss_kb"], "kB")' "$RAW/coldstart-$name.jsonl")"
}

# fill_dir DIR N [OPS]: a data dir with N descriptors (fsync=never while filling, OPS = 1,000
# puts per proposal by default), shut down cleanly (durable + final checkpoint); sets
# FILL_VERSION to its head.
# Build perf/NAME.rs, a test of the main crate (it reuses tests/common), as a release test binary:
# copied into tests/ for the build and removed again. Prints the executable's path; exits the run
# status 1 if it does not build. SECTION names the section in the log.
harness() {
    local name=$1 section=$2 src="$ROOT/tests/zz_$1.rs" bin
    cp "$ROOT/perf/$name.rs" "$src"
    log "$section: building perf/$name.rs (release test binary)"
    bin=$(cd "$ROOT" && cargo test --release --test "zz_$name" --no-run --message-format=json 2>/dev/null \
        | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "zz_$name") || true
    rm -f "$src"
    [ -n "$bin" ] || { log "$section: the harness did not build"; return 1; }
    echo "$bin"
}

fill_dir() {
    local dir=$1 n=$2 ops=${3:-1000}
    write_config "$dir" 1 1 never
    start_registry "fill-$n-$ops" "$dir"
    "$LG" fill --addr "$RA" --descriptors "$n" --ops "$ops" >"$RAW/fill-$n-$ops.json"
    stop_registry
    write_config "$dir" 1 1 batch
    FILL_VERSION=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$RAW/fill-$n-$ops.json")
    log "filled $dir: $(cat "$RAW/fill-$n-$ops.json")"
}

if want startup || want footprint; then
    log "startup: empty"
    dir="$TMPD/s-empty"
    write_config "$dir" 1 1 batch
    coldstart "$dir" empty 0
    coldstart "$dir" amnesia 0 --amnesia
    log "startup: 50k descriptors"
    dir50="$TMPD/s-50k"
    fill_dir "$dir50" 50000
    v50=$FILL_VERSION
    coldstart "$dir50" 50k "$v50"
    # Log-only replay: the same data dir without its checkpoints.
    cp -a "$dir50" "$TMPD/s-50k-nockpt"
    sed -i "s#$dir50/data#$TMPD/s-50k-nockpt/data#" "$TMPD/s-50k-nockpt/config.toml"
    rm -f "$TMPD/s-50k-nockpt/data/checkpoints/"*
    coldstart "$TMPD/s-50k-nockpt" 50k-log-only "$v50"
    # restore-50k: a hot backup (ronctl backup) of the running 50k server, started as a new
    # data dir.
    start_registry backup-50k "$dir50"
    rm -rf "$TMPD/s-50k-restore"
    mkdir -p "$TMPD/s-50k-restore"
    "$RONCTL" --url "http://$RA" --admin-url "http://$MA" backup --to "$TMPD/s-50k-restore/data" >"$RAW/backup-50k.txt" 2>&1
    stop_registry
    write_config "$TMPD/s-50k-restore" 1 1 batch
    coldstart "$TMPD/s-50k-restore" restore-50k "$v50"
    du -sk "$dir50/data" >"$RAW/du-50k.txt"
    if [ $QUICK = 0 ]; then
        log "startup: 1M descriptors (fill takes a while)"
        dir1m="$TMPD/s-1m"
        fill_dir "$dir1m" 1000000
        v1m=$FILL_VERSION
        coldstart "$dir1m" 1m "$v1m"
        du -sk "$dir1m/data" >"$RAW/du-1m.txt"
        rm -rf "$dir1m"
        # The previous build (PERF_PREV_BIN) in the same run, on a data dir it filled itself
        # (the same fill): a checkpoint that carries pending frames (issue 14) has a member a
        # previous build does not know, so it would refuse it and replay the whole log.
        if [ -n "${PERF_PREV_BIN:-}" ]; then
            BIN_SAVED=$BIN; BIN=$PERF_PREV_BIN
            fill_dir "$dir1m" 1000000
            coldstart "$dir1m" 1m-previous "$FILL_VERSION"
            BIN=$BIN_SAVED
            rm -rf "$dir1m"
        fi
        log "startup: 100k single-op versions (history-heavy shape)"
        dirv="$TMPD/s-100k-v"
        fill_dir "$dirv" 100000 1
        coldstart "$dirv" 100k-versions "$FILL_VERSION"
        du -sk "$dirv/data" >"$RAW/du-100k-versions.txt"
        rm -rf "$dirv"
    fi
    rm -rf "$dir50" "$TMPD/s-50k-nockpt" "$TMPD/s-50k-restore" "$dir"
    strip -o "$TMPD/svc-registry.stripped" "$BIN"
    stat -c %s "$TMPD/svc-registry.stripped" >"$RAW/binary-stripped-bytes.txt"
    stat -c %s "$BIN" >"$RAW/binary-bytes.txt"
fi

# ---------------------------------------------------------------- history
# Memory with long histories (issue 14), side by side with the previous build in one run:
# RssAnon and VmRSS growth per single-op commit on one descriptor, /registry/{version} RPS,
# read-ready with the history. The previous build is PERF_PREV_BIN if set, else built from
# PERF_PREV_REV (default: the commit before history moved off the heap) into $OUT/prev-target.
if want history; then
    if [ -n "${PERF_PREV_BIN:-}" ]; then
        PREV_BIN=$PERF_PREV_BIN
    else
        rev=${PERF_PREV_REV:-$(cd "$ROOT" && git log --diff-filter=A --format=%H -- src/history.rs | tail -1)~1}
        log "history: building the previous release ($rev) into $OUT/prev-target"
        rm -rf "$TMPD/prev-src"; mkdir -p "$TMPD/prev-src"
        (cd "$ROOT" && git archive "$rev") | tar -x -C "$TMPD/prev-src"
        (cd "$TMPD/prev-src" && CARGO_TARGET_DIR="$OUT/prev-target" cargo build --release -q --bin svc-registry)
        PREV_BIN="$OUT/prev-target/release/svc-registry"
    fi
    # Warm-up past the bounded per-commit memories (the writer remembers the last 16,384
    # committed proposal ids; the stream keeps 4,096 formatted events), so what is measured is
    # growth with history itself. The first 10,000 commits from start are reported as well.
    if [ $QUICK = 1 ]; then HN=2000; WARM=17000; else HN=10000; WARM=17000; fi
    cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
    # wrk_cpu NAME URL: wrk -c64 with the server's CPU time around it (requests per CPU-second
    # is what a shared, noisy box measures reliably; RPS is reported too).
    wrk_cpu() {
        local c0 c1
        c0=$(cpu_ticks "$SPID")
        wrk -t2 -c64 -d${D}s "$2" >"$RAW/history-$1.txt" 2>&1
        c1=$(cpu_ticks "$SPID")
        echo "server_cpu_s $(python3 -c "print(($c1 - $c0) / $(getconf CLK_TCK))")" >>"$RAW/history-$1.txt"
    }
    for which in prev cur; do
        if [ $which = prev ]; then run_bin=$PREV_BIN; else run_bin=$BIN; fi
        dir="$TMPD/h-$which"
        rm -rf "$dir"
        write_config "$dir" 1 1 never
        BIN_SAVED=$BIN; BIN=$run_bin
        start_registry "history-$which" "$dir"
        rss_status "$SPID" >"$RAW/history-$which-start.txt"
        "$LG" fill --addr "$RA" --descriptors 10000 --ops 1 --same-id 1 >"$RAW/history-$which-first.json"
        rss_status "$SPID" >"$RAW/history-$which-first10k.txt"
        "$LG" fill --addr "$RA" --descriptors $((WARM - 10000)) --ops 1 --same-id 1 >/dev/null
        rss_status "$SPID" >"$RAW/history-$which-before.txt"
        "$LG" fill --addr "$RA" --descriptors "$HN" --ops 1 --same-id 1 >"$RAW/history-$which-fill.json"
        rss_status "$SPID" >"$RAW/history-$which-after.txt"
        wrk_cpu "$which-version-wrk" "http://$RA/registry/$((WARM + HN / 2))"
        # One 100-op record (≈ 15 KB), the record size of the reads section.
        "$LG" fill --addr "$RA" --descriptors 100 --ops 100 >/dev/null
        wrk_cpu "$which-version100-wrk" "http://$RA/registry/$((WARM + HN + 1))"
        stop_registry
        write_config "$dir" 1 1 batch
        coldstart "$dir" "history-$which" "$((WARM + HN + 1))"
        BIN=$BIN_SAVED
        log "history $which: $(python3 "$ROOT/perf/report.py" --history-line "$RAW" "$which" "$WARM")"
        rm -rf "$dir"
    done
fi

# ---------------------------------------------------------------- tls
# Issue 16: /registry/head over TLS with keep-alive, ours vs nginx serving the same bytes with
# the same certificate (one self-signed ECDSA P-256 certificate made here with openssl), at 64
# and 1,000 connections; then new TLS handshakes per second (`Connection: close`: every request
# a new connection and a new handshake) at 64. Alternated order, server CPU around every run.
if want tls; then
    tlsd="$TMPD/tls"
    rm -rf "$tlsd"; mkdir -p "$tlsd/www"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$tlsd/key.pem" -out "$tlsd/cert.pem" 2>"$RAW/tls-openssl.stderr"
    openssl x509 -in "$tlsd/cert.pem" -noout -text | grep -E 'Public Key Algorithm|ASN1 OID' >"$RAW/tls-cert.txt"
    write_config "$tlsd/ours" 1 1 batch "[tls]
cert_file = \"$tlsd/cert.pem\"
key_file = \"$tlsd/key.pem\""
    start_registry tls "$tlsd/ours"
    curl -fs --cacert "$tlsd/cert.pem" "https://$RA/registry/head" >"$tlsd/www/head.json"
    wc -c <"$tlsd/www/head.json" | tr -d ' ' >"$RAW/tls-bytes-head.txt"
    start_nginx "$tlsd/www" "$tlsd/cert.pem" "$tlsd/key.pem"
    # What each side negotiates with a default client (protocol, cipher, key exchange).
    for srv in ours nginx; do
        case $srv in ours) a=$RA ;; nginx) a=$NGINX_ADDR ;; esac
        echo | openssl s_client -connect "$a" -CAfile "$tlsd/cert.pem" 2>/dev/null \
            | grep -E '^(New|Protocol|Cipher|Server Temp Key|Verify return code)|Negotiated TLS1.3 group' >"$RAW/tls-negotiated-$srv.txt" || true
    done
    # tls_wrk FILE SRV SECS ARGS...: wrk against SRV's head for SECS seconds with the server's
    # CPU time around it.
    tls_wrk() {
        local f=$1 srv=$2 secs=$3 cpid url cpu0
        shift 3
        case $srv in
            ours) cpid=$SPID; url="https://$RA/registry/head" ;;
            nginx) cpid=$NGINX_PID; url="https://$NGINX_ADDR/head.json" ;;
        esac
        cpu0=$(python3 "$ROOT/perf/cpu.py" "$cpid")
        wrk -t2 -d${secs}s --timeout 5s --latency "$@" "$url" >"$f" 2>&1 || true
        echo "server_cpu_s $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$cpu0" "$(python3 "$ROOT/perf/cpu.py" "$cpid")")" >>"$f"
    }
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="ours nginx"; else order="nginx ours"; fi
        for c in 64 1000; do
            # wrk counts from the start, while its connections still handshake: at 1,000 that
            # is 1,000 handshakes (about a second of both cores on this box, more when it is
            # loaded), so those runs are three times longer to keep it a small part of them.
            secs=$D
            [ $c = 1000 ] && secs=$((D * 3))
            for srv in $order; do
                f="$RAW/tls-wrk-head-c$c-$srv-r$round.txt"
                tls_wrk "$f" "$srv" "$secs" -c$c
                log "tls head c=$c $srv r$round: $(grep Requests/sec "$f" | tr -s ' ')"
            done
        done
        for srv in $order; do
            f="$RAW/tls-wrk-handshake-c64-$srv-r$round.txt"
            tls_wrk "$f" "$srv" "$D" -c64 -H 'Connection: close'
            log "tls handshakes c=64 $srv r$round: $(grep Requests/sec "$f" | tr -s ' ')"
        done
    done
    curl -fs --cacert "$tlsd/cert.pem" "https://$MA/metrics" | grep '^registry_tls_' >"$RAW/tls-metrics.txt" || true
    stop_pid "$NGINX_PID"; forget_pid "$NGINX_PID"
    stop_registry
fi

# ---------------------------------------------------------------- auth (issue 16)
# What capabilities cost a plaintext /registry/head read: three servers side by side — no
# [auth]; [auth] with the default require (reads stay open: no token is looked at); [auth] with
# "read" required and every request carrying the same token (a worker verifies its signature
# once, then judges its caveats per request) — alternated, with each server's CPU time; and the
# first server again sent that Authorization header, which it ignores (the cost of the longer
# request, apart from the token's check).
if want auth; then
    authd="$TMPD/auth"
    rm -rf "$authd"; mkdir -p "$authd"
    printf '[[keys]]\nid = "perf"\nsecret = "%s"\n' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$authd/keys.toml"
    chmod 600 "$authd/keys.toml"
    token=$("$RONCTL" cap mint --keys-file "$authd/keys.toml" --key-id perf --scope read --registry perf-registry)
    declare -A APID AADDR
    for mode in off open read; do
        case $mode in
            off) extra="" ;;
            open) extra="[auth]
keys_file = \"$authd/keys.toml\"" ;;
            read) extra="[auth]
keys_file = \"$authd/keys.toml\"
require = [\"propose\", \"approve\", \"commit\", \"admin\", \"read\"]" ;;
        esac
        write_config "$authd/$mode" 1 1 batch "$extra"
        start_registry "auth-$mode" "$authd/$mode"
        APID[$mode]=$SPID; AADDR[$mode]=$RA
    done
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="off hdr open read"; else order="read open hdr off"; fi
        for mode in $order; do
            f="$RAW/auth-wrk-head-c64-$mode-r$round.txt"
            # hdr: the server without [auth], sent the same Authorization header (ignored), so
            # that the cost of a longer request is not counted as the token's.
            srv=$mode; [ $mode = hdr ] && srv=off
            cpu0=$(python3 "$ROOT/perf/cpu.py" "${APID[$srv]}")
            if [ $mode = read ] || [ $mode = hdr ]; then
                wrk -t2 -c64 -d${D}s --timeout 5s --latency -H "Authorization: Bearer $token" \
                    "http://${AADDR[$srv]}/registry/head" >"$f" 2>&1 || true
            else
                wrk -t2 -c64 -d${D}s --timeout 5s --latency "http://${AADDR[$srv]}/registry/head" >"$f" 2>&1 || true
            fi
            echo "server_cpu_s $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$cpu0" "$(python3 "$ROOT/perf/cpu.py" "${APID[$srv]}")")" >>"$f"
            log "auth head c=64 $mode r$round: $(grep Requests/sec "$f" | tr -s ' ')"
        done
    done
    for mode in off open read; do stop_pid "${APID[$mode]}"; forget_pid "${APID[$mode]}"; done
fi

# ---------------------------------------------------------------- pq
# Issue 18: durable commits/s with hybrid (ed25519+ML-DSA-65) signer keys beside ed25519 in one
# run, 2-of-3 and 5-of-7, fsync batch, pipelined three-step committers at C=16 and 64, with the
# server's CPU per commit by thread (verify / HTTP workers / writer / fsync; loadgen reads
# /proc/PID/task/*/schedstat around the run). The algorithms alternate order per quorum so a
# drifting load on a shared box does not favour one. Signatures are made before the clock starts
# (hybrid signing is ≈ 2 ms each), so fewer tickets are prepared for hybrid runs; a run that
# uses them all up ends early and its rate is still commits over the time to its last ack.
if want pq; then
    log "pq: fio fdatasync latency of the disk under $TMPD"
    mkdir -p "$TMPD/fio"
    fio --name=append-fdatasync --directory="$TMPD/fio" --rw=write --bs=4k --size=256m \
        --fdatasync=1 --ioengine=sync --runtime=$((WD > 3 ? 4 : 2)) --time_based \
        --output-format=json >"$RAW/pq-fio-append.json" 2>"$RAW/pq-fio-append.stderr"
    rm -rf "$TMPD/fio"
    for q in 2of3 5of7; do
        m=${q%of*}; n=${q#*of}
        if [ "$q" = 2of3 ]; then algs="ed25519 hybrid"; else algs="hybrid ed25519"; fi
        for alg in $algs; do
            if [ "$alg" = ed25519 ]; then tickets=$((WD * 5000)); else tickets=$((WD * 1200)); fi
            dir="$TMPD/pq-$alg-$q"
            SIGNER_ALG=$alg write_config "$dir" "$m" "$n" batch
            start_registry "pq-$alg-$q" "$dir"
            for c in 16 64; do
                "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients $c --secs $WD \
                    --signers "$n" --threshold "$m" --alg "$alg" --max-proposals $tickets \
                    >"$RAW/pq-$alg-$q-c$c.json"
                log "pq $alg $q C=$c: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commits_per_s"], "commits/s p99", d["commit_latency"]["p99_ms"], "ms; server CPU us/commit", d["cpu"].get("us_per_commit"), d["cpu"].get("by_thread_us"), "errors", d["error_count"])' "$RAW/pq-$alg-$q-c$c.json")"
            done
            curl -fs "http://$MA/metrics" | grep '^approval_verify_seconds' >"$RAW/pq-$alg-$q-metrics.txt" || true
            stop_registry
            rm -rf "$dir"
        done
    done
fi

# ---------------------------------------------------------------- follow (issue 15)
# perf/follow_measure.rs (see its header): an authority with FOLLOW_N versions (2-of-3), a fresh
# durable and a fresh --amnesia follower timed to its head (CPU per version by thread, RssAnon),
# then 500 commits at 100/s acknowledged → announced by the follower and its follower. It is a
# test of the main crate (it reuses tests/common), so it is copied into tests/ for the build and
# removed again.
if want follow; then
    if [ $QUICK = 1 ]; then FN=${FOLLOW_N:-20000}; else FN=${FOLLOW_N:-100000}; fi
    fbin=$(harness follow_measure follow) || exit 1
    rm -f "$RAW/follow.txt"
    log "follow: $FN versions, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    SVC_REGISTRY_BIN="$BIN" N=$FN FOLLOW_OUT="$RAW/follow.txt" TMPDIR="$TMPD" \
        "$fbin" --nocapture >"$RAW/follow-stdout.txt" 2>"$RAW/follow-stderr.txt"
    while read -r line; do log "follow: $line"; done <"$RAW/follow.txt"
fi

# ---------------------------------------------------------------- tlog
# Issue 19: the transparency log's cost and its read routes. Writer: durable commits/s, 2-of-3,
# fsync batch, C=64, with the tree on and off ([log] enabled), alternating order per round, in
# one run. Reads: inclusion proofs of random versions at 64 connections (wrk + Lua), and a full
# level-0 tile from us vs nginx serving the same 8 KiB file.
if want tlog; then
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="on off"; else order="off on"; fi
        for mode in $order; do
            dir="$TMPD/tlog-$mode"
            if [ "$mode" = on ]; then enabled=true; else enabled=false; fi
            write_config "$dir" 2 3 batch "[log]
enabled = $enabled"
            start_registry "tlog-$mode-r$round" "$dir"
            "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients 64 --secs $WD \
                --signers 3 --threshold 2 --max-proposals $((WD * 5000)) \
                >"$RAW/tlog-writes-$mode-r$round.json"
            log "tlog writes tree $mode r$round: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commits_per_s"], "commits/s p99", d["commit_latency"]["p99_ms"], "ms")' "$RAW/tlog-writes-$mode-r$round.json")"
            stop_registry
            rm -rf "$dir"
        done
    done
    dir="$TMPD/tlog-reads"
    write_config "$dir" 1 1 batch
    start_registry tlog-reads "$dir"
    "$LG" fill --addr "$RA" --descriptors 2000 --ops 1 >"$RAW/tlog-fill.json"
    size=$(( $(curl -fs "http://$RA/registry/head" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])') + 1 ))
    for i in $(seq 1 100); do
        [ "$(curl -fs "http://$RA/registry/checkpoint" | sed -n 2p)" = "$size" ] && break
        sleep 0.1
    done
    www="$TMPD/tlog-www"
    mkdir -p "$www"
    curl -fs "http://$RA/registry/tile/0/000" >"$www/tile-0-000"
    echo "$size" >"$RAW/tlog-size.txt"
    start_nginx "$www"
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="ours nginx"; else order="nginx ours"; fi
        for srv in $order; do
            f="$RAW/wrk-tlog-tile-$srv-r$round.txt"
            case $srv in ours) cpid=$SPID; url="http://$RA/registry/tile/0/000" ;; nginx) cpid=$NGINX_PID; url="http://$NGINX_ADDR/tile-0-000" ;; esac
            cpu0=$(python3 "$ROOT/perf/cpu.py" "$cpid")
            wrk -t2 -c64 -d${D}s --timeout 5s --latency "$url" >"$f" 2>&1
            echo "server_cpu_s $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$cpu0" "$(python3 "$ROOT/perf/cpu.py" "$cpid")")" >>"$f"
            log "tlog full tile $srv r$round: $(grep Requests/sec "$f" | tr -s ' ')"
        done
        f="$RAW/wrk-tlog-proof-r$round.txt"
        cpu0=$(python3 "$ROOT/perf/cpu.py" "$SPID")
        TLOG_SIZE=$size wrk -t2 -c64 -d${D}s --timeout 5s --latency -s "$ROOT/perf/wrk/tlog_proof.lua" "http://$RA" >"$f" 2>&1
        echo "server_cpu_s $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))' "$cpu0" "$(python3 "$ROOT/perf/cpu.py" "$SPID")")" >>"$f"
        log "tlog inclusion proofs (size $size) r$round: $(grep Requests/sec "$f" | tr -s ' ')"
    done
    stop_pid "$NGINX_PID"; forget_pid "$NGINX_PID"
    stop_registry
    rm -rf "$dir" "$www"
fi

# ---------------------------------------------------------------- retention (issue 21)
# 1. perf/retention_measure.rs (see its header): follower memory and authority data directory
#    every 20,000 versions (built as a release test binary of the main crate, like `follow`).
# 2. Commit p99 with `retain_versions` on vs off, one run, alternating order per round: the same
#    2-of-3 C=64 durable load, 4 MiB segments and a checkpoint every 1,000 commits in both, so
#    with the window on a segment is dropped every few hundred commits during the measurement.
if want retention; then
    if [ $QUICK = 1 ]; then RN=${RETENTION_N:-40000}; else RN=${RETENTION_N:-200000}; fi
    rbin=$(harness retention_measure retention) || exit 1
    echo "loadavg_start=$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW/retention-env.txt"
    log "retention: $RN versions, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"
    # RETENTION_N=0 keeps the last run's rows and measures only the side-by-side p99.
    if [ "$RN" -gt 0 ]; then
        SVC_REGISTRY_BIN="$BIN" N=$RN RETENTION_OUT="$RAW/retention.txt" TMPDIR="$TMPD" \
            "$rbin" --nocapture >"$RAW/retention-stdout.txt" 2>"$RAW/retention-stderr.txt"
        log "retention: $(tail -1 "$RAW/retention.txt")"
    fi
    for round in $(seq 1 $ROUNDS); do
        if [ $((round % 2)) = 1 ]; then order="on off"; else order="off on"; fi
        for mode in $order; do
            dir="$TMPD/retention-$mode"
            if [ "$mode" = on ]; then retain=2000; else retain=0; fi
            # 4 MiB segments (the smallest allowed is 2 x max_body_bytes + 64 KiB ≈ 2.1 MiB): at
            # ~1.6 kB a version, a drop every ~2,600 commits, several in each measurement.
            write_config "$dir" 2 3 batch
            # Into the [storage] table write_config made (a second table would not parse).
            sed -i "/^\[storage\]/a retain_versions = $retain\nsegment_bytes = 4194304\ncheckpoint_every_commits = 1000" "$dir/config.toml"
            start_registry "retention-$mode-r$round" "$dir"
            "$LG" writes --addr "$RA" --metrics "$MA" --pid "$SPID" --clients 64 --secs $WD \
                --signers 3 --threshold 2 --max-proposals $((WD * 5000)) \
                >"$RAW/retention-writes-$mode-r$round.json"
            oldest=$(curl -fs "http://$RA/registry/head" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("oldest_version", 0))')
            echo "$oldest" >"$RAW/retention-oldest-$mode-r$round.txt"
            log "retention writes window $mode r$round: $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["commits_per_s"], "commits/s p99", d["commit_latency"]["p99_ms"], "ms")' "$RAW/retention-writes-$mode-r$round.json"), oldest_version $oldest"
            stop_registry
            rm -rf "$dir"
        done
    done
    echo "loadavg_end=$(cut -d' ' -f1 /proc/loadavg)" >>"$RAW/retention-env.txt"
fi

stop_all
echo "loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$RAW/env.txt"
python3 "$ROOT/perf/report.py" "$RAW" >"$OUT/results.md"
log "wrote $OUT/results.md"
cat "$OUT/results.md"
