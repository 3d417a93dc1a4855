#!/usr/bin/env bash
# perf/gate.sh: the CI performance gate. On 2 cores: ≈ 45 s with a warm target/release (the
# checks themselves; .ci/run makes the same release build just before, from the same workspace,
# so a cold CI compiles the dependencies and the svc-registry library once).
#
# Fails only on a gross regression, judged by ratios measured side by side in this run (never
# by absolute figures from another run or machine), with tolerances wide enough for a shared,
# noisy 2-core box:
#
#   reads   /registry/head RPS ≥ 0.5 × nginx serving the same bytes (wrk -t2 -c64, 3 s each,
#           ours / nginx / ours, best of ours) and no socket errors or non-2xx; goal is 0.9×,
#           measured 1.1–1.3×.
#   writes  durable commits/s (2-of-3, batch, 16 pipelined clients, 3 s) ≥ 0.05 × one thread's
#           verify_strict/s measured just before; measured ≈ 0.15×. Plus: no errors, and commit
#           p99 < 250 ms.
#   submit  durable `/submit` writes/s (1-of-1, batch, 16 pipelined clients, 3 s) ≥ 1.0 × etcd's
#           durable puts/s (same client, C=16, 3 s), side by side, and no errors (issue 20's goal
#           is 1.5×; this catches a fall back below etcd). Runs only where `etcd` is installed
#           (perf/run.sh installs it; the gate installs nothing for it): otherwise a visible
#           SKIP line, neither passed nor failed.
#   stream  100 subscribers, 20 commits: no event missing, p99 commit ack → event < 50 ms.
#   start   empty data dir: read-ready < 1 s (goal 100 ms).
#   history RssAnon growth over 10,000 single-op commits on one descriptor, after 17,000
#           warm-up commits, ≤ 256 B per commit (issue 14: history is read from the log;
#           keeping every record on the heap again costs ≈ 1,250 B).
#
# Builds into target/release with the release profile of Cargo.toml (perf/loadgen's profile is
# the same, so the two workspaces share every artifact, svc-registry's own included); only the
# gate's raw output lives in target/perf-gate/out. Prints one line per check and "perf gate: N passed,
# M failed"; exits non-zero on any failure.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
export PERF_OUT="$ROOT/target/perf-gate/out"
OUT="$PERF_OUT"; RAW="$OUT/raw"; TMPD="$OUT/tmp"
GATE_TARGET="$ROOT/target"
BIN="$GATE_TARGET/release/svc-registry"
LG="$GATE_TARGET/release/loadgen"
trap 'stop_all' EXIT
trap 'exit 130' INT TERM
ulimit -n 65536 2>/dev/null || true
started=$(date +%s)

