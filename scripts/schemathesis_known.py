"""Whether every failure in a schemathesis report is a known server bug (scripts/schemathesis.sh).

Usage: python3 scripts/schemathesis_known.py REPORT.txt KNOWN.txt; exit 0 when the report has at
least one failure and every failing case matches a line of KNOWN.txt, 1 otherwise (so an
unparsable report or an unknown failure always fails the run). Prints each failure's verdict.
"""

import re
import sys

CURL = re.compile(r"curl -X ([A-Z]+) (.*)$")


def cases(report):
    """The last reproducing curl line of every failing case, as (METHOD, rest of the line)."""
    text = report.split("= FAILURES =", 1)[-1] if "= FAILURES =" in report else ""
    text = re.split(r"^=+ (SUMMARY|WARNINGS) =+$", text, flags=re.M)[0]
    blocks = re.split(r"^\d+\. Test Case ID", text, flags=re.M)[1:]
    out = []
    for block in blocks:
        curls = [m for line in block.splitlines() if (m := CURL.search(line.strip()))]
        out.append((curls[-1].group(1), curls[-1].group(2)) if curls else (None, block.strip()[:200]))
    return out


def main():
    report = open(sys.argv[1], encoding="utf-8", errors="replace").read()
    known = []
    for line in open(sys.argv[2], encoding="utf-8"):
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            method, regex = line.split(" ", 1)
            known.append((method, re.compile(regex)))
    found = cases(report)
    ok = bool(found)
    for method, rest in found:
        hit = method is not None and any(m == method and r.search(rest) for m, r in known)
        print(f"  {'known  ' if hit else 'UNKNOWN'} {method} {rest[:160]}")
        ok &= hit
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
