//! Follower catch-up rate, CPU per version, RSS, and commit → follower latency (issue 15;
//! figures in docs/PERFORMANCE.md "Followers"). Not part of `cargo test`: it needs release
//! binaries and a quiet machine. `perf/run.sh --only follow` runs it; by hand:
//!   cargo build --release --bin svc-registry
//!   cp perf/follow_measure.rs tests/zz_follow_measure.rs
//!   SVC_REGISTRY_BIN=$PWD/target/release/svc-registry N=100000 \
//!     cargo test --release --test zz_follow_measure -- --nocapture; rm tests/zz_follow_measure.rs
//!
//! It writes an authority's data directory of N single-put versions of one descriptor (2-of-3,
//! real signatures, chained as the writer chains them) straight through the storage library, so
//! the authority's history costs seconds rather than N HTTP round trips; starts the authority on it; times a
//! fresh durable and a fresh `--amnesia` follower to N (CPU of the follower process, RSS at its
//! ready line and after the catch-up); then makes LAT commits (default 500) at ~100/s through
//! the authority's HTTP API and times acknowledged → announced on the stream of the follower
//! and of a follower of it (a stream event is emitted when the snapshot is published, so it
//! is the moment the version is served; streams are not polled, so measuring adds no load).
//!
//! Environment: SVC_REGISTRY_BIN (required), N (20000), LAT (500), MODES (`durable,amnesia`),
//! FOLLOW_WRAP (a command prefix for the first follower, e.g. `valgrind --tool=callgrind
//! --callgrind-out-file=/tmp/cg.%p`, for profiling; the follower then runs much slower),
//! FOLLOW_OUT (a file the `RESULT` lines are appended to).
//!
//! Invariant: every process it starts is killed when its handle drops; it binds 127.0.0.1 only.
mod common;
use common::*;
use serde_json::json as j;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use svc_registry::domain::chain;
use svc_registry::domain::proposal::{self, ProposalLimits};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::signers::{SignerKey, SignerSet};
use svc_registry::domain::state;
use svc_registry::history::Loc;
use svc_registry::log::{self as rlog, OsIo, StorageOptions};
use svc_registry::snapshot::Snapshot;

struct Proc {
    child: std::process::Child,
    registry: String,
    metrics: String,
    _dir: tempfile::TempDir,
}
impl Drop for Proc {
    /// SIGTERM first (a profiler wrapping the follower writes its output on exit), SIGKILL if
    /// it is still there after 30 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the binary on `data` (a fresh directory under the temp dir when `None`).
fn spawn(setup: &Setup, flags: &[&str], data: Option<&Path>, wrap: &[String]) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let data = data.map_or_else(|| dir.path().join("data"), Path::to_path_buf);
    std::fs::write(&cfg, setup.config_text(&data)).unwrap();
    let bin = std::env::var("SVC_REGISTRY_BIN").expect("SVC_REGISTRY_BIN: a release svc-registry");
    let mut cmd = match wrap.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.arg("--config").arg(&cfg).args(flags);
    let (child, registry, metrics) = spawn_measured(&mut cmd, Duration::from_secs(600));
    Proc {
        child,
        registry,
        metrics,
        _dir: dir,
    }
}