ensure_tools python3 curl wrk nginx
mkdir -p "$RAW" "$TMPD"
rm -rf "${RAW:?}"/* "${TMPD:?}"/*
log "build (release) into $GATE_TARGET"
# One cargo invocation from perf/loadgen's workspace builds the loadgen and the server binary
# (svc-registry is its path dependency), so the library is compiled once, not twice.
(cd "$ROOT/perf/loadgen" && CARGO_TARGET_DIR="$GATE_TARGET" \
    cargo build --release -q -p svc-registry-loadgen -p svc-registry --bin loadgen --bin svc-registry)
built=$(date +%s)

PASS=0; FAIL=0
check() { # check NAME OK(0/1) DETAIL
    if [ "$2" = 1 ]; then PASS=$((PASS + 1)); echo "PASS $1: $3"; else FAIL=$((FAIL + 1)); echo "FAIL $1: $3"; fi
}
py() { python3 -c "$1" "${@:2}"; }

# ---- start-up
write_config "$TMPD/start" 1 1 batch
"$LG" coldstart --bin "$BIN" --config "$TMPD/start/config.toml" --expect-version 0 >"$RAW/coldstart.json"
ms=$(py 'import json,sys; print(json.load(open(sys.argv[1]))["first_head_ms"])' "$RAW/coldstart.json")
check "start-up" "$(py 'import sys; print(int(float(sys.argv[1]) < 1000))' "$ms")" "empty data dir read-ready in $ms ms (limit 1000)"

# ---- reads
write_config "$TMPD/reads" 1 1 batch
start_registry gate-reads "$TMPD/reads"
"$LG" fill --addr "$RA" --descriptors 100 --ops 100 >/dev/null
mkdir -p "$TMPD/www"
curl -fs "http://$RA/registry/head" >"$TMPD/www/head.json"
start_nginx "$TMPD/www"
wrk -t2 -c64 -d3s --latency "http://$RA/registry/head" >"$RAW/ours1.txt" 2>&1
wrk -t2 -c64 -d3s --latency "http://$NGINX_ADDR/head.json" >"$RAW/nginx.txt" 2>&1
wrk -t2 -c64 -d3s --latency "http://$RA/registry/head" >"$RAW/ours2.txt" 2>&1
stop_pid "$NGINX_PID"; forget_pid "$NGINX_PID"
stop_registry
read -r ratio errs < <(py '
import re, sys
def rps(f):
    t = open(f).read()
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    e = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    n = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return float(m.group(1)) if m else 0.0, (sum(map(int, e.groups())) if e else 0) + (int(n.group(1)) if n else 0)
o1, e1 = rps(sys.argv[1]); n, _ = rps(sys.argv[2]); o2, e2 = rps(sys.argv[3])
print(f"{max(o1, o2) / n if n else 0:.3f} {e1 + e2}")' "$RAW/ours1.txt" "$RAW/nginx.txt" "$RAW/ours2.txt")
check "reads" "$(py 'import sys; print(int(float(sys.argv[1]) >= 0.5 and int(sys.argv[2]) == 0))' "$ratio" "$errs")" \
    "head RPS = ${ratio} × nginx (limit 0.5), $errs errors"

# ---- writes
"$LG" verifyloop --secs 1 >"$RAW/verify.json"
write_config "$TMPD/writes" 2 3 batch
start_registry gate-writes "$TMPD/writes"
"$LG" writes --addr "$RA" --metrics "$MA" --clients 16 --secs 3 --signers 3 --threshold 2 \
    --max-proposals 20000 >"$RAW/writes.json"
stop_registry
read -r wratio wdetail < <(py '
import json, sys
v = json.load(open(sys.argv[1])); w = json.load(open(sys.argv[2]))
cps, vps = w["commits_per_s"], v["verifies_per_s"]
p99, errs = w["commit_latency"]["p99_ms"], w["error_count"]
r = cps / vps
ok = r >= 0.05 and errs == 0 and p99 < 250
print(int(ok), f"{cps:.0f}_commits/s_=_{r:.3f}_x_{vps:.0f}_verifies/s_(limit_0.05),_p99_{p99}_ms_(limit_250),_{errs}_errors")' \
    "$RAW/verify.json" "$RAW/writes.json")
check "writes" "$wratio" "${wdetail//_/ }"

# ---- /submit vs etcd durable puts
if command -v etcd >/dev/null 2>&1; then
    write_config "$TMPD/submit" 1 1 batch
    start_registry gate-submit "$TMPD/submit"
    start_etcd
    "$LG" writes --addr "$RA" --metrics "$MA" --clients 16 --secs 3 --signers 1 --threshold 1 \
        --flow submit --max-proposals 40000 >"$RAW/submit.json"
    "$LG" etcd-puts --addr "$ETCD_ADDR" --clients 16 --secs 3 >"$RAW/etcd-puts.json"
    stop_pid "$ETCD_PID"; forget_pid "$ETCD_PID"
    stop_registry
    read -r subok subdetail < <(py '
import json, sys
s = json.load(open(sys.argv[1])); e = json.load(open(sys.argv[2]))
ours, etcd, errs = s["commits_per_s"], e["puts_per_s"], s["error_count"]
r = ours / etcd if etcd else 0.0
print(int(r >= 1.0 and errs == 0), f"{ours:.0f}_/submit/s_=_{r:.2f}_x_etcd_{etcd:.0f}_puts/s_(limit_1.0),_{errs}_errors")' \
        "$RAW/submit.json" "$RAW/etcd-puts.json")
    check "submit" "$subok" "${subdetail//_/ }"
else
    echo "SKIP submit: etcd is not installed, so /submit vs etcd durable puts is not gated in this run"
fi

# ---- stream
write_config "$TMPD/stream" 1 1 batch
start_registry gate-stream "$TMPD/stream"
"$LG" stream --addr "$RA" --subscribers 100 --commits 20 --interval-ms 20 --pid "$SPID" >"$RAW/stream.json"
stop_registry
read -r sok sdetail < <(py '
import json, sys
d = json.load(open(sys.argv[1]))
p99, missing = d["ack_to_event"]["p99_ms"], d["events_missing"]
ok = missing == 0 and d["commits"] == 20 and p99 < 50
print(int(ok), f"{missing}_events_missing,_p99_ack_to_event_{p99}_ms_(limit_50)")' "$RAW/stream.json")
check "stream" "$sok" "${sdetail//_/ }"

# ---- history: no per-commit heap growth
write_config "$TMPD/history" 1 1 never
start_registry gate-history "$TMPD/history"
# Past the writer's bounded memory of 16,384 committed proposal ids first (≈ 8 s): what is
# checked is growth with history itself.
"$LG" fill --addr "$RA" --descriptors 17000 --ops 1 --same-id 1 >/dev/null
rss_status "$SPID" >"$RAW/history-before.txt"
# 10,000, not fewer: RssAnon moves in allocator steps of up to 1 MiB, which over 5,000 commits
# alone read as 200 B per commit (seen once in CI at 207 B; 56–77 B in other runs).
"$LG" fill --addr "$RA" --descriptors 10000 --ops 1 --same-id 1 >/dev/null
rss_status "$SPID" >"$RAW/history-after.txt"
stop_registry
read -r hok hdetail < <(py '
import sys
def kb(f):
    return {l.split(":")[0]: int(l.split(":")[1].split()[0]) for l in open(f) if ":" in l}
b, a = kb(sys.argv[1]), kb(sys.argv[2])
per = (a["RssAnon"] - b["RssAnon"]) * 1024 / 10000
print(int(per <= 256), f"RssAnon_{per:.0f}_B/commit_over_10,000_commits_(limit_256)")' \
    "$RAW/history-before.txt" "$RAW/history-after.txt")
check "history" "$hok" "${hdetail//_/ }"

rm -rf "$TMPD"
end=$(date +%s)
echo "perf gate: build $((built - started)) s, checks $((end - built)) s, total $((end - started)) s"
echo "perf gate: $PASS checks passed, $FAIL checks failed"
[ "$FAIL" = 0 ]
