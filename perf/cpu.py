#!/usr/bin/env python3
"""Print the CPU seconds (user + system) used so far by PID and its direct children (nginx's
workers are children of its master). Used by perf/run.sh for requests per server CPU-second."""
import os
import sys

pid = sys.argv[1]
hz = os.sysconf("SC_CLK_TCK")


def ticks(p):
    try:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # fields[0] is state (field 3); utime, stime are fields 14, 15 → indexes 11, 12.
        return int(fields[11]) + int(fields[12]), fields[1]
    except OSError:
        return 0, None


total, _ = ticks(pid)
for entry in os.listdir("/proc"):
    if entry.isdigit() and entry != pid:
        t, ppid = ticks(entry)
        if ppid == pid:
            total += t
print(f"{total / hz:.2f}")
