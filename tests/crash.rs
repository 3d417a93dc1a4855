//! Crash tests: SIGKILL the real process under concurrent commit load and check that every
//! acknowledged commit came back and the whole chain verifies. `CRASH_ROUNDS` sets the rounds
//! (default 20).

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
        let sigs: Vec<_> = s.setup.signers[..2]
            .iter()
            .map(|k| j!({"keyid": k.keyid, "sig": k.sign(&payload)}))
            .collect();
        let Ok(r) = post(
            "/approve",
            &serde_json::to_vec(&j!({"proposal_id": id, "signatures": sigs})).unwrap(),
        ) else {
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

fn verify_all(s: &TestServer, acked: &BTreeMap<u64, String>) {
    let head = s.head()["version"].as_u64().unwrap();
    let max_acked = acked.keys().next_back().copied().unwrap_or(0);
    assert!(
        head >= max_acked,
        "HEAD {head} is behind the last acknowledged version {max_acked}"
    );
    let mut records = Vec::new();
    let mut from = 0;
    loop {
        let page = json(&s.get(&format!("/registry/log?from={from}&limit=1000")));
        for r in page["records"].as_array().unwrap() {
            records.push(CommitRecord::from_value(r.clone()).unwrap());
        }
        match page["next"].as_u64() {
            Some(n) => from = n,
            None => break,
        }
    }
    for (v, hash) in acked {
        assert_eq!(
            &records[*v as usize].hash, hash,
            "acknowledged version {v} changed or vanished"
        );
    }
    let signers = svc_registry::cli::signers_from_json(&json(&s.get("/registry/signers"))).unwrap();
    svc_registry::domain::audit::verify_chain("test-registry", &records, &signers)
        .expect("chain verifies");
}

#[test]
fn sigkill_under_concurrent_commits_loses_no_acknowledged_commit() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut setup = Setup::default();
    setup.tables = "[storage]\nsegment_bytes = 262144\ncheckpoint_every_commits = 25\n".into();
    setup.top = "max_body_bytes = 65536\n".into();
    let mut s = Arc::new(TestServer::start(setup));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let mut seed = 0x9e37_79b9u64;
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || committer(s, w, stop, acked))
            })
            .collect();
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
        let server = Arc::try_unwrap(s).ok().expect("workers are done");
        s = Arc::new(server.restart_killed());
        verify_all(&s, &acked.lock().unwrap());
        eprintln!(
            "round {round}: head {} acknowledged {}",
            s.head()["version"],
            acked.lock().unwrap().len()
        );
    }
    assert!(
        acked.lock().unwrap().len() > rounds,
        "the load made too little progress to mean anything"
    );
}

#[test]
fn sigterm_under_load_exits_zero_and_loses_nothing_acknowledged() {
    let s = Arc::new(TestServer::start(Setup::default()));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || committer(s, w, stop, acked))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
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
    assert!(server.logs().contains("shutdown_complete=1"));
    // Restart on the same data: everything acknowledged is there.
    let setup = std::mem::take(&mut server.setup);
    let data_dir = server.data_dir.clone();
    let dir = server.dir.clone();
    drop(server);
    let again = TestServer::start(Setup {
        data_dir: Some(data_dir),
        ..setup
    });
    verify_all(&again, &acked.lock().unwrap());
    drop(dir);
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
