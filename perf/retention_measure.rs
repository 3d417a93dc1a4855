//! Retention window (issue 21; figures in docs/PERFORMANCE.md "Retention window"): an amnesiac
//! follower with `retain_versions = 10000` following an authority with the same window through
//! N single-put commits; every 20,000 versions it prints the follower's `RssAnon`, the log it
//! holds (`registry_log_bytes`: its in-memory journal, which is not mapped and so not in any
//! RSS figure) and their sum, and the authority's data directory size and segment count.
//! Not part of `cargo test`: it needs a release binary and a quiet machine. Run:
//!   cargo build --release --bin svc-registry
//!   cp perf/retention_measure.rs tests/zz_retention_measure.rs
//!   SVC_REGISTRY_BIN=$PWD/target/release/svc-registry N=200000 \
//!     cargo test --release --test zz_retention_measure -- --nocapture
//!   rm tests/zz_retention_measure.rs
//! `perf/run.sh --only retention` runs it (and the commit p99 side by side); with
//! RETENTION_OUT=FILE each row is also written there as a `row key=value ...` line for
//! perf/report.py. The goal is N = 1,000,000; the authority runs `fsync = "never"` so the client's
//! sequential `/submit`s are not bound by the disk (durability is not what is measured here).
mod common;
use common::*;
use serde_json::json as j;
use std::process::Command;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(30);
const RETAIN: u64 = 10_000;

struct Proc {
    child: std::process::Child,
    registry: String,
    metrics: String,
    data_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
}
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(setup: &Setup, flags: &[&str]) -> Proc {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let data_dir = dir.path().join("data");
    std::fs::write(&cfg, setup.config_text(&data_dir)).unwrap();
    let bin = std::env::var("SVC_REGISTRY_BIN").expect("SVC_REGISTRY_BIN: a release svc-registry");
    let (child, registry, metrics) = spawn_measured(
        Command::new(bin).arg("--config").arg(&cfg).args(flags),
        Duration::from_secs(60),
    );
    Proc {
        child,
        registry,
        metrics,
        data_dir,
        _dir: dir,
    }
}

fn request(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let r = svc_registry::http::client::request(
        &Target::Tcp(addr.into()),
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
        TIMEOUT,
    )
    .unwrap();
    (r.status, r.body)
}

fn head(addr: &str) -> u64 {
    let (_, body) = request(addr, "GET", "/registry/head", None);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["version"]
        .as_u64()
        .unwrap()
}

fn metric(addr: &str, name: &str) -> u64 {
    let (_, body) = request(addr, "GET", "/metrics", None);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn submit(setup: &Setup, addr: &str, base: u64, ids: u64) {
    let id = format!("n-{}", base % ids);
    let payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
        "ops": [{"op":"put","kind":"node","id": id,"body":{"addr":"10.0.0.1:9000"}}]}))
    .unwrap();
    let sigs: Vec<serde_json::Value> = setup.signers[..setup.threshold]
        .iter()
        .map(|k| j!({"keyid": k.keyid, "sig": k.sign(&payload)}))
        .collect();
    let env = j!({"payloadType": "application/vnd.svc-registry.proposal.v1+json",
        "payload": svc_registry::domain::dsse::b64(&payload), "signatures": sigs});
    let (status, body) = request(addr, "POST", "/submit", Some(&serde_json::to_vec(&env).unwrap()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// The follower's anonymous memory split by where it lives (/proc/PID/smaps): the main heap
/// (`[heap]`, glibc's brk arena), and anonymous mappings (thread arenas, large allocations, thread
/// stacks). Bytes. Says whether a step in RssAnon is heap the allocator keeps or a mapping.
fn anon_split(pid: u32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut other, mut in_heap) = (0, 0, false);
    for l in smaps.lines() {
        if let Some(kb) = l.strip_prefix("Anonymous:") {
            let b = kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap_or(0) * 1024;
            if in_heap {
                heap += b;
            } else {
                other += b;
            }
        } else if l.split_whitespace().next().is_some_and(|w| w.contains('-')) {
            in_heap = l.ends_with("[heap]");
        }
    }
    (heap, other)
}

fn dir_bytes(dir: &std::path::Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut segments = 0;
    for sub in ["log", "checkpoints"] {
        for e in std::fs::read_dir(dir.join(sub)).unwrap() {
            let e = e.unwrap();
            bytes += e.metadata().unwrap().len();
            segments += usize::from(sub == "log");
        }
    }
    (bytes, segments)
}

#[test]
fn measure() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    // Descriptor ids cycle through IDS (default 1000) so the state at HEAD stays the same size
    // and what is measured is the history a node holds; IDS=N puts a new descriptor each time
    // (the state then grows by design, window or not).
    let ids: u64 = std::env::var("IDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let window = format!(
        "[storage]\nretain_versions = {RETAIN}\ncheckpoint_every_commits = 5000\n\
         segment_bytes = 4194304\n"
    );
    let setup = Setup {
        tables: format!("{window}fsync = \"never\"\n"),
        ..Setup::default()
    };
    let auth = spawn(&setup, &[]);
    let genesis: serde_json::Value =
        serde_json::from_slice(&request(&auth.registry, "GET", "/registry/0", None).1).unwrap();
    let fsetup = Setup {
        tables: format!(
            "{window}[follow]\nupstreams = [\"http://{}\"]\ngenesis_hash = {:?}\n",
            auth.registry,
            genesis["hash"].as_str().unwrap()
        ),
        ..Setup::default()
    };
    let follower = spawn(&fsetup, &["--amnesia"]);
    let pid = follower.child.id();
    eprintln!(
        "| version | follower RssAnon MiB | follower log held MiB | sum MiB | follower oldest | authority data dir MiB | authority segments |"
    );
    eprintln!("|---|---|---|---|---|---|---|");
    let mut out = std::env::var("RETENTION_OUT")
        .ok()
        .map(|p| std::fs::File::create(p).expect("RETENTION_OUT"));
    let t = Instant::now();
    for base in 0..n {
        submit(&setup, &auth.registry, base, ids);
        let v = base + 1;
        if v % 20_000 == 0 {
            while head(&follower.registry) < v {
                std::thread::sleep(Duration::from_millis(20));
            }
            let anon = proc_status_of(pid, "RssAnon") * 1024;
            let (heap, mapped) = anon_split(pid);
            let log = metric(&follower.metrics, "registry_log_bytes");
            let oldest = metric(&follower.metrics, "registry_oldest_version");
            let (dir, segments) = dir_bytes(&auth.data_dir);
            let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
            eprintln!(
                "| {v} | {:.1} | {:.1} | {:.1} | {oldest} | {:.1} | {segments} |",
                mib(anon),
                mib(log),
                mib(anon + log),
                mib(dir)
            );
            if let Some(f) = out.as_mut() {
                use std::io::Write;
                writeln!(
                    f,
                    "row version={v} anon_b={anon} log_b={log} oldest={oldest} dir_b={dir} \
                     segments={segments} retain={RETAIN} segment_b={} heap_anon_b={heap} \
                     mapped_anon_b={mapped}",
                    4 * 1024 * 1024
                )
                .unwrap();
            }
        }
    }
    eprintln!("{n} commits in {:?}", t.elapsed());
    if let Some(f) = out.as_mut() {
        use std::io::Write;
        writeln!(f, "done commits={n} secs={:.1}", t.elapsed().as_secs_f64()).unwrap();
    }
}
