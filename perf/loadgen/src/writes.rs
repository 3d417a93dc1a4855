//! `writes`: C concurrent clients doing propose → approve (one request per signer) → commit.
//!
//! Two modes:
//!
//! - `pipelined` (default): every client takes the next *ticket* (base version) from a shared
//!   counter, so the C clients never build on the same base. Proposals and signatures for every
//!   ticket are prepared before the clock starts (signers are people or HSMs, not the
//!   committer's CPU). A client proposes and approves at once (this is where the verifier pool
//!   works in parallel) and sends its commit as soon as the client holding the previous ticket
//!   has sent its own, so commits reach the writer in order and group commit can batch them. A
//!   commit that overtakes its predecessor anyway (the two connections sit on different HTTP
//!   workers) gets 409 "not HEAD" and is retried at once; those retries are counted. This is the
//!   best case for C independent committers of a single-HEAD CAS registry.
//! - `contended`: every client reads HEAD, signs a proposal on it (in the client, timed), and
//!   retries from HEAD on any 409: what C uncoordinated committers get. Conflicts are counted.
//!
//! `--flow submit` (pipelined only): each ticket is one `POST /submit` of a DSSE envelope signed
//! by the first `threshold` signers, prepared before the clock starts like the three-step
//! requests; sent in ticket order like the commits (a submit that overtakes its predecessor is
//! held by the writer for `proposals.commit_wait_ms`, and retried here on a 409 "not HEAD").
//!
//! `--send-order ticket|free` (pipelined only): `ticket` (default) as above, each commit or submit
//! waits until the previous ticket's is on the wire, a hand-off between client threads per write;
//! `free` sends as soon as the client is ready and leaves the ordering to the writer, which holds
//! a commit or submit that arrives before its predecessor (`proposals.commit_wait_ms`): what a
//! client holding a batch of signed envelopes for consecutive versions (a bulk import, a
//! follower-like replayer) can do, and the closest analogue of independent etcd puts.
//!
//! `--alg ed25519|ml-dsa-65|hybrid` chooses the signers' key algorithm (common.rs's deterministic
//! seeds; the server's config must come from `loadgen signers N --alg` with the same algorithm).
//!
//! Commit latency = first `POST /commit` (or `/submit`) sent → its 200 (the durable
//! acknowledgement).

use crate::common::{self, ms, signers_alg, summary_ms, Args};
use crate::http::Conn;
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use svc_registry::domain::algs::KeyAlg;

struct Prepared {
    payload: Vec<u8>,
    id: String,
    approvals: Vec<Vec<u8>>,
    commit: Vec<u8>,
    /// The `POST /submit` body: the payload and the same signatures as one DSSE envelope.
    envelope: Vec<u8>,
}

pub fn proposal(registry_id: &str, base: u64, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "registry_id": registry_id,
        "base_version": base,
        "ops": [{"op": "put", "kind": "node", "id": format!("lg-{tag}"),
                 "body": {"addr": format!("10.{}.{}.{}:9000", (base >> 16) & 255, (base >> 8) & 255, base & 255),
                          "zone": "eu-1", "weight": 10}}],
        "note": "load generator proposal, about the size of a typical single-op change"
    }))
    .unwrap()
}

