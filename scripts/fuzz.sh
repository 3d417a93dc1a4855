#!/usr/bin/env bash
# Run every fuzz target in fuzz/ for a bounded time each (cargo-fuzz + libFuzzer on nightly).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     default: 30 s per target, every target
#   FUZZ_JOBS=N scripts/fuzz.sh 3600          N parallel libFuzzer jobs per target (long runs)
#
# Skips (exit 0, with the reason printed) when the nightly toolchain or cargo-fuzz is missing, so
# CI without them stays green. The committed seeds (fuzz/corpus/<target>/) are read, never
# written: the corpus the fuzzer grows lives in target/fuzz-corpus/<target>/ and is kept between
# runs. A crash leaves its input in fuzz/artifacts/<target>/ and makes the script exit 1 after
# the other targets have run; turn it into a regression test named after the bug (see
# docs/RELIABILITY.md). A summary line per target (runs, exec/s, coverage, corpus) ends the
# output.
set -uo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
    exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "== SKIP fuzz: the nightly toolchain is not installed (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== SKIP fuzz: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo +nightly fuzz list 2>/dev/null)
fi
jobs="${FUZZ_JOBS:-1}"

echo "== cargo +nightly fuzz build (${#targets[@]} targets)"
if ! (cd fuzz && cargo +nightly fuzz build 2>&1 | tail -n 3); then
    echo "fuzz build failed" >&2
    exit 1
fi

# One log directory per invocation: runs started side by side must not share log files.
logs="target/fuzz-logs/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$logs"
failed=()
summary=()
for t in "${targets[@]}"; do
    work="target/fuzz-corpus/$t"
    mkdir -p "$work" "fuzz/artifacts/$t"
    echo "== fuzz $t for ${seconds}s (jobs=$jobs)"
    log="$logs/$t.log"
    # Leak detection is off: the http target keeps a server (threads, buffers) alive across
    # inputs by design, which libFuzzer's per-input leak check would report.
    args=(-max_total_time="$seconds" -print_final_stats=1 -detect_leaks=0 -timeout=20
          -rss_limit_mb=2048 -max_len=65536)
    if [ "$jobs" -gt 1 ]; then
        args+=(-jobs="$jobs" -workers="$jobs")
    fi
    (cd fuzz && cargo +nightly fuzz run "$t" "../$work" "corpus/$t" -- "${args[@]}") >"$log" 2>&1
    rc=$?
    # The log holds libFuzzer's binary-ish progress lines: grep -a.
    runs=$(grep -aho 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -n 1 | awk '{print $2 + 0}')
    rate=$(grep -aho 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -n 1 | awk '{print $2 + 0}')
    cov=$(grep -aho 'cov: [0-9]*' "$log" | tail -n 1 | awk '{print $2}')
    corpus=$(find "$work" -type f | wc -l)
    line=$(printf '%-16s %6ss  runs %-10s exec/s %-7s cov %-6s corpus %s' \
        "$t" "$seconds" "$runs" "$rate" "${cov:-?}" "$corpus")
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        line="$line  FAILED (exit $rc, log $log)"
        grep -aE 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written|deadly signal' "$log" | head -n 20
    fi
    echo "$line"
    summary+=("$line")
done

echo "== fuzz summary"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "== fuzz FAILED: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
