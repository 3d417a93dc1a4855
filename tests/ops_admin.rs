//! The admin routes on the metrics listener and their ronctl commands, against the real process:
//! maintenance at run time, chaos (disabled vs enabled, commit latency vs read latency, the
//! commit budget), config print, hot backup under commit load and its restore, and the audit
//! lines every switch leaves.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn chaos_setup(extra_storage: &str) -> Setup {
    let mut setup = Setup::default();
    setup.tables = format!("[chaos]\nenabled = true\n[storage]\n{extra_storage}\n");
    setup
}

/// propose + approve (untimed), then time the `/commit` alone. Returns (version, elapsed).
fn timed_commit(s: &TestServer, base: u64) -> (u64, Duration) {
    let (id, payload) = proposal(s, base);
    let started = Instant::now();
    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "commit: {}", r.text());
    let _ = payload;
    (json(&r)["version"].as_u64().unwrap(), elapsed)
}

/// propose + approve with the quorum; returns (proposal_id, payload).
fn proposal(s: &TestServer, base: u64) -> (String, Vec<u8>) {
    let payload = serde_json::to_vec(&j!({
        "registry_id": "test-registry",
        "base_version": base,
        "ops": [put("node", &format!("n{base}"), j!({"v": base}))],
    }))
    .unwrap();
    let r = s.post("/propose", &payload);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let r = s.post("/approve", &s.setup.approve_body(&id, &payload));
    assert_eq!(r.status, 200, "{}", r.text());
    (id, payload)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
fn maintenance_switches_at_run_time_with_its_reason_in_readyz_and_the_audit_log() {
    let s = TestServer::start(Setup::default());
    s.commit_ops(0, j!([put("node", "a", j!({}))]));
    let (ok, out, err) = s.ronctl(&["maintenance", "on", "--reason", "disk swap OPS-1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("read-only (maintenance): disk swap OPS-1"),
        "{out}"
    );
    let r = s.post("/propose", b"{}");
    assert_eq!(r.status, 503);
    assert_eq!(json(&r)["error"], "unavailable");
    assert_eq!(s.get("/registry/head").status, 200, "reads work");
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(
        r.status, 200,
        "maintenance keeps the instance ready for reads"
    );
    let v = json(&r);
    assert_eq!(v["write"], false);
    assert_eq!(
        v["reasons"],
        j!(["read-only (maintenance) mode: disk swap OPS-1"])
    );
    assert_eq!(s.metric("registry_read_only"), 1.0);
    assert_eq!(s.metric("registry_write_plane_ready"), 0.0);
    assert_eq!(s.metric("registry_ready"), 1.0);
    let line = s
        .logs()
        .lines()
        .find(|l| l.contains("maintenance switched"))
        .unwrap()
        .to_string();
    assert!(
        line.contains("audit=1") && line.contains("source=admin") && line.contains("OPS-1"),
        "{line}"
    );
    let (ok, out, _) = s.ronctl(&["maintenance", "status"]);
    assert!(ok && out.contains("disk swap"), "{out}");

    let (ok, out, err) = s.ronctl(&["maintenance", "off"]);
    assert!(ok, "{err}");
    assert!(out.contains("writes enabled"), "{out}");
    s.commit_ops(1, j!([put("node", "b", j!({}))]));
    assert_eq!(s.metric("registry_write_plane_ready"), 1.0);
    assert!(s.wait_log("role=write-plane source=admin", TIMEOUT));
    let r = s.admin(
        "POST",
        "/admin/maintenance",
        Some(br#"{"read_only": "yes"}"#),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn a_server_started_read_only_can_be_switched_to_writes() {
    let mut setup = Setup::default();
    setup.flags.push("--read-only".into());
    let s = TestServer::start(setup);
    let v = json(&s.admin("GET", "/readyz", None));
    assert_eq!(
        v["reasons"],
        j!(["read-only (maintenance) mode: started with --read-only"])
    );
    let (ok, _, err) = s.ronctl(&["maintenance", "off"]);
    assert!(ok, "{err}");
    assert_eq!(
        s.commit_ops(0, j!([put("node", "a", j!({}))]))["version"],
        1
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!((r.status, json(&r)["write"].clone()), (200, j!(true)));
}

#[test]
fn chaos_is_forbidden_when_disabled_and_changes_nothing() {
    let s = TestServer::start(Setup::default());
    for (method, path, body) in [
        (
            "POST",
            "/admin/chaos",
            Some(&br#"{"fault": "storage-latency", "ms": 50}"#[..]),
        ),
        ("DELETE", "/admin/chaos", None),
        ("POST", "/admin/chaos/clear", None),
    ] {
        let r = s.admin(method, path, body);
        assert_eq!(r.status, 403, "{method} {path}");
        assert_eq!(json(&r)["error"], "forbidden");
        assert!(r.text().contains("[chaos] enabled"), "{}", r.text());
    }
    assert_eq!(
        json(&s.admin("GET", "/admin/chaos", None)),
        j!({"enabled": false, "max_latency_ms": 5000, "faults": []})
    );
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.0);
    let (ok, _, err) = s.ronctl(&[
        "chaos",
        "inject",
        "--fault",
        "storage-latency",
        "--ms",
        "50",
    ]);
    assert!(!ok);
    assert!(err.contains("403 forbidden"), "{err}");
    assert!(!s.logs().contains("chaos injected"));
}

#[test]
fn injected_storage_latency_slows_commits_but_not_reads() {
    let s = TestServer::start(chaos_setup(""));
    // Warm up: connections, first segment, first checkpoint.
    let mut version = 0;
    for _ in 0..2 {
        version = timed_commit(&s, version).0;
    }
    let (ok, out, err) = s.ronctl(&[
        // The runbook's command, verbatim.
        "chaos",
        "inject",
        "--target",
        "svc-registry",
        "--fault=storage-latency",
        "--ms=50",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("until cleared"), "{out}");
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.05);
    let state = json(&s.admin("GET", "/admin/chaos", None));
    assert_eq!(state["faults"][0]["ms"], 50);

    // Reads run on their own thread all the while commits wait for slowed syncs.
    let stop = Arc::new(AtomicBool::new(false));
    let head_latencies = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let (stop, out) = (stop.clone(), head_latencies.clone());
        let target = s.target();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let started = Instant::now();
                let r = svc_registry::http::client::request(
                    &target,
                    "GET",
                    "/registry/head",
                    &[],
                    None,
                    TIMEOUT,
                )
                .unwrap();
                assert_eq!(r.status, 200);
                out.lock().unwrap().push(started.elapsed());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let mut commits = Vec::new();
    for _ in 0..5 {
        let (v, took) = timed_commit(&s, version);
        version = v;
        commits.push(took);
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    let heads = head_latencies.lock().unwrap().clone();
    assert!(heads.len() >= 5, "reads ran during the commits");
    let (commit_median, head_median) = (median(commits.clone()), median(heads.clone()));
    // Relative to the injected 50 ms, not to the machine: a commit waits for a sync that
    // sleeps 50 ms first; a read never touches storage.
    assert!(
        commit_median >= Duration::from_millis(40),
        "commit median {commit_median:?} ({commits:?})"
    );
    assert!(
        head_median < Duration::from_millis(20),
        "head median {head_median:?} while commits took {commit_median:?}"
    );

    let (ok, out, err) = s.ronctl(&["chaos", "clear"]);
    assert!(ok, "{err}");
    assert!(out.contains("cleared storage-latency (50 ms)"), "{out}");
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.0);
    let logs = s.logs();
    assert!(logs.contains("msg=\"chaos injected\" audit=1"), "{logs}");
    assert!(logs.contains("msg=\"chaos cleared\" audit=1"), "{logs}");

    // A timed injection ends by itself.
    let (ok, out, err) = s.ronctl(&[
        "chaos",
        "inject",
        "--fault",
        "storage-latency",
        "--ms",
        "20",
        "--for",
        "1",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("until 20"), "{out}");
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.02);
    eventually(Duration::from_secs(5), "the 1 s injection expires", || {
        s.metric("registry_chaos_storage_latency_seconds") == 0.0
    });
    assert!(s.wait_log("chaos expired", Duration::from_secs(2)));
    // Bad requests change nothing.
    for body in [
        &br#"{"fault": "disk-full", "ms": 5}"#[..],
        br#"{"fault": "storage-latency", "ms": 999999}"#,
        br#"{"fault": "storage-latency"}"#,
    ] {
        assert_eq!(s.admin("POST", "/admin/chaos", Some(body)).status, 400);
    }
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.0);
}

#[test]
fn a_commit_budget_sheds_commits_cleanly_while_storage_is_slow() {
    let s = TestServer::start(chaos_setup("commit_budget_ms = 100"));
    let (id, _) = proposal(&s, 0);
    let inject = |ms: u64| {
        let body = format!(r#"{{"fault": "storage-latency", "ms": {ms}}}"#);
        let r = s.admin("POST", "/admin/chaos", Some(body.as_bytes()));
        assert_eq!(r.status, 200, "{}", r.text());
    };
    inject(300);
    let deps = s.metric(r#"rejected_total{reason="deps"}"#);
    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(r.text().contains("commit_budget_ms"), "{}", r.text());
    assert_eq!(s.metric(r#"rejected_total{reason="deps"}"#), deps + 1.0);
    assert_eq!(s.head()["version"], 0, "nothing applied");
    // Proposals, approvals and reads go on.
    let (other, _) = proposal(&s, 0);
    assert_eq!(s.get("/registry/head").status, 200);
    // The log line arrives through the child's stderr pipe and the reader thread, after the
    // answer: polled, not read once (read once, it failed under load).
    assert!(s.wait_log("msg=\"write rejected\" audit=1", TIMEOUT));
    // Under the budget, the very same proposal commits.
    inject(20);
    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["version"], 1);
    let r = s.post(
        "/commit",
        format!(r#"{{"proposal_id":"{other}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 409, "the other one lost the CAS: {}", r.text());
}

#[test]
fn config_print_shows_the_running_servers_effective_config_and_a_files() {
    let s = TestServer::start(Setup::default());
    let (ok, served, err) = s.ronctl(&["config", "print"]);
    assert!(ok, "{err}");
    // The runbook's form names the service.
    let (ok, same, err) = s.ronctl(&["config", "print", "svc-registry"]);
    assert!(ok, "{err}");
    assert_eq!(same, served);
    let (ok, from_file, err) = s.ronctl(&[
        "config",
        "print",
        "--config",
        s.config_path.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let (header, body) = served.split_once('\n').unwrap();
    assert!(
        header.starts_with("# svc-registry effective config:"),
        "{header}"
    );
    assert_eq!(body, from_file, "the server runs what its file says");
    assert!(from_file.contains("registry_id = \"test-registry\""));
    assert!(from_file.contains("[signers]"));
    // HTTP too; and a reload shows up in it.
    let r = s.admin("GET", "/admin/config", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), served);
    let text = std::fs::read_to_string(&s.config_path).unwrap() + "[proposals]\nttl_secs = 77\n";
    std::fs::write(&s.config_path, text).unwrap();
    s.signal(libc::SIGHUP);
    assert!(s.wait_log("msg=reloaded", TIMEOUT));
    let (_, served, _) = s.ronctl(&["config", "print"]);
    assert!(served.contains("ttl_secs = 77"), "{served}");
    // Flags show in the header.
    let mut setup = Setup::default();
    setup.flags.push("--amnesia".into());
    let amnesic = TestServer::start(setup);
    let (_, served, _) = amnesic.ronctl(&["config", "print"]);
    assert!(
        served.lines().next().unwrap().contains("--amnesia"),
        "{served}"
    );
}

#[test]
fn audit_lines_cover_commits_rejected_signed_requests_reloads_and_switches() {
    let s = TestServer::start(Setup::default());
    let (id, payload) = proposal(&s, 0);
    let stranger = Signer::new("mallory", 9);
    let body = j!({"proposal_id": id, "signatures": [{"keyid": "mallory", "sig": stranger.sign(&payload)}]});
    let r = s.request(
        "POST",
        "/approve",
        &[("X-Corr-Id", "audit-unknown-key")],
        Some(&serde_json::to_vec(&body).unwrap()),
    );
    assert_eq!(r.status, 403);
    let forged =
        j!({"proposal_id": id, "signatures": [{"keyid": "a", "sig": stranger.sign(&payload)}]});
    let r = s.request(
        "POST",
        "/approve",
        &[("X-Corr-Id", "audit-forged")],
        Some(&serde_json::to_vec(&forged).unwrap()),
    );
    assert_eq!(r.status, 403);
    let r = s.request(
        "POST",
        "/commit",
        &[("X-Corr-Id", "audit-commit")],
        Some(format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes()),
    );
    assert_eq!(r.status, 200);
    s.admin(
        "POST",
        "/admin/maintenance",
        Some(br#"{"read_only": true, "reason": "r"}"#),
    );
    std::fs::write(&s.config_path, "not toml").unwrap();
    s.signal(libc::SIGHUP);
    assert!(s.wait_log("reload refused", TIMEOUT));
    let logs = s.logs();
    let audited = |needle: &str| {
        logs.lines()
            .any(|l| l.contains("audit=1") && l.contains(needle))
    };
    for needle in [
        "corr_id=audit-unknown-key route=/approve status=403",
        "corr_id=audit-forged route=/approve status=403",
        "reason=bad_signature",
        "msg=committed audit=1 corr_id=audit-commit",
        "msg=\"maintenance switched\"",
        "msg=\"reload refused",
    ] {
        assert!(audited(needle), "no audit line with {needle}:\n{logs}");
    }
}

#[test]
fn a_backup_under_commit_load_restores_every_acknowledged_commit() {
    let mut setup = Setup::default();
    setup.tables = "[storage]\nsegment_bytes = 1048576\ncheckpoint_every_commits = 7\n".into();
    setup.top = "max_body_bytes = 65536\n".into();
    let s = Arc::new(TestServer::start(setup));
    // Committers: each retries on a lost CAS, records (version, hash, acknowledged at).
    let acked = Arc::new(Mutex::new(Vec::<(u64, String, Instant)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (s, acked, stop) = (s.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let base = s.head()["version"].as_u64().unwrap();
                    let payload = serde_json::to_vec(&j!({
                        "registry_id": "test-registry", "base_version": base,
                        "ops": [put("node", &format!("w{w}-{n}"), j!({"n": n}))],
                    }))
                    .unwrap();
                    let r = s.post("/propose", &payload);
                    if r.status != 202 {
                        continue;
                    }
                    let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
                    if s.post("/approve", &s.setup.approve_body(&id, &payload))
                        .status
                        != 200
                    {
                        continue;
                    }
                    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
                    if r.status == 200 {
                        let v = json(&r);
                        acked.lock().unwrap().push((
                            v["version"].as_u64().unwrap(),
                            v["hash"].as_str().unwrap().to_string(),
                            Instant::now(),
                        ));
                    } else {
                        assert_eq!(r.status, 409, "{}", r.text());
                    }
                }
            })
        })
        .collect();
    eventually(
        Duration::from_secs(60),
        "20 commits acknowledged under load",
        || acked.lock().unwrap().len() >= 20,
    );
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("backup-1");
    let began = Instant::now();
    let (ok, out, err) = s.ronctl(&["backup", "--to", target.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("backup of test-registry complete"), "{out}");
    // Load goes on a little after the backup (a few more acknowledged commits), then stops.
    let acked_at_backup = acked.lock().unwrap().len();
    eventually(TIMEOUT, "commits acknowledged after the backup", || {
        acked.lock().unwrap().len() >= acked_at_backup + 3
    });
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    let before: Vec<(u64, String)> = acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, at)| *at < began)
        .map(|(v, h, _)| (*v, h.clone()))
        .collect();
    assert!(before.len() >= 20);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target.join("BACKUP.json")).unwrap()).unwrap();
    let newest_before = before.iter().map(|(v, _)| *v).max().unwrap();
    assert!(manifest["min_version"].as_u64().unwrap() >= newest_before);
    // A second backup into the same directory is refused: it is not empty.
    let (ok, _, err) = s.ronctl(&["backup", "--to", target.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("409 conflict"), "{err}");
    assert!(s.wait_log("msg=\"backup done\" audit=1", TIMEOUT));

    // Restore: a second server on the backup directory.
    let mut setup = Setup::default();
    setup.data_dir = Some(target.clone());
    let restored = TestServer::start(setup);
    for (version, hash) in &before {
        let r = restored.get(&format!("/registry/{version}"));
        assert_eq!(r.status, 200, "version {version} lost");
        assert_eq!(json(&r)["hash"], hash.as_str(), "version {version}");
    }
    let (ok, out, err) = restored.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}{err}");
    // The copy continues where it ended: a commit on it works.
    let head = restored.head()["version"].as_u64().unwrap();
    assert!(head >= newest_before);
    restored.commit_ops(head, j!([put("node", "after-restore", j!({}))]));
}

#[test]
fn backup_is_refused_with_amnesia_with_a_clear_message() {
    let mut setup = Setup::default();
    setup.flags.push("--amnesia".into());
    let s = TestServer::start(setup);
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, err) = s.ronctl(&["backup", "--to", dir.path().join("b").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("503") && err.contains("--amnesia"), "{err}");
    assert!(!dir.path().join("b").exists());
    // Chaos would do nothing here either, and says so.
    let mut setup = Setup::default();
    setup.flags.push("--amnesia".into());
    setup.tables = "[chaos]\nenabled = true\n".into();
    let s = TestServer::start(setup);
    let r = s.admin(
        "POST",
        "/admin/chaos",
        Some(br#"{"fault": "storage-latency", "ms": 5}"#),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("--amnesia"), "{}", r.text());
}

#[test]
fn ronctl_tail_follows_the_registry_topic() {
    let s = TestServer::start(Setup::default());
    for v in 0..2 {
        s.commit_ops(v, j!([put("node", &format!("t{v}"), j!({}))]));
    }
    let (ok, out, err) = s.ronctl(&["tail", "--topic", "registry", "--from", "0", "--limit", "2"]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("commit version=1 hash="), "{out}");
    assert!(lines[1].starts_with("commit version=2 hash="), "{out}");
    let (ok, _, err) = s.ronctl(&["tail", "--topic", "nodes", "--limit", "1"]);
    assert!(!ok);
    assert!(err.contains("registry"), "{err}");
}
