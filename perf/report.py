#!/usr/bin/env python3
"""Build the Markdown results table of perf/run.sh from perf/out/raw/ (argument: the raw dir).

Every goal of issue 7 (and of the benchmark paragraphs of issues 4 and 5) is marked `met` or
`MISSED` from the figures of this run; nothing is tuned towards a goal.
"""
import glob
import json
import os
import re
import statistics
import sys

HISTORY_LINE = len(sys.argv) > 1 and sys.argv[1] == "--history-line"
RAW = sys.argv[2] if HISTORY_LINE else sys.argv[1]


def path(name):
    return os.path.join(RAW, name)


def load(name):
    try:
        with open(path(name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def load_lines(name):
    try:
        with open(path(name)) as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def text(name, default=""):
    try:
        with open(path(name)) as f:
            return f.read().strip()
    except OSError:
        return default


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    return float(m.group(1)) * UNITS[m.group(2)] if m else float("nan")


def parse_wrk(file):
    t = open(file).read()
    r = {"rps": float("nan"), "p50": float("nan"), "p99": float("nan"), "errors": 0, "non2xx": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", t)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, t, re.M)
        if m:
            r[key] = wrk_ms(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
    if m:
        r["errors"] = sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"(\d+) requests in", t)
    c = re.search(r"server_cpu_s ([\d.]+)", t)
    r["per_cpu_s"] = int(m.group(1)) / float(c.group(1)) if m and c and float(c.group(1)) > 0 else float("nan")
    return r


def fmt(x, nd=0):
    if x is None or (isinstance(x, float) and x != x):
        return "–"
    if nd == 0:
        return f"{x:,.0f}"
    return f"{x:,.{nd}f}"


def verdict(ok):
    return "met" if ok else "**MISSED**"


def status_kb(name):
    d = {}
    for line in text(name).splitlines():
        k, v = line.split(":", 1)
        d[k] = int(v.split()[0])
    return d


def history_figures(which, warm=17000):
    """Figures of the history section for one build, or None."""
    fill = load(f"history-{which}-fill.json")
    start, first = status_kb(f"history-{which}-start.txt"), status_kb(f"history-{which}-first10k.txt")
    before, after = status_kb(f"history-{which}-before.txt"), status_kb(f"history-{which}-after.txt")
    if not fill or not before or not after:
        return None
    n = fill["version"] - warm
    w = parse_wrk(path(f"history-{which}-version-wrk.txt"))
    w100 = parse_wrk(path(f"history-{which}-version100-wrk.txt"))
    cs = load_lines(f"coldstart-history-{which}.jsonl")
    return {
        "n": n,
        "anon": (after["RssAnon"] - before["RssAnon"]) * 1024 / n,
        "rss": (after["VmRSS"] - before["VmRSS"]) * 1024 / n,
        "anon_first": (first["RssAnon"] - start["RssAnon"]) * 1024 / 10000 if first and start else float("nan"),
        "rps": w["rps"], "per_cpu": w["per_cpu_s"],
        "rps100": w100["rps"], "per_cpu100": w100["per_cpu_s"],
        "ready": statistics.median(x["first_head_ms"] for x in cs) if cs else float("nan"),
    }


if HISTORY_LINE:
    f = history_figures(sys.argv[3], int(sys.argv[4]))
    print("no figures" if f is None else
          f"{f['n']} commits: RssAnon {f['anon']:.0f} B/commit (first 10,000: {f['anon_first']:.0f}), "
          f"VmRSS {f['rss']:.0f} B/commit, /registry/{{v}} {f['rps']:,.0f} RPS "
          f"({f['per_cpu']:,.0f} per CPU-s), 15 KB record {f['rps100']:,.0f} RPS "
          f"({f['per_cpu100']:,.0f} per CPU-s), read-ready {f['ready']:.0f} ms")
    sys.exit(0)


out = []
p = out.append
env = text("env.txt")
p("# perf/run.sh results\n")
p("```")
p(env)
p("```\n")

goals = []  # (goal, measured, verdict)

# ------------------------------------------------------------------ reads
wrk_files = glob.glob(path("wrk-*.txt"))
if wrk_files:
    agg = {}
    for f in wrk_files:
        m = re.match(r"wrk-(\w+)-c(\d+)-(\w+)-r(\d+)\.txt", os.path.basename(f))
        if not m:
            continue
        key = (m.group(1), int(m.group(2)), m.group(3))
        agg.setdefault(key, []).append(parse_wrk(f))

    def mean(key, field):
        runs = agg.get(key, [])
        vals = [r[field] for r in runs if r[field] == r[field]]
        return statistics.mean(vals) if vals else float("nan")

    def total(key, field):
        return sum(r[field] for r in agg.get(key, []))

    p("## Reads (wrk -t2, keep-alive; mean of the alternated rounds)\n")
    p("Same bytes everywhere: nginx serves the registry's own response body as a static file; "
      "etcd's JSON gateway range-reads a value of the same size (its answer is larger: base64 "
      "plus header). wrk shares the 2 cores with the server under test.\n")
    p("| path | conns | body B | ours RPS | nginx RPS | etcd RPS | ours/nginx | ours/etcd "
      "| p50 ms ours / nginx / etcd | p99 ms ours / nginx / etcd | requests per server CPU-s ours / nginx / etcd | ours errors |")
    p("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for pth in ("head", "version", "version100", "descriptor"):
        for c in (64, 1000):
            o, n, e = (pth, c, "ours"), (pth, c, "nginx"), (pth, c, "etcd")
            if o not in agg:
                continue
            ro, rn, re_ = mean(o, "rps"), mean(n, "rps"), mean(e, "rps")
            errs = total(o, "errors") + total(o, "non2xx")
            label = {"head": "/registry/head", "version": "/registry/13 (1-op record)",
                     "version100": "/registry/5 (100-op record)",
                     "descriptor": "/registry/descriptors/node/…"}[pth]
            p(f"| {label} | {c} | {text('bytes-' + pth + '.txt')} | {fmt(ro)} | {fmt(rn)} | {fmt(re_)} "
              f"| {fmt(ro / rn, 2)} | {fmt(ro / re_, 2)} "
              f"| {fmt(mean(o, 'p50'), 2)} / {fmt(mean(n, 'p50'), 2)} / {fmt(mean(e, 'p50'), 2)} "
              f"| {fmt(mean(o, 'p99'), 2)} / {fmt(mean(n, 'p99'), 2)} / {fmt(mean(e, 'p99'), 2)} "
              f"| {fmt(mean(o, 'per_cpu_s'))} / {fmt(mean(n, 'per_cpu_s'))} / {fmt(mean(e, 'per_cpu_s'))} "
              f"| {errs} |")
    p("")
    for c, need in ((64, 0.9), (1000, 0.8)):
        o, n = ("head", c, "ours"), ("head", c, "nginx")
        if o in agg and n in agg:
            ratio = mean(o, "rps") / mean(n, "rps")
            goals.append((f"/registry/head ≥ {need}× nginx RPS at {c} conns", f"{ratio:.2f}×", verdict(ratio >= need)))
            p99o, p99n = mean(o, "p99"), mean(n, "p99")
            goals.append((f"/registry/head p99 ≤ 2× nginx's at {c} conns",
                          f"{p99o:.2f} ms vs {p99n:.2f} ms ({p99o / p99n:.2f}×)", verdict(p99o <= 2 * p99n)))
            errs = total(o, "errors") + total(o, "non2xx")
            goals.append((f"/registry/head no errors at {c} conns", f"{errs} errors", verdict(errs == 0)))
    o64 = ("head", 64, "ours")
    if o64 in agg:
        best = max(mean(("head", c, "ours"), "rps") for c in (64, 1000) if ("head", c, "ours") in agg)
        goals.append(("/registry/head ≥ 15 × 2,500 = 37,500 RPS", f"{best:,.0f} RPS", verdict(best >= 37500)))

    cc = sorted(glob.glob(path("conncheck-*.json")))
    if cc:
        p("### Per-connection service (loadgen conncheck, /registry/head and the same bytes from nginx)\n")
        p("| server | conns | RPS | responses per connection min / median / max | starved | errors |")
        p("|---|---|---|---|---|---|")
        for f in cc:
            d = json.load(open(f))
            srv = os.path.basename(f).split("-")[1]
            p(f"| {srv} | {d['conns']} | {fmt(d['rps'])} | {fmt(d['per_conn_min'])} / {fmt(d['per_conn_p50'])} / "
              f"{fmt(d['per_conn_max'])} | {d['starved']} | {d['errors'] + d['non2xx']} |")
            if srv == "ours":
                goals.append((f"no starved connection at {d['conns']} conns",
                              f"{d['starved']} starved, min/median {d['min_over_median']}",
                              verdict(d["starved"] == 0)))
        p("")

# ------------------------------------------------------------------ writes
fio = {}
for name in ("append", "overwrite", "append-after"):
    d = load(f"fio-{name}.json")
    if not d:
        continue
    job = d["jobs"][0]
    sync = job.get("sync", {})
    lat = sync.get("lat_ns", sync)
    pc = lat.get("percentile", {})
    fio[name] = {
        "iops": job["write"]["iops"],
        "p50": pc.get("50.000000", float("nan")) / 1e6,
        "p99": pc.get("99.000000", float("nan")) / 1e6,
        "mean": lat.get("mean", float("nan")) / 1e6,
    }
if fio:
    p("## Disk: fio 4 KiB write + fdatasync (same file system as the data dirs)\n")
    p("| test | syncs/s | fdatasync mean ms | p50 ms | p99 ms |")
    p("|---|---|---|---|---|")
    for name, d in fio.items():
        p(f"| {name} | {fmt(d['iops'])} | {fmt(d['mean'], 3)} | {fmt(d['p50'], 3)} | {fmt(d['p99'], 3)} |")
    p("")

def cpu_cell(d):
    c = d.get("cpu") or {}
    if "us_per_commit" not in c:
        return "–"
    t = c.get("by_thread_us", {})
    return (f"{c['us_per_commit']:.0f} ({t.get('verify', 0):.0f} / {t.get('registry-worker', 0):.0f} / "
            f"{t.get('writer', 0):.0f} / {t.get('fsync', 0):.0f})")


wf = sorted(glob.glob(path("writes-*-*-c*.json")))
if wf:
    p("## Writes: propose → approve (one request per signer) → commit, pipelined committers\n")
    p("Each client takes the next base version (ticket); proposals and signatures are made before "
      "the clock starts; a commit is sent once the previous ticket's commit is on the wire. "
      "\"overtaken\" = 409 \"not HEAD\" answers when a commit reached the writer before its "
      "predecessor (the two sit on different HTTP workers); it is re-sent. Commit latency = first "
      "`POST /commit` sent → its 200 (durable).\n")
    fio_col = f"{fio['append']['p50']:.3f} / {fio['append']['p99']:.3f}" if "append" in fio else "–"
    if "append-after" in fio:
        fio_col += f" (after: {fio['append-after']['p50']:.3f} / {fio['append-after']['p99']:.3f})"
    p(f"| fsync | quorum | C | durable commits/s | commit p50 / p95 / p99 ms | commits per sync (mean) "
      f"| server fsync mean ms | fio fdatasync p50 / p99 ms | overtaken per commit "
      f"| server CPU µs per commit: total (verify / HTTP workers / writer / fsync) | errors |")
    p("|---|---|---|---|---|---|---|---|---|---|---|")
    order = {"batch": 0, "always": 1}
    rows = []
    for f in wf:
        m = re.match(r"writes-(batch|always)-(\w+)-c(\d+)\.json", os.path.basename(f))
        if m:
            rows.append((order[m.group(1)], m.group(2), int(m.group(3)), m.group(1), json.load(open(f))))
    for _, q, c, fs, d in sorted(rows):
        cl = d["commit_latency"]
        s = d["server"]
        p(f"| {fs} | {q.replace('of', '-of-')} | {c} | {fmt(d['commits_per_s'])} "
          f"| {fmt(cl['p50_ms'], 2)} / {fmt(cl['p95_ms'], 2)} / {fmt(cl['p99_ms'], 2)} "
          f"| {fmt(s.get('mean_batch'), 2)} | {fmt(s.get('mean_fsync_ms'), 3)} | {fio_col} "
          f"| {fmt(d['overtaken_retries'] / max(d['commits'], 1), 2)} | {cpu_cell(d)} | {d['error_count']} |")
        if fs == "batch" and q == "2of3" and c == 64:
            goals.append(("≥ 2,500 durable commits/s, 2-of-3, C=64, batch",
                          f"{d['commits_per_s']:,.0f}/s", verdict(d["commits_per_s"] >= 2500)))
            goals.append(("commit p99 < 50 ms (2-of-3, C=64, batch)", f"{cl['p99_ms']:.1f} ms",
                          verdict(cl["p99_ms"] < 50)))
            goals.append(("2-of-3, C=64, batch ≥ 10,000 durable writes/s, p99 < 10 ms (issue 20)",
                          f"{d['commits_per_s']:,.0f}/s, p99 {cl['p99_ms']:.1f} ms",
                          verdict(d["commits_per_s"] >= 10000 and cl["p99_ms"] < 10)))
    d = load("writes-submit-2of3-c64.json")
    if d:
        cl = d["commit_latency"]
        p(f"The same 2-of-3 point as one `/submit` per write (both signatures in the envelope), "
          f"C=64: **{d['commits_per_s']:,.0f} writes/s**, p50 / p99 {cl['p50_ms']:.2f} / "
          f"{cl['p99_ms']:.2f} ms, {d['server'].get('mean_batch') or 0:.2f} writes per sync, server CPU "
          f"{cpu_cell(d)} µs per write, client {fmt(d.get('client_cpu_us_per_commit'))} µs.\n")
        goals.append(("2-of-3, C=64, /submit ≥ 10,000 durable writes/s, p99 < 10 ms (issue 20)",
                      f"{d['commits_per_s']:,.0f}/s, p99 {cl['p99_ms']:.1f} ms",
                      verdict(d["commits_per_s"] >= 10000 and cl["p99_ms"] < 10)))
    p("")
    d = load("writes-contended-c16.json")
    if d:
        p("Uncoordinated committers (each reads HEAD, signs on it in the client, retries from HEAD on "
          f"any 409), 2-of-3, batch, C=16: **{d['commits_per_s']:,.0f} commits/s**, "
          f"{d['conflicts']:,} conflicts for {d['commits']:,} commits "
          f"({d['conflicts'] / max(d['commits'], 1):.1f} per commit), commit p99 "
          f"{d['commit_latency']['p99_ms']:.2f} ms.\n")

pqf = sorted(glob.glob(path("pq-*-*of*-c*.json")))
if pqf:
    p("## Post-quantum signer keys (issue 18): hybrid ed25519+ML-DSA-65 beside ed25519, fsync batch\n")
    p("Same pipelined three-step committers as the writes table, one run, the algorithms "
      "alternating order per quorum. \"verify µs\" is the server's mean `approval_verify_seconds` "
      "(one signature); CPU per commit is read from the server's threads around the run.\n")
    pfio = load("pq-fio-append.json")
    if pfio:
        sync = pfio["jobs"][0].get("sync", {})
        j = sync.get("lat_ns", sync).get("percentile", {})
        p(f"fio fdatasync on the same disk just before: p50 {fmt(j.get('50.000000', float('nan')) / 1e6, 3)} ms, "
          f"p99 {fmt(j.get('99.000000', float('nan')) / 1e6, 3)} ms.\n")
    p("| quorum | alg | C | durable commits/s | commit p50 / p99 ms | commits per sync (mean) "
      "| verify µs (mean) | server CPU µs per commit: total (verify / HTTP workers / writer / fsync) | errors |")
    p("|---|---|---|---|---|---|---|---|---|")
    prow = []
    for f in pqf:
        m = re.match(r"pq-([\w-]+)-(\d+of\d+)-c(\d+)\.json", os.path.basename(f))
        if m:
            prow.append((m.group(2), int(m.group(3)), m.group(1), json.load(open(f))))
    for q, c, alg, d in sorted(prow):
        cl = d["commit_latency"]
        s = d["server"]
        p(f"| {q.replace('of', '-of-')} | {alg} | {c} | {fmt(d['commits_per_s'])} "
          f"| {fmt(cl['p50_ms'], 2)} / {fmt(cl['p99_ms'], 2)} | {fmt(s.get('mean_batch'), 2)} "
          f"| {fmt(s.get('mean_verify_us'))} | {cpu_cell(d)} | {d['error_count']} |")
    p("")

def vs_etcd(c, o, e):
    """Our writes/s over etcd's puts/s at C=c, and the row's first cells: C, both rates, the
    ratio, both latencies, writes per sync (the caller appends its own columns)."""
    ratio = o["commits_per_s"] / e["puts_per_s"] if e["puts_per_s"] else float("nan")
    return ratio, (f"| {c} | {fmt(o['commits_per_s'])} | {fmt(e['puts_per_s'])} | {fmt(ratio, 2)} "
                   f"| {fmt(o['commit_latency']['p50_ms'], 2)} / {fmt(o['commit_latency']['p99_ms'], 2)} "
                   f"| {fmt(e['latency']['p50_ms'], 2)} / {fmt(e['latency']['p99_ms'], 2)} "
                   f"| {fmt(o['server'].get('mean_batch'), 2)}")


w1 = [(c, load(f"writes-1of1-c{c}.json"), load(f"etcd-puts-c{c}.json")) for c in (1, 16, 64)]
w1 = [x for x in w1 if x[1] and x[2]]
if w1:
    p("## 1-of-1 quorum vs etcd 3.4 durable puts (same keep-alive client, same C; etcd via its JSON gateway)\n")
    p("| C | ours commits/s | etcd puts/s | ours/etcd | ours commit p50 / p99 ms | etcd put p50 / p99 ms | ours commits per sync | ours overtaken per commit | ours server CPU µs per commit |")
    p("|---|---|---|---|---|---|---|---|---|")
    for c, o, e in w1:
        ratio, cells = vs_etcd(c, o, e)
        p(f"{cells} | {fmt(o['overtaken_retries'] / max(o['commits'], 1), 2)} | {cpu_cell(o)} |")
        goals.append((f"1-of-1 durable commits/s ≥ etcd durable puts/s at C={c}", f"{ratio:.2f}×", verdict(ratio >= 1.0)))
    p("")
ws = [(c, load(f"writes-submit-1of1-c{c}.json"), load(f"etcd-puts-c{c}.json")) for c in (1, 16, 64)]
ws = [x for x in ws if x[1] and x[2]]
if ws:
    p("### `/submit` (one request: propose + approve + commit), 1-of-1, vs the same etcd puts\n")
    p("| C | /submit writes/s | etcd puts/s | /submit/etcd | /submit p50 / p99 ms | etcd put p50 / p99 ms | writes per sync | server CPU µs per write |")
    p("|---|---|---|---|---|---|---|---|")
    for c, o, e in ws:
        ratio, cells = vs_etcd(c, o, e)
        p(f"{cells} | {cpu_cell(o)} |")
        goals.append((f"/submit 1-of-1 durable writes/s ≥ 1.5 × etcd durable puts/s at C={c}", f"{ratio:.2f}×", verdict(ratio >= 1.5)))
        goals.append((f"/submit 1-of-1 p99 below etcd's at C={c}",
                       f"{o['commit_latency']['p99_ms']:.2f} vs {e['latency']['p99_ms']:.2f} ms",
                       verdict(o['commit_latency']['p99_ms'] < e['latency']['p99_ms'])))
    p("")
    wf_ = [(c, load(f"writes-submitfree-1of1-c{c}.json"), e) for c, _, e in ws]
    wf_ = [x for x in wf_ if x[1]]
    if wf_:
        p("`/submit` with free send order (`--send-order free`: each client sends as soon as it is "
          "ready and the writer holds a submit that arrives before its predecessor), same etcd runs:\n")
        p("| C | /submit writes/s | etcd puts/s | /submit/etcd | /submit p50 / p99 ms | etcd put p50 / p99 ms | writes per sync | held-and-retried | server CPU µs per write |")
        p("|---|---|---|---|---|---|---|---|---|")
        for c, o, e in wf_:
            _, cells = vs_etcd(c, o, e)
            p(f"{cells} | {o['overtaken_retries']} | {cpu_cell(o)} |")
        p("")
    if any(e.get("server_cpu_us_per_put") is not None for _, _, e in ws):
        p("CPU per durable write on each side of the same box (µs; server = every thread of the "
          "server process, client = the load generator over the timed window):\n")
        p("| C | /submit server | /submit client | /submit (free order) server | /submit (free order) client | three-step server | three-step client | etcd server | etcd client |")
        p("|---|---|---|---|---|---|---|---|---|")
        for c, o, e in ws:
            t = next((x[1] for x in w1 if x[0] == c), None) or {}
            f_ = next((x[1] for x in wf_ if x[0] == c), None) or {}
            p(f"| {c} | {fmt((o.get('cpu') or {}).get('us_per_commit'))} | {fmt(o.get('client_cpu_us_per_commit'))} "
              f"| {fmt((f_.get('cpu') or {}).get('us_per_commit'))} | {fmt(f_.get('client_cpu_us_per_commit'))} "
              f"| {fmt((t.get('cpu') or {}).get('us_per_commit'))} | {fmt(t.get('client_cpu_us_per_commit'))} "
              f"| {fmt(e.get('server_cpu_us_per_put'))} | {fmt(e.get('client_cpu_us_per_put'))} |")
        p("")
vl = load("verifyloop.json")
if vl:
    p(f"verify_strict on one thread in the same run: {vl['verifies_per_s']:,.0f}/s ({vl['us_per_verify']:.1f} µs).\n")

# ------------------------------------------------------------------ stream
sf = [(n, load(f"stream-n{n}.json")) for n in (1, 100, 1000)]
sf = [x for x in sf if x[1]]
if sf:
    p("## Stream: commit acknowledged → SSE event received (loopback, one mio reader for all subscribers)\n")
    p("A commit every 20 ms by one client (1-of-1, batch). \"ack → event\" is signed: the event can "
      "arrive before the 200 (both follow the same publication). CPU per event = the `sse` "
      "thread's CPU time (schedstat) over the run / events delivered.\n")
    p("| subscribers | events | missing | ack→event p50 / p99 ms | send→event p50 / p99 ms | commit p50 ms | sse thread µs/event | server µs/event |")
    p("|---|---|---|---|---|---|---|---|")
    for n, d in sf:
        a, s, cpu = d["ack_to_event"], d["send_to_event"], d["cpu"]
        p(f"| {n} | {fmt(d['events_delivered'])} | {d['events_missing']} | {fmt(a['p50_ms'], 3)} / {fmt(a['p99_ms'], 3)} "
          f"| {fmt(s['p50_ms'], 3)} / {fmt(s['p99_ms'], 3)} | {fmt(d['commit_latency']['p50_ms'], 3)} "
          f"| {fmt(cpu.get('sse_us_per_event'), 2)} | {fmt(cpu.get('process_us_per_event'), 2)} |")
        if n == 100:
            goals.append(("stream p99 commit→event < 5 ms at 100 subscribers",
                          f"{a['p99_ms']:.2f} ms (ack→event), {s['p99_ms']:.2f} ms (send→event)",
                          verdict(a["p99_ms"] < 5 and d["events_missing"] == 0)))
    p("")

# ------------------------------------------------------------------ startup
cs = {}
for name in ("empty", "amnesia", "50k", "50k-log-only", "restore-50k", "1m", "1m-previous", "100k-versions"):
    r = load_lines(f"coldstart-{name}.jsonl")
    if r:
        cs[name] = r
if cs:
    p("## Start-up: spawn → first 200 from GET /registry/head at the expected version (median of 3)\n")
    p("| data | descriptors | versions | read-ready ms (ready line) | first head ms | idle RSS MiB | peak RSS MiB | threads |")
    p("|---|---|---|---|---|---|---|---|")
    labels = {"empty": "empty", "amnesia": "empty, --amnesia", "50k": "50k (checkpoint + log)",
              "50k-log-only": "50k, log only (no checkpoint)", "restore-50k": "restore-50k (ronctl backup copy)",
              "1m": "1M (checkpoint + log)", "1m-previous": "1M, previous build (PERF_PREV_BIN)",
              "100k-versions": "100k descriptors in 100k single-op versions"}
    for name, r in cs.items():
        med = lambda k: statistics.median(x[k] for x in r)
        p(f"| {labels[name]} | {fmt(r[-1]['descriptors'])} | {fmt(r[-1]['version'])} | {fmt(med('ready_line_ms'), 1)} "
          f"| {fmt(med('first_head_ms'), 1)} | {fmt(med('idle_rss_kb') / 1024, 1)} | {fmt(med('peak_rss_kb') / 1024, 1)} | {r[-1]['threads']} |")
    p("")
    for name, limit, what in (("empty", 100, "read-ready < 100 ms, empty"), ("50k", 1000, "read-ready < 1 s, 50k"),
                              ("restore-50k", 1000, "restore-50k < 1 s (runbook < 10 s)"),
                              ("1m", 10000, "read-ready < 10 s, 1M"), ("empty", 800, "runbook read-ready < 0.8 s")):
        if name in cs:
            v = statistics.median(x["first_head_ms"] for x in cs[name])
            goals.append((what, f"{v:,.0f} ms", verdict(v < limit)))
    if "1m" not in cs:
        goals.append(("read-ready < 10 s, 1M", "not run (--quick)", "–"))
    else:
        # Issue 14's goals for 1M descriptors (1,000 commits of 1,000 puts).
        v = statistics.median(x["first_head_ms"] for x in cs["1m"])
        goals.append(("issue 14: read-ready < 1 s, 1M descriptors", f"{v:,.0f} ms", verdict(v < 1000)))
        rss = statistics.median(x["idle_rss_kb"] for x in cs["1m"]) / 1024
        goals.append(("issue 14: RSS ≤ 160 MiB at 1M descriptors", f"{rss:.1f} MiB", verdict(rss <= 160)))

# ------------------------------------------------------------------ footprint
sb = text("binary-stripped-bytes.txt")
if cs or sb:
    p("## Footprint\n")
    if "amnesia" in cs:
        rss = statistics.median(x["idle_rss_kb"] for x in cs["amnesia"]) / 1024
        p(f"- idle RSS, --amnesia (Micronode): {rss:.1f} MiB; with a data dir (empty): "
          f"{statistics.median(x['idle_rss_kb'] for x in cs['empty']) / 1024:.1f} MiB")
        goals.append(("idle RSS < 16 MiB (Micronode, --amnesia)", f"{rss:.1f} MiB", verdict(rss < 16)))
    for name, label in (("50k", "50k"), ("1m", "1M"), ("1m-previous", "1M (previous build)"), ("100k-versions", "100k (100k single-op versions)")):
        if name in cs:
            rss = statistics.median(x["idle_rss_kb"] for x in cs[name]) / 1024
            du = text(f"du-{name}.txt").split()
            p(f"- RSS at {label} descriptors: {rss:.1f} MiB (data dir on disk {int(du[0]) / 1024:.1f} MiB)" if du else
              f"- RSS at {label} descriptors: {rss:.1f} MiB")
    if sb:
        mib = int(sb) / 1048576
        p(f"- binary: {int(text('binary-bytes.txt', '0')) / 1048576:.1f} MiB as built (debug = 1), "
          f"{mib:.1f} MiB stripped")
        goals.append(("stripped binary < 8 MiB", f"{mib:.1f} MiB", verdict(mib < 8)))
    if "empty" in cs:
        p(f"- threads when idle: {cs['empty'][-1]['threads']} (with a data dir), "
          f"{cs.get('amnesia', cs['empty'])[-1]['threads']} (--amnesia)")
    p("")

# ------------------------------------------------------------------ history (issue 14)
hist = {w: history_figures(w) for w in ("prev", "cur")}
if hist["cur"]:
    p("## Memory with long histories (issue 14)\n")
    p("Single-op commits on one descriptor (fsync never), measured after 17,000 warm-up commits "
      "(past the writer's bounded memory of 16,384 committed proposal ids); the previous build "
      "side by side in this run. Reads: wrk -t2 -c64, with requests per server CPU-second.\n")
    p("| build | commits | RssAnon growth | (first 10,000 from start) | VmRSS growth | "
      "/registry/{v} RPS (per CPU-s) | 15 KB record RPS (per CPU-s) | read-ready |")
    p("|---|---|---|---|---|---|---|---|")
    for w, label in (("prev", "previous"), ("cur", "this")):
        f = hist[w]
        if f:
            p(f"| {label} | {f['n']:,} | {f['anon']:,.0f} B/commit | {f['anon_first']:,.0f} B/commit | "
              f"{f['rss']:,.0f} B/commit | {fmt(f['rps'])} ({fmt(f['per_cpu'])}) | "
              f"{fmt(f['rps100'])} ({fmt(f['per_cpu100'])}) | {fmt(f['ready'])} ms |")
    p("")
    c = hist["cur"]
    goals.append(("RssAnon growth ≤ 64 B per single-op commit", f"{c['anon']:.0f} B", verdict(c["anon"] <= 64)))
    pr = hist["prev"]
    if pr and pr["per_cpu"] > 0:
        goals.append(("/registry/{v} requests per CPU-s vs the previous build",
                      f"{c['per_cpu'] / pr['per_cpu']:.2f}× (15 KB: {c['per_cpu100'] / pr['per_cpu100']:.2f}×)", "–"))

# ------------------------------------------------------------------ tls (issue 16)
tls_files = glob.glob(path("tls-wrk-*.txt"))
if tls_files:
    tagg = {}
    for f in tls_files:
        m = re.match(r"tls-wrk-(head|handshake)-c(\d+)-(ours|nginx)-r(\d+)\.txt", os.path.basename(f))
        if m:
            tagg.setdefault((m.group(1), int(m.group(2)), m.group(3)), []).append(parse_wrk(f))

    def tmean(key, field):
        vals = [r[field] for r in tagg.get(key, []) if r[field] == r[field]]
        return statistics.mean(vals) if vals else float("nan")

    def ratio(a, b):
        return a / b if b else float("nan")

    def terrs(key):
        return sum(r["errors"] + r["non2xx"] for r in tagg.get(key, []))

    p("## TLS (issue 16): /registry/head over https, ours vs nginx with the same certificate\n")
    p(f"One self-signed ECDSA P-256 certificate (openssl) for both; nginx serves the registry's own "
      f"head body ({text('tls-bytes-head.txt', '?')} B) as a static file, `ssl_protocols TLSv1.2 "
      f"TLSv1.3`, otherwise nginx's defaults; wrk -t2 over https (OpenSSL) shares the 2 cores. "
      f"Keep-alive: one handshake per connection, then requests (at 1,000 connections the runs are 3× "
      f"longer, since wrk's count includes its 1,000 opening handshakes). Handshakes: `Connection: "
      f"close`, so every request is a new TCP connection and a new TLS handshake; wrk (OpenSSL) "
      f"resumes its previous session where the server allows, and both do by default (nginx with "
      f"TLS 1.3 tickets, rustls with its 256-entry session cache), so most are resumed TLS 1.3 "
      f"handshakes (PSK with X25519), not full ones with a certificate signature. "
      f"Mean of the alternated rounds.\n")
    neg = {s: text(f"tls-negotiated-{s}.txt").replace("\n", "; ") for s in ("ours", "nginx")}
    if neg["ours"]:
        p(f"Negotiated with `openssl s_client`: ours: {neg['ours']}; nginx: {neg['nginx']}.\n")
    p("| run | conns | ours RPS | nginx RPS | ours/nginx | p50 ms ours / nginx | p99 ms ours / nginx "
      "| requests per server CPU-s ours / nginx | per CPU-s ours/nginx | errors ours / nginx |")
    p("|---|---|---|---|---|---|---|---|---|---|")
    for kind, c in (("head", 64), ("head", 1000), ("handshake", 64)):
        o, n = (kind, c, "ours"), (kind, c, "nginx")
        if o not in tagg:
            continue
        ro, rn = tmean(o, "rps"), tmean(n, "rps")
        co, cn = tmean(o, "per_cpu_s"), tmean(n, "per_cpu_s")
        label = {"head": "keep-alive /registry/head", "handshake": "new handshakes (Connection: close)"}[kind]
        p(f"| {label} | {c} | {fmt(ro)} | {fmt(rn)} | {fmt(ratio(ro, rn), 2)} "
          f"| {fmt(tmean(o, 'p50'), 2)} / {fmt(tmean(n, 'p50'), 2)} "
          f"| {fmt(tmean(o, 'p99'), 2)} / {fmt(tmean(n, 'p99'), 2)} "
          f"| {fmt(co)} / {fmt(cn)} | {fmt(ratio(co, cn), 2)} | {terrs(o)} / {terrs(n)} |")
    p("")
    tm = text("tls-metrics.txt")
    if tm:
        p("Our handshake counters after the section:\n")
        p("```")
        p(tm)
        p("```\n")
    for c in (64, 1000):
        o, n = ("head", c, "ours"), ("head", c, "nginx")
        if o in tagg and n in tagg:
            r = ratio(tmean(o, "rps"), tmean(n, "rps"))
            per_cpu = ratio(tmean(o, "per_cpu_s"), tmean(n, "per_cpu_s"))
            goals.append((f"/registry/head over TLS ≥ 0.9× nginx over TLS at {c} conns",
                          f"{r:.2f}× RPS ({per_cpu:.2f}× per server CPU-s)", verdict(r >= 0.9)))
    o, n = ("handshake", 64, "ours"), ("handshake", 64, "nginx")
    if o in tagg and n in tagg:
        goals.append(("new TLS handshakes per second vs nginx (64 conns; no goal set)",
                      f"{tmean(o, 'rps'):,.0f} vs {tmean(n, 'rps'):,.0f} ({ratio(tmean(o, 'rps'), tmean(n, 'rps')):.2f}×)", "–"))

# ------------------------------------------------------------------ auth (issue 16)
auth_files = glob.glob(path("auth-wrk-*.txt"))
if auth_files:
    aagg = {}
    for f in auth_files:
        m = re.match(r"auth-wrk-head-c64-(off|hdr|open|read)-r(\d+)\.txt", os.path.basename(f))
        if m:
            aagg.setdefault(m.group(1), []).append(parse_wrk(f))

    def amean(mode, field):
        vals = [r[field] for r in aagg.get(mode, []) if r[field] == r[field]]
        return statistics.mean(vals) if vals else float("nan")

    p("## Capabilities (issue 16): what tokens cost a plaintext /registry/head read\n")
    p("Three servers side by side, 64 connections, wrk -t2, alternated rounds: no `[auth]`; "
      "`[auth]` with the default `require` (reads stay open, no token is looked at); `[auth]` "
      "with `read` required and every request carrying the same token (verified once per "
      "worker, its caveats judged per request). Mean of the rounds.\n")
    p("| server | RPS | vs no [auth] | p99 ms | requests per server CPU-s | per CPU-s vs no [auth] | errors |")
    p("|---|---|---|---|---|---|---|")
    base_rps, base_cpu = amean("off", "rps"), amean("off", "per_cpu_s")
    label = {"off": "no [auth]", "hdr": "no [auth], the token's header sent (ignored)",
             "open": "[auth], reads open", "read": "[auth], read required, token"}
    for mode in ("off", "hdr", "open", "read"):
        if mode not in aagg:
            continue
        rps, cpu = amean(mode, "rps"), amean(mode, "per_cpu_s")
        errs = sum(r["errors"] + r["non2xx"] for r in aagg[mode])
        p(f"| {label[mode]} | {fmt(rps)} | {fmt(rps / base_rps if base_rps else float('nan'), 3)} "
          f"| {fmt(amean(mode, 'p99'), 2)} | {fmt(cpu)} "
          f"| {fmt(cpu / base_cpu if base_cpu else float('nan'), 3)} | {errs} |")
    p("")
    if "off" in aagg and "open" in aagg:
        r = amean("open", "per_cpu_s") / base_cpu if base_cpu else float("nan")
        goals.append(("plaintext /registry/head with [auth] on (reads open) within 5 % of no [auth]",
                      f"{r:.3f}× requests per server CPU-s", verdict(r >= 0.95)))
    if "off" in aagg and "read" in aagg:
        r = amean("read", "per_cpu_s") / base_cpu if base_cpu else float("nan")
        goals.append(("/registry/head with read required and a token, vs no [auth] (no goal set)",
                      f"{r:.3f}× requests per server CPU-s", "–"))
    if "hdr" in aagg and "read" in aagg:
        h = amean("hdr", "per_cpu_s")
        r = amean("read", "per_cpu_s") / h if h else float("nan")
        goals.append(("token verification per request: read required + token vs the same request "
                      "unchecked, within 5 %", f"{r:.3f}× requests per server CPU-s", verdict(r >= 0.95)))

# ------------------------------------------------------------------ follow (issue 15)
# follow.txt: the RESULT lines of perf/follow_measure.rs, `key=value` words (values with spaces
# quoted).
def follow_results():
    import shlex
    rows = []
    for line in text("follow.txt").splitlines():
        words = shlex.split(line)
        d = {}
        for w in words:
            k, _, v = w.partition("=")
            d[k] = v
        d["_words"] = words
        rows.append(d)
    return rows


fr = follow_results()
if fr:
    p("## Followers (issue 15): catch-up from a fresh start, 2-of-3 single-op versions\n")
    start = next((r for r in fr if "n" in r and "mode" not in r), {})
    p(f"loadavg at start: {start.get('loadavg_at_start', '?')}\n")
    p("| follower | versions | catch-up s | versions/s | cores used | CPU µs/version | RssAnon ready → caught up (KiB) | RssAnon growth, 2nd half (B/version) | loadavg |")
    p("|---|---|---|---|---|---|---|---|---|")
    for r in fr:
        if "versions" in r and "mode" in r:
            p(f"| {r['mode']} | {r['versions']} | {r['secs']} | {r['versions_per_s']} | {r.get('cores_used', '?')} | {r['cpu_us_per_version']} | "
              f"{r['rss_anon_ready_kib']} → {r['rss_anon_caught_up_kib']} | {r.get('rss_anon_growth_second_half_b_per_version', '?')} | {r['loadavg']} |")
            rate = float(r["versions_per_s"])
            goals.append((f"follower catch-up ({r['mode']}) ≥ 10,000 verified versions/s (issue 15)",
                          f"{rate:,.0f}/s, {r['cpu_us_per_version']} µs CPU/version", verdict(rate >= 10000)))
    p("")
    for r in fr:
        if "per_version_per_thread" in r["_words"]:
            p(f"- {r['mode']}: CPU per version by thread: " + " ".join(
                w for w in r["_words"][2:] if w.count(":") == 1 and "=" in w))
    for r in fr:
        if r["_words"] and r["_words"][0] == "latency":
            p(f"- commit acknowledged → announced at {r['rate_per_s']}/s ({r['commits']} commits): follower "
              f"p50 {r['follower_p50_ms']} ms p99 {r['follower_p99_ms']} ms; follower of it p50 {r['fof_p50_ms']} ms "
              f"p99 {r['fof_p99_ms']} ms")
            goals.append(("commit → follower serves it p99 < 10 ms at 100 commits/s (issue 15)",
                          f"{r['follower_p99_ms']} ms", verdict(float(r["follower_p99_ms"]) < 10)))
            goals.append(("commit → follower's follower p99 < 20 ms (issue 15)",
                          f"{r['fof_p99_ms']} ms", verdict(float(r["fof_p99_ms"]) < 20)))
    p("")
# ------------------------------------------------------------------ tlog (issue 19)
tw = {m: [load(os.path.basename(f)) for f in sorted(glob.glob(path(f"tlog-writes-{m}-r*.json")))] for m in ("on", "off")}
if tw["on"] and tw["off"]:
    p("## Transparency log (issue 19)\n")
    mean = lambda xs: statistics.mean(xs) if xs else float("nan")
    on = mean([d["commits_per_s"] for d in tw["on"]])
    off = mean([d["commits_per_s"] for d in tw["off"]])
    cost = 1 - on / off if off else float("nan")
    p(f"Durable commits/s, 2-of-3, fsync batch, C=64, tree on vs off in one run (alternating): "
      f"on **{fmt(on)}**, off **{fmt(off)}** (cost {cost * 100:.1f} %; "
      f"p99 on {fmt(mean([d['commit_latency']['p99_ms'] for d in tw['on']]), 2)} ms, "
      f"off {fmt(mean([d['commit_latency']['p99_ms'] for d in tw['off']]), 2)} ms).\n")
    cpu = lambda m, k: mean([d["cpu"]["by_thread_us"].get(k, 0.0) if k else d["cpu"]["us_per_commit"] for d in tw[m] if d.get("cpu")])
    p(f"Server CPU per commit (the steadier figure on a shared box): total on {fmt(cpu('on', None))} µs / "
      f"off {fmt(cpu('off', None))} µs; writer thread on {fmt(cpu('on', 'writer'))} µs / off "
      f"{fmt(cpu('off', 'writer'))} µs; the `tlog` thread {fmt(cpu('on', 'tlog'), 1)} µs.\n")
    goals.append(("tree writer cost ≤ 5 % of durable commits/s at C=64", f"{cost * 100:.1f} % (commits/s)", verdict(cost <= 0.05)))
    wcost = cpu("on", "writer") / cpu("off", "writer") - 1 if cpu("off", "writer") else float("nan")
    goals.append(("tree cost on the writer thread ≤ 5 % (CPU µs per commit, on vs off)", f"{wcost * 100:+.1f} %", verdict(wcost <= 0.05)))
    proofs = [parse_wrk(f) for f in sorted(glob.glob(path("wrk-tlog-proof-r*.txt")))]
    tiles = {s: [parse_wrk(f) for f in sorted(glob.glob(path(f"wrk-tlog-tile-{s}-r*.txt")))] for s in ("ours", "nginx")}
    size = text("tlog-size.txt", "?")
    if proofs:
        rps = mean([r["rps"] for r in proofs])
        p(f"Inclusion proofs of random versions in a tree of {size} at 64 connections: **{fmt(rps)} req/s**, "
          f"p99 {fmt(mean([r['p99'] for r in proofs]), 2)} ms, {fmt(mean([r['per_cpu_s'] for r in proofs]))} requests per server CPU-s, "
          f"{sum(r['errors'] + r['non2xx'] for r in proofs)} errors.\n")
        goals.append(("proof routes ≥ 50k requests/s at 64 connections", f"{rps:,.0f}/s", verdict(rps >= 50000)))
    if tiles["ours"] and tiles["nginx"]:
        o, n = mean([r["rps"] for r in tiles["ours"]]), mean([r["rps"] for r in tiles["nginx"]])
        p(f"A full level-0 tile (8 KiB) at 64 connections: ours **{fmt(o)} req/s**, nginx serving the "
          f"same file **{fmt(n)} req/s** ({o / n:.2f}×); requests per server CPU-s ours "
          f"{fmt(mean([r['per_cpu_s'] for r in tiles['ours']]))} / nginx {fmt(mean([r['per_cpu_s'] for r in tiles['nginx']]))}.\n")
        goals.append(("full tiles served ≥ 0.9× nginx serving the same file", f"{o / n:.2f}×", verdict(o / n >= 0.9)))

# ------------------------------------------------------------------ retention (issue 21)
# retention.txt: perf/retention_measure.rs's `row key=value ...` lines (every 20,000 versions)
# and its `done` line; retention-writes-{on,off}-r*.json: loadgen writes with the window on/off.
def kv_lines(name):
    rows = []
    for line in text(name).splitlines():
        words = line.split()
        if words:
            rows.append((words[0], dict(w.partition("=")[::2] for w in words[1:])))
    return rows


rr = kv_lines("retention.txt")
rows = [d for kind, d in rr if kind == "row"]
renv = {}
for k, _, v in (l.partition("=") for l in text("retention-env.txt").splitlines()):
    # The first run's start, the last run's end (RETENTION_N=0 re-runs append).
    if k == "loadavg_end" or k not in renv:
        renv[k] = v
if rows:
    mib = lambda b: int(b) / (1024 * 1024)
    done = next((d for kind, d in rr if kind == "done"), {})
    p("## Retention window (issue 21): `retain_versions` = "
      f"{rows[0]['retain']}, an amnesiac follower and the authority it follows\n")
    p(f"{done.get('commits', '?')} single-op commits in {done.get('secs', '?')} s; loadavg "
      f"{renv.get('loadavg_start', '?')} at start, {renv.get('loadavg_end', '?')} at end.\n")
    p("| version | follower RssAnon MiB ([heap] / other anon) | follower log held MiB | sum MiB | follower oldest | authority data dir MiB | authority segments |")
    p("|---|---|---|---|---|---|---|")
    for d in rows:
        p(f"| {d['version']} | {mib(d['anon_b']):.1f} ({mib(d.get('heap_anon_b', 0)):.1f} / {mib(d.get('mapped_anon_b', 0)):.1f}) | {mib(d['log_b']):.1f} | "
          f"{mib(int(d['anon_b']) + int(d['log_b'])):.1f} | {d['oldest']} | {mib(d['dir_b']):.1f} | {d['segments']} |")
    p("")
    late = [d for d in rows if int(d["version"]) >= 20000]
    if late:
        sums = [int(d["anon_b"]) + int(d["log_b"]) for d in late]
        spread = max(sums) / min(sums) - 1 if min(sums) else float("nan")
        goals.append(("amnesiac follower, retain_versions = 10000: memory (RssAnon + log held) flat "
                      "within 10 % from version 20,000 on (issue 21)",
                      f"{mib(min(sums)):.1f}–{mib(max(sums)):.1f} MiB ({spread * 100:+.0f} %)",
                      verdict(spread <= 0.10)))
        goals.append(("amnesiac follower: memory ≤ 48 MiB in all (issue 21)",
                      f"{mib(max(int(d['anon_b']) + int(d['log_b']) for d in rows)):.1f} MiB",
                      verdict(max(int(d["anon_b"]) + int(d["log_b"]) for d in rows) <= 48 * 1024 * 1024)))
        dirs = [int(d["dir_b"]) for d in late]
        seg = int(late[0]["segment_b"])
        goals.append(("authority, retain_versions = 10000: data directory flat within one segment "
                      "from version 20,000 on (issue 21)",
                      f"{mib(min(dirs)):.1f}–{mib(max(dirs)):.1f} MiB (segment {mib(seg):.0f} MiB)",
                      verdict(max(dirs) - min(dirs) <= seg)))
rw = {m: [load(os.path.basename(f)) for f in sorted(glob.glob(path(f"retention-writes-{m}-r*.json")))] for m in ("on", "off")}
if rw["on"] and rw["off"]:
    p("Commit latency with the window on (`retain_versions = 2000`) vs off, side by side in one run: "
      "2-of-3, `fsync = \"batch\"`, 64 clients, 4 MiB segments, a checkpoint every 1,000 commits in both.\n")
    p("| window | round | commits/s | p50 ms | p99 ms | oldest_version at end |")
    p("|---|---|---|---|---|---|")
    for m in ("on", "off"):
        for i, d in enumerate(rw[m], 1):
            p(f"| {m} | {i} | {d['commits_per_s']} | {d['commit_latency'].get('p50_ms', '?')} | "
              f"{d['commit_latency']['p99_ms']} | {text(f'retention-oldest-{m}-r{i}.txt', '?').strip()} |")
    p("")
    p99 = {m: statistics.mean([float(d["commit_latency"]["p99_ms"]) for d in rw[m]]) for m in ("on", "off")}
    ratio = p99["on"] / p99["off"] if p99["off"] else float("nan")
    dropped = all(text(f"retention-oldest-on-r{i}.txt", "0").strip() not in ("", "0")
                  for i in range(1, len(rw["on"]) + 1))
    goals.append(("dropping segments never stalls the writer: commit p99 with the window on within "
                  "noise (≤ 1.2×) of off, same run (issue 21)",
                  f"{p99['on']:.2f} vs {p99['off']:.2f} ms ({ratio:.2f}×)"
                  + ("" if dropped else ", NO drop happened"),
                  verdict(ratio <= 1.2 and dropped)))

# ------------------------------------------------------------------ goals
if goals:
    p("## Goals (issue 7, and the benchmark paragraphs of issues 4 and 5)\n")
    p("| goal | this run | |")
    p("|---|---|---|")
    for g, m, v in goals:
        p(f"| {g} | {m} | {v} |")
    p("")

print("\n".join(out))