fn get(addr: &str, path: &str) -> serde_json::Value {
    let r = svc_registry::http::client::request(
        &Target::Tcp(addr.into()),
        "GET",
        path,
        &[],
        None,
        TIMEOUT,
    )
    .unwrap();
    serde_json::from_slice(&r.body).unwrap()
}
fn post(addr: &str, path: &str, body: &[u8]) -> serde_json::Value {
    let r = svc_registry::http::client::request(
        &Target::Tcp(addr.into()),
        "POST",
        path,
        &[("Content-Type", "application/json")],
        Some(body),
        TIMEOUT,
    )
    .unwrap();
    assert!(r.status < 300, "{}", String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}
/// Every version puts the same descriptor (a new body each time), so the state stays one
/// descriptor and RSS growth measures history, as issue 14's figures do (`--same-id 1`).
fn payload(base: u64) -> Vec<u8> {
    let addr = format!(
        "10.{}.{}.{}:9000",
        (base >> 16) & 255,
        (base >> 8) & 255,
        base & 255
    );
    serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
        "ops": [{"op":"put","kind":"node","id": "node-0","body":{"addr": addr}}]}))
    .unwrap()
}
fn commit(setup: &Setup, addr: &str, base: u64) {
    let payload = payload(base);
    let id = post(addr, "/propose", &payload)["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    post(addr, "/approve", &setup.approve_body(&id, &payload));
    post(
        addr,
        "/commit",
        format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes(),
    );
}

/// Write `n` versions after genesis into `data` as the authority's writer would (the first
/// `threshold` signers sign each), with a checkpoint at the head.
fn synthesize(setup: &Setup, data: &Path, n: u64) {
    std::fs::create_dir_all(data).unwrap();
    let opts = StorageOptions {
        segment_bytes: 64 << 20,
        checkpoints_kept: 2,
    };
    let mut opened = rlog::open(data, &opts, Arc::new(OsIo)).unwrap();
    let keys = setup
        .signers
        .iter()
        .map(|s| SignerKey {
            keyid: s.keyid.clone(),
            public: s.key.verifying_key().into(),
            not_before: None,
            not_after: None,
        })
        .collect();
    let set = Arc::new(SignerSet::new(setup.threshold, keys).unwrap());
    let id = setup.registry_id.as_str();
    svc_registry::storage::write_genesis(&mut opened, data, id, &set).unwrap();
    let mut writer = opened.writer;
    let limits = ProposalLimits {
        max_ops: 1,
        max_descriptor_bytes: 4096,
    };
    let mut snap = Arc::new(Snapshot::genesis(id, set));
    let mut end = 0;
    let mut signers: Vec<&Signer> = setup.signers[..setup.threshold].iter().collect();
    signers.sort_by(|a, b| a.keyid.cmp(&b.keyid));
    for v in 1..=n {
        let payload = payload(v - 1);
        let p = proposal::parse(&payload, id, &limits).unwrap();
        let descriptors = state::apply(&snap.descriptors, &p.ops, v).unwrap();
        let proposal_id = svc_registry::domain::sha256_hex(&payload);
        let sigs: Vec<(String, String)> = signers
            .iter()
            .map(|s| (s.keyid.clone(), s.sign(&payload)))
            .collect();
        let rec = CommitRecord {
            version: v,
            hash: chain::commit_hash(id, v, &snap.head.hash, &proposal_id, &sigs),
            prev_hash: snap.head.hash.clone(),
            committed_at_ms: 1_767_225_600_000 + v as i64,
            proposal_id,
            payload: payload.into(),
            signatures: sigs,
            descriptors: descriptors.len() as u64,
            genesis_signers: None,
        };
        let bytes = rec.to_json();
        end = writer.append(&bytes).unwrap();
        let loc = Loc {
            end,
            len: bytes.len() as u32,
        };
        snap = Arc::new(snap.next(Arc::new(rec), descriptors, loc));
    }
    opened.syncer.sync_to(end).unwrap();
    let cp = svc_registry::restore::checkpoint_bytes(&snap);
    rlog::write_checkpoint(data, &OsIo, n, &cp, 2).unwrap();
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// CPU per thread name (threads of one role summed, digits dropped: `verify-0` and `verify-1`
/// count as `verify-`): (name, user ms, system ms), largest first.
fn thread_cpu(pid: u32) -> Vec<(String, u64, u64)> {
    let mut by: HashMap<String, (u64, u64)> = HashMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(s) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let name: String = s
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map_or("", |(n, _)| n)
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .to_string();
        let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
        let e = by.entry(name).or_default();
        e.0 += f[11].parse::<u64>().unwrap() * 10;
        e.1 += f[12].parse::<u64>().unwrap() * 10;
    }
    let mut v: Vec<(String, u64, u64)> = by.into_iter().map(|(k, (u, s))| (k, u, s)).collect();
    v.sort_by_key(|t| std::cmp::Reverse(t.1 + t.2));
    v
}

/// (VmRSS, RssAnon) in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("RssAnon:"))
}