fn prepare(
    registry_id: &str,
    threshold: usize,
    n_signers: usize,
    alg: KeyAlg,
    bases: Vec<u64>,
) -> Vec<Prepared> {
    let keys = signers_alg(n_signers, alg);
    bases
        .into_iter()
        .map(|b| {
            let payload = proposal(registry_id, b, &b.to_string());
            let id = common::sha256_hex(&payload);
            let sigs: Vec<serde_json::Value> = keys[..threshold]
                .iter()
                .map(|k| json!({"keyid": k.keyid, "sig": k.sign(&payload)}))
                .collect();
            let approvals = sigs
                .iter()
                .map(|s| {
                    serde_json::to_vec(&json!({"proposal_id": id, "signatures": [s]})).unwrap()
                })
                .collect();
            let commit = format!(r#"{{"proposal_id":"{id}"}}"#).into_bytes();
            let envelope = serde_json::to_vec(&json!({
                "payloadType": svc_registry::domain::dsse::PAYLOAD_TYPE,
                "payload": svc_registry::domain::dsse::b64(&payload),
                "signatures": sigs,
            }))
            .unwrap();
            Prepared {
                payload,
                id,
                approvals,
                commit,
                envelope,
            }
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    commit_ms: Vec<f64>,
    txn_ms: Vec<f64>,
    ack_at: Vec<Instant>,
    overtaken_retries: u64,
    busy_retries: u64,
    conflicts: u64,
    errors: Vec<String>,
}

impl Tally {
    fn merge(&mut self, o: Tally) {
        self.commit_ms.extend(o.commit_ms);
        self.txn_ms.extend(o.txn_ms);
        self.ack_at.extend(o.ack_at);
        self.overtaken_retries += o.overtaken_retries;
        self.busy_retries += o.busy_retries;
        self.conflicts += o.conflicts;
        self.errors.extend(o.errors);
    }
}

/// Post until the answer is not 429 (counted).
fn post_retry(
    c: &mut Conn,
    path: &str,
    body: &[u8],
    busy: &mut u64,
) -> Result<crate::http::Resp, String> {
    loop {
        let r = c.post(path, body).map_err(|e| format!("{path}: {e}"))?;
        if r.status == 429 {
            *busy += 1;
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        return Ok(r);
    }
}

/// Progress of each ticket's commit, in a ring (slot `ticket % len`): how many attempts it has
/// sent, and whether it is answered. The holder of ticket `b` sends its commit once `b - 1` has
/// sent one, and after a 409 "not HEAD" (it overtook `b - 1` on the other HTTP worker) re-sends
/// as soon as `b - 1` has sent a newer attempt or been answered.
struct Progress {
    slots: Vec<(Mutex<(u64, u64)>, Condvar)>,
}

const ANSWERED: u64 = u64::MAX;

impl Progress {
    fn new(len: usize, first: u64) -> Progress {
        let slots: Vec<(Mutex<(u64, u64)>, Condvar)> = (0..len)
            .map(|_| (Mutex::new((u64::MAX, 0)), Condvar::new()))
            .collect();
        // The ticket before the first counts as answered.
        if first > 0 {
            *slots[((first - 1) as usize) % len].0.lock().unwrap() = (first - 1, ANSWERED);
        }
        Progress { slots }
    }

    /// Wait until ticket - 1 has sent more than `seen` attempts (or is answered); returns the
    /// count seen.
    fn wait_pred(&self, ticket: u64, first: u64, seen: u64, abort: &AtomicBool) -> u64 {
        if ticket == first {
            return ANSWERED;
        }
        let pred = ticket - 1;
        let (m, cv) = &self.slots[(pred as usize) % self.slots.len()];
        let mut g = m.lock().unwrap();
        loop {
            let (t, gen) = *g;
            // A slot holding a later ticket means pred is long answered.
            if t != u64::MAX && t > pred {
                return ANSWERED;
            }
            if t == pred && gen > seen {
                return gen;
            }
            if abort.load(Ordering::Relaxed) {
                return ANSWERED;
            }
            g = cv.wait_timeout(g, Duration::from_millis(50)).unwrap().0;
        }
    }

    fn sent(&self, ticket: u64) {
        self.set(ticket, None);
    }

    fn answered(&self, ticket: u64) {
        self.set(ticket, Some(ANSWERED));
    }

    fn set(&self, ticket: u64, gen: Option<u64>) {
        let (m, cv) = &self.slots[(ticket as usize) % self.slots.len()];
        let mut g = m.lock().unwrap();
        if g.0 != ticket {
            *g = (ticket, 0);
        }
        g.1 = match gen {
            Some(v) => v,
            None => g.1.saturating_add(1).min(ANSWERED - 1),
        };
        cv.notify_all();
    }
}

pub fn run(a: &Args) {
    let addr = a.req("addr");
    let registry_id = a.str("registry-id", "perf-registry");
    let n_signers: usize = a.num("signers", 3);
    let threshold: usize = a.num("threshold", 2);
    let clients: usize = a.num("clients", 1);
    let secs: f64 = a.num("secs", 5.0);
    let mode = a.str("mode", "pipelined");
    let flow = a.str("flow", "three-step");
    if flow != "three-step" && (flow != "submit" || mode != "pipelined") {
        eprintln!("--flow is three-step, or submit with --mode pipelined");
        std::process::exit(2);
    }
    let submit = flow == "submit";
    let ordered = match a.str("send-order", "ticket").as_str() {
        "ticket" => true,
        "free" => false,
        other => panic!("--send-order {other:?}: expected ticket or free"),
    };
    // The signers' key algorithm: the server's config must list the same keys
    // (`loadgen signers N --alg A`).
    let alg = common::parse_alg(&a.str("alg", "ed25519"));
    let metrics = a.str("metrics", "");
    let mut head_conn = Conn::new(&addr);
    let head = head_conn
        .get("/registry/head")
        .expect("GET /registry/head")
        .json()["version"]
        .as_u64()
        .expect("head version");
    let pid: u32 = a.num("pid", 0);
    let cpu0 = (pid > 0).then(|| common::thread_cpu_ns(pid));
    let before = (!metrics.is_empty()).then(|| common::scrape(&metrics));
    let (tally, elapsed, prep_secs, client_ns) = if mode == "contended" {
        let c0 = common::self_cpu_ns();
        let (t, e) = contended(
            &addr,
            &registry_id,
            n_signers,
            threshold,
            alg,
            clients,
            secs,
        );
        (t, e, 0.0, common::self_cpu_ns() - c0)
    } else {
        pipelined(
            &addr,
            &registry_id,
            n_signers,
            threshold,
            clients,
            secs,
            head,
            submit,
            ordered,
            alg,
            a,
        )
    };
    let after = (!metrics.is_empty()).then(|| common::scrape(&metrics));
    let cpu1 = (pid > 0).then(|| common::thread_cpu_ns(pid));
    let end_head = head_conn
        .get("/registry/head")
        .map(|r| r.json()["version"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    let commits = tally.commit_ms.len();
    let mut server = json!({});
    if let (Some(b), Some(af)) = (before, after) {
        let d = |k: &str| af.get(k).copied().unwrap_or(0.0) - b.get(k).copied().unwrap_or(0.0);
        let syncs = d("fsync_seconds_count");
        server = json!({
            "syncs": syncs,
            "mean_fsync_ms": common::round3(if syncs > 0.0 { d("fsync_seconds_sum") / syncs * 1000.0 } else { f64::NAN }),
            "mean_batch": common::round3(if d("fsync_batch_size_count") > 0.0 { d("fsync_batch_size_sum") / d("fsync_batch_size_count") } else { f64::NAN }),
            "verify_count": d("approval_verify_seconds_count"),
            "mean_verify_us": common::round3(if d("approval_verify_seconds_count") > 0.0 { d("approval_verify_seconds_sum") / d("approval_verify_seconds_count") * 1e6 } else { f64::NAN }),
        });
    }
    // Server CPU per durable commit, by thread role (worker and verifier threads summed).
    let mut cpu = json!({});
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let mut roles: std::collections::BTreeMap<String, f64> = Default::default();
        for (name, ns) in &c1 {
            let d = *ns as f64 - c0.get(name).copied().unwrap_or(0) as f64;
            let role = name
                .trim_end_matches(|c: char| c.is_ascii_digit())
                .trim_end_matches('-')
                .to_string();
            *roles.entry(role).or_insert(0.0) += d;
        }
        let n = commits.max(1) as f64;
        let total: f64 = roles.values().sum();
        let mut per = serde_json::Map::new();
        for (role, ns) in roles {
            if ns / n >= 1000.0 {
                per.insert(role, json!(common::round3(ns / n / 1000.0)));
            }
        }
        cpu = json!({"us_per_commit": common::round3(total / n / 1000.0), "by_thread_us": per});
    }
    let out = json!({
        "cpu": cpu,
        "mode": mode,
        "flow": flow,
        "send_order": if ordered { "ticket" } else { "free" },
        "alg": alg.as_str(),
        "clients": clients,
        "threshold": threshold,
        "signers": n_signers,
        "commits": commits,
        "elapsed_s": common::round3(elapsed),
        "commits_per_s": common::round3(commits as f64 / elapsed),
        "commit_latency": summary_ms(tally.commit_ms),
        "txn_latency": summary_ms(tally.txn_ms),
        "overtaken_retries": tally.overtaken_retries,
        "busy_retries": tally.busy_retries,
        "conflicts": tally.conflicts,
        "head_before": head,
        "head_after": end_head,
        "prepare_s": common::round3(prep_secs),
        "errors": tally.errors.iter().take(5).collect::<Vec<_>>(),
        "error_count": tally.errors.len(),
        "server": server,
        // The load generator's own CPU over the timed window (preparation excluded), per commit.
        "client_cpu_us_per_commit": common::us_per(client_ns, commits),
    });
    println!("{out}");
}

#[allow(clippy::too_many_arguments)]
fn pipelined(
    addr: &str,
    registry_id: &str,
    n_signers: usize,
    threshold: usize,
    clients: usize,
    secs: f64,
    head: u64,
    submit: bool,
    ordered: bool,
    alg: KeyAlg,
    a: &Args,
) -> (Tally, f64, f64, u64) {
    // Enough tickets for the run at a generous rate; the run ends early if they run out.
    let max: u64 = a.num("max-proposals", 20_000);
    let t0 = Instant::now();
    let threads = 2;
    let chunk = max.div_ceil(threads);
    let prepared: Vec<Prepared> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let lo = head + t * chunk;
                let hi = (head + (t + 1) * chunk).min(head + max);
                s.spawn(move || prepare(registry_id, threshold, n_signers, alg, (lo..hi).collect()))
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let prep_secs = t0.elapsed().as_secs_f64();
    let prepared = Arc::new(prepared);
    let next = Arc::new(AtomicU64::new(head));
    let ring = Arc::new(Progress::new(clients * 2 + 2, head));
    let abort = Arc::new(AtomicBool::new(false));
    let cpu0 = common::self_cpu_ns();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|_| {
            let (prepared, next, ring, abort) =
                (prepared.clone(), next.clone(), ring.clone(), abort.clone());
            let addr = addr.to_string();
            std::thread::spawn(move || {
                let mut t = Tally::default();
                let mut c = Conn::new(&addr);
                loop {
                    if Instant::now() >= deadline || abort.load(Ordering::Relaxed) {
                        break;
                    }
                    let ticket = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = prepared.get((ticket - head) as usize) else {
                        break;
                    };
                    if let Err(e) = one(
                        &mut c, p, ticket, head, &ring, &abort, submit, ordered, &mut t,
                    ) {
                        t.errors.push(format!("ticket {ticket}: {e}"));
                        abort.store(true, Ordering::SeqCst);
                        ring.answered(ticket);
                        break;
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        all.merge(h.join().unwrap());
    }
    let client_ns = common::self_cpu_ns() - cpu0;
    let last = all.ack_at.iter().max().copied().unwrap_or(start);
    (
        all,
        (last - start).as_secs_f64().max(1e-9),
        prep_secs,
        client_ns,
    )
}

/// One ticket: propose, approve and commit (or one submit), the commit (submit) sent in ticket
/// order.
#[allow(clippy::too_many_arguments)]
fn one(
    c: &mut Conn,
    p: &Prepared,
    ticket: u64,
    first: u64,
    ring: &Progress,
    abort: &AtomicBool,
    submit: bool,
    ordered: bool,
    t: &mut Tally,
) -> Result<(), String> {
    let began = Instant::now();
    if !submit {
        let r = post_retry(c, "/propose", &p.payload, &mut t.busy_retries)?;
        if r.status != 202 {
            return Err(format!("propose {}: {}", r.status, r.text()));
        }
        for body in &p.approvals {
            let r = post_retry(c, "/approve", body, &mut t.busy_retries)?;
            if r.status != 200 {
                return Err(format!("approve {}: {}", r.status, r.text()));
            }
        }
    }
    let (path, body) = if submit {
        ("/submit", &p.envelope)
    } else {
        ("/commit", &p.commit)
    };
    let mut seen = if ordered {
        ring.wait_pred(ticket, first, 0, abort)
    } else {
        0
    };
    if abort.load(Ordering::Relaxed) {
        return Err("aborted (an earlier ticket failed)".into());
    }
    let sent = Instant::now();
    let result = loop {
        let sent_ok = c.send("POST", path, Some(body));
        // The next ticket may send its commit now: ours is on the wire ahead of it.
        ring.sent(ticket);
        if let Err(e) = sent_ok {
            break Err(format!("{path}: {e}"));
        }
        let r = match c.recv() {
            Ok(r) => r,
            Err(e) => break Err(format!("{path}: {e}")),
        };
        match r.status {
            200 => break Ok(()),
            409 if r.text().contains("is not HEAD") && seen != ANSWERED => {
                t.overtaken_retries += 1;
                seen = ring.wait_pred(ticket, first, seen, abort);
            }
            429 => {
                t.busy_retries += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            s => break Err(format!("{path} {}: {} ({})", s, r.text(), p.id)),
        }
    };
    ring.answered(ticket);
    result?;
    let now = Instant::now();
    t.commit_ms.push(ms(now - sent));
    t.txn_ms.push(ms(now - began));
    t.ack_at.push(now);
    Ok(())
}

fn contended(
    addr: &str,
    registry_id: &str,
    n_signers: usize,
    threshold: usize,
    alg: KeyAlg,
    clients: usize,
    secs: f64,
) -> (Tally, f64) {
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|ci| {
            let addr = addr.to_string();
            let registry_id = registry_id.to_string();
            std::thread::spawn(move || {
                let keys = signers_alg(n_signers, alg);
                let mut t = Tally::default();
                let mut c = Conn::new(&addr);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let began = Instant::now();
                    let res: Result<bool, String> = (|| {
                        let h = c.get("/registry/head").map_err(|e| e.to_string())?;
                        let base = h.json()["version"].as_u64().ok_or("head")?;
                        let payload = proposal(&registry_id, base, &format!("c{ci}-{n}"));
                        let id = common::sha256_hex(&payload);
                        let r = post_retry(&mut c, "/propose", &payload, &mut t.busy_retries)?;
                        if r.status == 409 {
                            return Ok(false);
                        }
                        if r.status != 202 {
                            return Err(format!("propose {}: {}", r.status, r.text()));
                        }
                        for k in &keys[..threshold] {
                            let body = serde_json::to_vec(&json!({"proposal_id": id,
                                "signatures": [{"keyid": k.keyid, "sig": k.sign(&payload)}]}))
                            .unwrap();
                            let r = post_retry(&mut c, "/approve", &body, &mut t.busy_retries)?;
                            if r.status == 409 {
                                return Ok(false);
                            }
                            if r.status != 200 {
                                return Err(format!("approve {}: {}", r.status, r.text()));
                            }
                        }
                        let sent = Instant::now();
                        let body = format!(r#"{{"proposal_id":"{id}"}}"#);
                        let r =
                            post_retry(&mut c, "/commit", body.as_bytes(), &mut t.busy_retries)?;
                        match r.status {
                            200 => {
                                let now = Instant::now();
                                t.commit_ms.push(ms(now - sent));
                                t.txn_ms.push(ms(now - began));
                                t.ack_at.push(now);
                                Ok(true)
                            }
                            409 => Ok(false),
                            s => Err(format!("commit {s}: {}", r.text())),
                        }
                    })();
                    match res {
                        Ok(true) => {}
                        Ok(false) => t.conflicts += 1,
                        Err(e) => {
                            t.errors.push(e);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut all = Tally::default();
    for h in handles {
        all.merge(h.join().unwrap());
    }
    (all, start.elapsed().as_secs_f64())
}
