//! Crash tests: SIGKILL the real process under concurrent commit load and check that every
//! acknowledged commit came back and the whole chain verifies; SIGTERM under load; a second
//! SIGTERM during the drain.
//!
//! The SIGKILL loop is also the crash-loop torture (`scripts/torture.sh [ROUNDS]`, release
//! build): `CRASH_ROUNDS` sets the rounds (default 20 in CI), `CRASH_SEED` the schedule (kill
//! moments, kills during recovery), printed at the start so a failing run can be replayed with
//! the same schedule (the load itself is concurrent, so not bit-for-bit).

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svc_registry::domain::record::CommitRecord;

/// Commit in a loop until `stop`; record every acknowledged (version → hash).
fn committer(
    s: Arc<TestServer>,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, String>>>,
) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Ok(h) = svc_registry::http::client::request(
            &s.target(),
            "GET",
            "/registry/head",
            &[],
            None,
            Duration::from_secs(2),
        ) else {
            return;
        };
        let Ok(head) = serde_json::from_slice::<serde_json::Value>(&h.body) else {
            return;
        };
        let base = head["version"].as_u64().unwrap_or(0);
        let payload =
            serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
            "ops": [put("node", &format!("w{worker}-{i}"), j!({"i": i}))]}))
            .unwrap();
        let post = |path: &str, body: &[u8]| {
            svc_registry::http::client::request(
                &s.target(),
                "POST",
                path,
                &[],
                Some(body),
                Duration::from_secs(5),
            )
        };
        let Ok(r) = post("/propose", &payload) else {
            return;
        };
        if r.status != 202 {
            continue;
        }
        let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["proposal_id"]
            .as_str()
            .unwrap()
            .to_string();
        let Ok(r) = post("/approve", &s.setup.approve_body(&id, &payload)) else {
            return;
        };
        if r.status != 200 {
            continue;
        }
        let Ok(r) = post(
            "/commit",
            &serde_json::to_vec(&j!({"proposal_id": id})).unwrap(),
        ) else {
            return;
        };
        if r.status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            acked.lock().unwrap().insert(
                v["version"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            );
        }
    }
}

/// Four committers on `s` until `stop`, recording into `acked`.
fn committers(
    s: &Arc<TestServer>,
    stop: &Arc<AtomicBool>,
    acked: &Arc<Mutex<BTreeMap<u64, String>>>,
) -> Vec<std::thread::JoinHandle<()>> {
    (0..4)
        .map(|w| {
            let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || committer(s, w, stop, acked))
        })
        .collect()
}

/// The chain as verified so far, checked incrementally: each round fetches only the records
/// from the last verified one on (its hash must be unchanged: the hash chain then vouches for
/// everything before it), checks their links, and every `full_every` rounds (and at the end)
/// re-fetches and audits the whole chain with `verify_chain` (every quorum signature).
struct ChainCheck {
    verified: Vec<CommitRecord>,
    signers: Option<svc_registry::domain::signers::SignerSet>,
}

impl ChainCheck {
    fn check(&mut self, s: &TestServer, acked: &BTreeMap<u64, String>, full: bool) {
        let head = s.head()["version"].as_u64().unwrap();
        let max_acked = acked.keys().next_back().copied().unwrap_or(0);
        assert!(
            head >= max_acked,
            "HEAD {head} is behind the last acknowledged version {max_acked}"
        );
        let signers = self.signers.get_or_insert_with(|| {
            svc_registry::cli::signers_from_json(&json(&s.get("/registry/signers"))).unwrap()
        });
        if full || self.verified.is_empty() {
            let records = s.records_from(0);
            svc_registry::domain::audit::verify_chain("test-registry", &records, signers)
                .expect("chain verifies");
            for (old, new) in self.verified.iter().zip(&records) {
                assert_eq!(old, new, "version {} changed", old.version);
            }
            assert!(
                records.len() >= self.verified.len(),
                "the chain got shorter"
            );
            self.verified = records;
        } else {
            let last = self.verified.len() as u64 - 1;
            let tail = s.records_from(last);
            assert_eq!(
                tail[0].hash, self.verified[last as usize].hash,
                "version {last} changed after the restart"
            );
            for rec in &tail[1..] {
                let prev = &self.verified.last().unwrap().hash;
                assert_eq!(rec.version, self.verified.len() as u64);
                assert!(
                    rec.verify_link("test-registry", prev),
                    "version {} does not link",
                    rec.version
                );
                self.verified.push(rec.clone());
            }
        }
        assert_eq!(self.verified.len() as u64, head + 1);
        for (v, hash) in acked {
            assert_eq!(
                &self.verified[*v as usize].hash, hash,
                "acknowledged version {v} changed or vanished"
            );
        }
    }
}

/// Start the binary on the server's config and SIGKILL it after `delay`: a kill during start-up
/// (lock, recovery, restore, binding), whatever it was doing by then.
fn kill_during_startup(s: &TestServer, delay: Duration) -> bool {
    let mut child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&s.config_path)
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn svc-registry");
    std::thread::sleep(delay);
    let exited_by_itself = matches!(child.try_wait(), Ok(Some(_)));
    let _ = child.kill();
    let _ = child.wait();
    !exited_by_itself
}