/// The value of the first sample of `/metrics` whose name ends with `name` (0 if none).
fn metric(addr: &str, name: &str) -> f64 {
    let Ok(r) = svc_registry::http::client::request(
        &Target::Tcp(addr.into()),
        "GET",
        "/metrics",
        &[],
        None,
        TIMEOUT,
    ) else {
        return 0.0;
    };
    String::from_utf8_lossy(&r.body)
        .lines()
        .find(|l| l.split(' ').next().is_some_and(|k| k.ends_with(name)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn head(addr: &str) -> u64 {
    get(addr, "/registry/head")["version"].as_u64().unwrap()
}

/// Wait (polling every 20 ms, no deadline: a profiled run is slow) until `addr` serves `n`.
fn wait_for(addr: &str, n: u64) {
    while head(addr) < n {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A thread that records when each commit event arrives on `addr`'s stream.
fn watch(addr: &str, seen: Arc<Mutex<HashMap<u64, Instant>>>) {
    let target = Target::Tcp(addr.into());
    let (resp, mut reader) = svc_registry::http::client::open_stream(
        &target,
        "/registry/stream",
        &[],
        Duration::from_secs(3600),
    )
    .unwrap();
    assert_eq!(resp.status, 200);
    std::thread::spawn(move || {
        while let Ok(Some(e)) = svc_registry::http::events::next_event(&mut *reader) {
            if let ("commit", Some(v)) = (e.event.as_str(), e.id) {
                seen.lock().unwrap().insert(v, Instant::now());
            }
        }
    });
}

fn report(line: String) {
    eprintln!("RESULT {line}");
    if let Ok(path) = std::env::var("FOLLOW_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

#[test]
fn measure() {
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env_num("N", 20000);
    let lat = env_num("LAT", 500);
    let modes = std::env::var("MODES").unwrap_or_else(|_| "durable,amnesia".to_string());
    let wrap: Vec<String> = std::env::var("FOLLOW_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let setup = Setup::default();
    let adir = tempfile::tempdir().unwrap();
    let t = Instant::now();
    synthesize(&setup, &adir.path().join("data"), n);
    eprintln!("authority data: {n} versions written in {:?}", t.elapsed());
    let auth = spawn(&setup, &[], Some(&adir.path().join("data")), &[]);
    assert_eq!(head(&auth.registry), n);
    let genesis = get(&auth.registry, "/registry/0")["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let follow_of = |upstream: &str| Setup {
        tables: format!(
            "[follow]\nupstreams = [\"http://{upstream}\"]\ngenesis_hash = {genesis:?}\n"
        ),
        ..Setup::default()
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    report(format!(
        "n={n} loadavg_at_start=\"{}\"",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    for mode in modes.split(',') {
        let flags: &[&str] = if mode == "amnesia" {
            &["--amnesia"]
        } else {
            &[]
        };
        let t = Instant::now();
        let auth_ticks = cpu_ticks(auth.child.id());
        let f = spawn(&follow_of(&auth.registry), flags, None, &wrap);
        let pid = f.child.id();
        let rss_ready = rss_kib(pid);
        // RssAnon half-way: growth over the second half excludes the bounded structures that
        // fill during the first versions (recent proposal ids, the stream's event cache).
        wait_for(&f.registry, n / 2);
        let rss_half = rss_kib(pid);
        wait_for(&f.registry, n);
        let el = t.elapsed();
        let ticks = cpu_ticks(pid);
        let threads = thread_cpu(pid);
        let rss_done = rss_kib(pid);
        let tck = 100.0; // USER_HZ on Linux
        let cpu_us = ticks as f64 * 1e6 / tck;
        report(format!(
            "mode={mode} versions={n} secs={:.2} versions_per_s={:.0} cpu_ms={:.0} cores_used={:.2} cpu_us_per_version={:.1} rss_ready_kib={} rss_anon_ready_kib={} rss_caught_up_kib={} rss_anon_caught_up_kib={} rss_anon_growth_b_per_version={:.1} rss_anon_growth_second_half_b_per_version={:.1} loadavg=\"{}\"",
            el.as_secs_f64(),
            n as f64 / el.as_secs_f64(),
            cpu_us / 1000.0,
            cpu_us / 1e6 / el.as_secs_f64(),
            cpu_us / n as f64,
            rss_ready.0,
            rss_ready.1,
            rss_done.0,
            rss_done.1,
            (rss_done.1 as f64 - rss_ready.1 as f64) * 1024.0 / n as f64,
            (rss_done.1 as f64 - rss_half.1 as f64) * 1024.0 / (n - n / 2) as f64,
            std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
        ));
        let per_thread: Vec<String> = threads
            .iter()
            .map(|(name, u, s)| {
                format!(
                    "{name}:user={:.1}us,sys={:.1}us",
                    *u as f64 * 1000.0 / n as f64,
                    *s as f64 * 1000.0 / n as f64
                )
            })
            .collect();
        report(format!(
            "mode={mode} per_version_per_thread {} authority_cpu_us_per_version={:.1} fsyncs={} fsynced_versions={}",
            per_thread.join(" "),
            (cpu_ticks(auth.child.id()) - auth_ticks) as f64 * 1e4 / n as f64,
            metric(&f.metrics, "fsync_batch_size_count"),
            metric(&f.metrics, "fsync_batch_size_sum"),
        ));
        if mode != "durable" || lat == 0 {
            continue;
        }
        // Latency: commit acknowledged -> announced (published) by the follower and by a
        // follower of it, at ~100 commits/s.
        let f2 = spawn(&follow_of(&f.registry), &["--amnesia"], None, &[]);
        wait_for(&f2.registry, n);
        let (s0, s1, s2) = (Arc::default(), Arc::default(), Arc::default());
        watch(&auth.registry, Arc::clone(&s0));
        watch(&f.registry, Arc::clone(&s1));
        watch(&f2.registry, Arc::clone(&s2));
        let fsync0 = (
            metric(&f.metrics, "fsync_seconds_sum"),
            metric(&f.metrics, "fsync_seconds_count"),
        );
        let ticks0 = (cpu_ticks(pid), cpu_ticks(f2.child.id()));
        let mut acked = Vec::new();
        let started = Instant::now();
        for (k, base) in (n..n + lat).enumerate() {
            let due = started + Duration::from_millis(10 * k as u64);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            commit(&setup, &auth.registry, base);
            acked.push((base + 1, Instant::now()));
        }
        let last = n + lat;
        let all_seen = poll_until(Duration::from_secs(30), || {
            s1.lock().unwrap().contains_key(&last) && s2.lock().unwrap().contains_key(&last)
        });
        assert!(all_seen, "the followers did not announce version {last}");
        let rate = lat as f64 / started.elapsed().as_secs_f64();
        let lats = |seen: &Mutex<HashMap<u64, Instant>>| {
            let seen = seen.lock().unwrap();
            let mut v: Vec<Duration> = acked
                .iter()
                .map(|(ver, at)| seen[ver].saturating_duration_since(*at))
                .collect();
            v.sort();
            v
        };
        let (l1, l2) = (lats(&s1), lats(&s2));
        // Where the follower's share goes: the authority's own announcement (acknowledged →
        // its stream event), then the hop (authority's event → the follower's event: the
        // follower reads the event, fetches the page, verifies, applies, syncs, publishes).
        let hops = |from: &Mutex<HashMap<u64, Instant>>, to: &Mutex<HashMap<u64, Instant>>| {
            let (from, to) = (from.lock().unwrap(), to.lock().unwrap());
            let mut v: Vec<Duration> = acked
                .iter()
                .filter_map(|(ver, _)| {
                    Some(to.get(ver)?.saturating_duration_since(*from.get(ver)?))
                })
                .collect();
            v.sort();
            v
        };
        let l0 = lats(&s0);
        let h1 = hops(&s0, &s1);
        let fsyncs = metric(&f.metrics, "fsync_seconds_count") - fsync0.1;
        let fsync_mean_ms =
            (metric(&f.metrics, "fsync_seconds_sum") - fsync0.0) * 1e3 / fsyncs.max(1.0);
        let p = |v: &Vec<Duration>, q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
        report(format!(
            "latency_parts authority_event_p50_ms={:.2} authority_event_p99_ms={:.2} hop_p50_ms={:.2} hop_p99_ms={:.2} follower_fsyncs={fsyncs} follower_fsync_mean_ms={fsync_mean_ms:.2}",
            p(&l0, 0.5).as_secs_f64() * 1e3,
            p(&l0, 0.99).as_secs_f64() * 1e3,
            p(&h1, 0.5).as_secs_f64() * 1e3,
            p(&h1, 0.99).as_secs_f64() * 1e3,
        ));
        report(format!(
            "latency commits={lat} rate_per_s={rate:.0} follower_p50_ms={:.2} follower_p99_ms={:.2} follower_max_ms={:.2} fof_p50_ms={:.2} fof_p99_ms={:.2} fof_max_ms={:.2} follower_cpu_ms={} fof_cpu_ms={} rss_idle_kib={:?}",
            p(&l1, 0.5).as_secs_f64() * 1e3,
            p(&l1, 0.99).as_secs_f64() * 1e3,
            l1.last().unwrap().as_secs_f64() * 1e3,
            p(&l2, 0.5).as_secs_f64() * 1e3,
            p(&l2, 0.99).as_secs_f64() * 1e3,
            l2.last().unwrap().as_secs_f64() * 1e3,
            (cpu_ticks(pid) - ticks0.0) * 10,
            (cpu_ticks(f2.child.id()) - ticks0.1) * 10,
            rss_kib(pid),
        ));
    }
}
