#!/usr/bin/env python3
"""CPU seconds a cold start spends until it is ready: a measure that holds on a loaded box, where
wall time does not (start-up is CPU-bound on one or two threads).

Usage: perf/cpustart.py BIN CONFIG [STDERR_FILE]

Starts `BIN --config CONFIG`, polls its stderr (kept in STDERR_FILE, default
/tmp/cpustart.stderr) every 5 ms for the write plane's ready line (`role=write-plane`), then
prints the process's CPU seconds (utime + stime of all its threads, from /proc/PID/stat), the wall
milliseconds since spawn and its peak RSS (VmHWM), and stops it with SIGTERM. Exits 1 if it is
not ready within 120 s or exits first.
"""
import os
import signal
import subprocess
import sys
import time

binp, cfg = sys.argv[1], sys.argv[2]
err_path = sys.argv[3] if len(sys.argv) > 3 else "/tmp/cpustart.stderr"
hz = os.sysconf("SC_CLK_TCK")
t0 = time.monotonic()
with open(err_path, "wb") as err:
    p = subprocess.Popen([binp, "--config", cfg], stdout=subprocess.DEVNULL, stderr=err)
deadline = t0 + 120
while True:
    with open(err_path, "rb") as f:
        if b"role=write-plane" in f.read():
            break
    if time.monotonic() > deadline or p.poll() is not None:
        print("not ready", file=sys.stderr)
        p.kill()
        sys.exit(1)
    time.sleep(0.005)
wall = (time.monotonic() - t0) * 1000
with open(f"/proc/{p.pid}/stat") as f:
    fields = f.read().rsplit(")", 1)[1].split()
# fields[0] is state (field 3); utime, stime are fields 14, 15 → indexes 11, 12.
cpu = (int(fields[11]) + int(fields[12])) / hz
with open(f"/proc/{p.pid}/status") as f:
    hwm = next(line for line in f if line.startswith("VmHWM")).split()[1]
print(f"cpu_s={cpu:.2f} wall_ms={wall:.0f} vmhwm_kb={hwm}")
p.send_signal(signal.SIGTERM)
p.wait()