#[test]
fn sigkill_under_concurrent_commits_loses_no_acknowledged_commit() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9);
    eprintln!("crash loop: {rounds} rounds, CRASH_SEED={seed}");
    let full_every = if rounds <= 50 { 1 } else { 25 };
    let mut setup = Setup::default();
    setup.tables = "[storage]\nsegment_bytes = 262144\ncheckpoint_every_commits = 25\n".into();
    setup.top = "max_body_bytes = 65536\n".into();
    let mut s = Arc::new(TestServer::start(setup));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut chain = ChainCheck {
        verified: Vec::new(),
        signers: None,
    };
    let started = std::time::Instant::now();
    let mut startup_kills = 0;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = committers(&s, &stop, &acked);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 250));
        // SIGKILL while commits are in flight.
        s.signal(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let mut server = Arc::try_unwrap(s).ok().expect("workers are done");
        let _ = server.child.wait();
        // Every fourth round, also kill the next start somewhere in its start-up.
        if (seed >> 20) % 4 == 0 {
            let delay = Duration::from_millis((seed >> 24) % 60);
            startup_kills += usize::from(kill_during_startup(&server, delay));
        }
        s = Arc::new(server.restart_killed());
        let last = round + 1 == rounds;
        chain.check(&s, &acked.lock().unwrap(), last || round % full_every == 0);
        eprintln!(
            "round {round}: head {} acknowledged {}",
            s.head()["version"],
            acked.lock().unwrap().len()
        );
    }
    let acked_total = acked.lock().unwrap().len();
    eprintln!(
        "crash loop: {rounds} SIGKILLs under load survived (+{startup_kills} during start-up), \
         {acked_total} acknowledged commits all present, chain of {} versions verified, {:.1?}",
        chain.verified.len() - 1,
        started.elapsed()
    );
    assert!(
        acked_total > rounds,
        "the load made too little progress to mean anything"
    );
}

#[test]
fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let s = Arc::new(TestServer::start(Setup::default()));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers = committers(&s, &stop, &acked);
    // Under load: commits are being acknowledged when the signal comes.
    eventually(TIMEOUT, "commits acknowledged under load", || {
        acked.lock().unwrap().len() >= 3
    });
    s.signal(libc::SIGTERM);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let mut server = Arc::try_unwrap(s).ok().unwrap();
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("exits within the drain deadline");
    assert!(status.success(), "{status:?}\n{}", server.logs());
    assert!(server.wait_log("shutdown_complete=1", Duration::from_secs(5)));
    // Restart on the same data: everything acknowledged is there.
    let again = server.restart_killed();
    again.assert_holds_acked(&acked.lock().unwrap());
}

#[test]
fn a_second_process_on_the_same_data_dir_exits_with_a_clear_error() {
    let s = TestServer::start(Setup::default());
    let second = TestServer::try_start(Setup {
        data_dir: Some(s.data_dir.clone()),
        ..Setup::default()
    });
    let (logs, status) = second.err().expect("the second process must not start");
    let status = status.expect("it exits");
    assert!(!status.success());
    assert!(logs.join("\n").contains("in use"), "{}", logs.join("\n"));
}

#[test]
fn amnesia_writes_no_file() {
    let mut setup = Setup::default();
    setup.flags.push("--amnesia".into());
    let s = TestServer::start(setup);
    s.commit_ops(0, j!([put("node", "n", j!({}))]));
    assert_eq!(s.head()["version"], 1);
    assert!(
        !s.data_dir.exists(),
        "amnesia created {}",
        s.data_dir.display()
    );
}

/// SIGTERM starts a drain that waits for in-flight work (here a commit held up by injected
/// storage latency); a second SIGTERM during it ends the process at once (exit 130), and the data
/// directory still recovers to a chain that verifies.
#[test]
fn a_second_sigterm_during_the_drain_exits_at_once() {
    let mut setup = Setup::default();
    setup.tables = "[http]\ndrain_timeout_secs = 30\n[chaos]\nenabled = true\n".into();
    let s = Arc::new(TestServer::start(setup));
    let first = s.commit_ops(0, j!([put("node", "before", j!({}))]));
    let r = s.admin(
        "POST",
        "/admin/chaos",
        Some(br#"{"fault": "storage-latency", "ms": 4000}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A commit that will sit in the fsync thread for 4 s.
    let payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": 1,
        "ops": [put("node", "slow", j!({}))]}))
    .unwrap();
    let id = json(&s.post("/propose", &payload))["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.post("/approve", &s.setup.approve_body(&id, &payload));
    assert_eq!(r.status, 200);
    let committer = {
        let s = s.clone();
        std::thread::spawn(move || {
            svc_registry::http::client::request(
                &s.target(),
                "POST",
                "/commit",
                &[],
                Some(format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes()),
                Duration::from_secs(10),
            )
        })
    };
    eventually(TIMEOUT, "the slow commit is in flight", || {
        s.metric("inflight_requests") == 1.0
    });
    s.signal(libc::SIGTERM);
    assert!(
        s.wait_log("msg=draining", Duration::from_secs(5)),
        "no drain:\n{}",
        s.logs()
    );
    // The signal loop logs "draining" once it has taken the first signal, so the second is a
    // separate one; the drain is waiting for the slow commit.
    assert_eq!(s.metric("inflight_requests"), 1.0, "the drain has work");
    let second = std::time::Instant::now();
    s.signal(libc::SIGTERM);
    let _ = committer.join();
    let mut server = Arc::try_unwrap(s).ok().expect("the committer is done");
    let status = server
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the second signal");
    let took = second.elapsed();
    assert_eq!(status.code(), Some(130), "{status:?}\n{}", server.logs());
    assert!(
        took < Duration::from_secs(2),
        "the second SIGTERM took {took:?} to end the process"
    );
    assert!(server.logs().contains("second signal: exiting now"));
    assert!(!server.logs().contains("shutdown_complete=1"));
    // Whatever the cut-off commit did, the data directory recovers to a chain that verifies.
    let again = server.restart_killed();
    let acked = BTreeMap::from([(1, first["hash"].as_str().unwrap().to_string())]);
    again.assert_holds_acked(&acked);
}
