//! Follower catch-up rate, CPU per version, and commit → follower latency (issue 15; figures in
//! docs/PERFORMANCE.md "Followers"). Not part of `cargo test`: it needs release binaries and a
//! quiet machine. Run:
//!   cargo build --release --bin svc-registry
//!   cp perf/follow_measure.rs tests/zz_follow_measure.rs
//!   SVC_REGISTRY_BIN=$PWD/target/release/svc-registry N=100000 \
//!     cargo test --release --test zz_follow_measure -- --nocapture; rm tests/zz_follow_measure.rs
//! It commits N single-put versions (2-of-3) on an authority, then times a fresh durable and a
//! fresh --amnesia follower to N, and 500 commits at ~100/s acknowledged → served by a follower
//! and by a follower of it (the client polls /registry/head in a loop).
mod common;
use common::*;
use serde_json::json as j;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};


struct Proc {
    child: std::process::Child,
    registry: String,
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
    std::fs::write(&cfg, setup.config_text(&dir.path().join("data"))).unwrap();
    let bin = std::env::var("SVC_REGISTRY_BIN").expect("SVC_REGISTRY_BIN: a release svc-registry");
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(&cfg)
        .args(flags)
        .env("RUST_LOG", "warn,svc_registry=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("role=read-plane") {
                let _ = tx.send(l.clone());
            }
            if l.contains("level=warn") || l.contains("level=error") {
                eprintln!("LOG {l}");
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let registry = line
        .split(' ')
        .find_map(|kv| kv.strip_prefix("registry_addr="))
        .unwrap()
        .to_string();
    Proc {
        child,
        registry,
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
fn commit(setup: &Setup, addr: &str, base: u64) {
    let payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
        "ops": [{"op":"put","kind":"node","id": format!("n-{base}"),"body":{"addr":"10.0.0.1:9000"}}]})).unwrap();
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
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn measure() {
    let n: u64 = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20000);
    let setup = Setup::default();
    let auth = spawn(&setup, &[]);
    let t = Instant::now();
    for base in 0..n {
        commit(&setup, &auth.registry, base);
    }
    eprintln!("authority: {n} commits in {:?}", t.elapsed());
    let genesis = get(&auth.registry, "/registry/0")["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let fsetup = Setup {
        tables: format!(
            "[follow]\nupstreams = [\"http://{}\"]\ngenesis_hash = {genesis:?}\n",
            auth.registry
        ),
        ..Setup::default()
    };
    for flags in [&[][..], &["--amnesia"][..]] {
        let t = Instant::now();
        let f = spawn(&fsetup, flags);
        let pid = f.child.id();
        loop {
            if get(&f.registry, "/registry/head")["version"]
                .as_u64()
                .unwrap()
                >= n
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let el = t.elapsed();
        let ticks = cpu_ticks(pid);
        eprintln!("follower {flags:?}: {n} versions in {el:?} = {:.0} versions/s; CPU {} ms = {:.1} us/version",
            n as f64 / el.as_secs_f64(), ticks * 10, ticks as f64 * 10_000.0 / n as f64);
        if flags.is_empty() {
            // Latency: commit acknowledged -> follower serves it, at ~100 commits/s.
            let f2 = spawn(
                &Setup {
                    tables: format!(
                        "[follow]\nupstreams = [\"http://{}\"]\ngenesis_hash = {genesis:?}\n",
                        f.registry
                    ),
                    ..Setup::default()
                },
                &["--amnesia"],
            );
            loop {
                if get(&f2.registry, "/registry/head")["version"]
                    .as_u64()
                    .unwrap()
                    >= n
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let (mut l1, mut l2) = (Vec::new(), Vec::new());
            for base in n..n + 500 {
                let start = Instant::now();
                commit(&setup, &auth.registry, base);
                let acked = Instant::now();
                while get(&f.registry, "/registry/head")["version"]
                    .as_u64()
                    .unwrap()
                    < base + 1
                {}
                l1.push(acked.elapsed());
                while get(&f2.registry, "/registry/head")["version"]
                    .as_u64()
                    .unwrap()
                    < base + 1
                {}
                l2.push(acked.elapsed());
                let spent = start.elapsed();
                if spent < Duration::from_millis(10) {
                    std::thread::sleep(Duration::from_millis(10) - spent);
                }
            }
            l1.sort();
            l2.sort();
            let p = |v: &Vec<Duration>, q: f64| v[((v.len() as f64 - 1.0) * q) as usize];
            eprintln!(
                "latency follower p50 {:?} p99 {:?}; follower-of-follower p50 {:?} p99 {:?}",
                p(&l1, 0.5),
                p(&l1, 0.99),
                p(&l2, 0.5),
                p(&l2, 0.99)
            );
        }
    }
}
