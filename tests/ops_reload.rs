//! SIGHUP against the real process: add a signer, raise the threshold, rotate a key with
//! overlap (and check history still verifies against keys valid at each commit), limits, log
//! level, chaos and maintenance switches, restart-only keys reported and kept, broken files
//! refused — each observed through HTTP behaviour, metrics and the audit log.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::time::Duration;
use svc_registry::domain::audit::verify_chain;
use svc_registry::domain::record::CommitRecord;

/// One `[[signers.keys]]` block: signer, not_before, not_after.
type Key<'a> = (&'a Signer, Option<String>, Option<String>);

/// The test server's config with this signer set, extra top-level lines and tables.
fn config_text(s: &TestServer, threshold: usize, keys: &[Key], top: &str, tables: &str) -> String {
    let mut blocks = String::new();
    for (signer, not_before, not_after) in keys {
        blocks.push_str(&format!(
            "[[signers.keys]]\nkeyid = {:?}\npublic_key = {:?}\n",
            signer.keyid,
            signer.public_hex()
        ));
        if let Some(t) = not_before {
            blocks.push_str(&format!("not_before = {t:?}\n"));
        }
        if let Some(t) = not_after {
            blocks.push_str(&format!("not_after = {t:?}\n"));
        }
    }
    let setup = Setup {
        threshold,
        signers: Vec::new(),
        top: top.to_string(),
        tables: format!("{blocks}{tables}"),
        ..Setup::default()
    };
    setup.config_text(&s.data_dir)
}

#[derive(Debug, PartialEq, Eq)]
enum Reload {
    Applied,
    Refused,
}

/// Write `text` as the config, send SIGHUP, and wait for the reload counters to move.
fn reload(s: &TestServer, text: &str) -> Reload {
    let ok0 = s.metric("registry_reload_success_total");
    let fail0 = s.metric("registry_reload_fail_total");
    std::fs::write(&s.config_path, text).unwrap();
    s.signal(libc::SIGHUP);
    poll(TIMEOUT, || {
        if s.metric("registry_reload_success_total") > ok0 {
            Some(Reload::Applied)
        } else if s.metric("registry_reload_fail_total") > fail0 {
            Some(Reload::Refused)
        } else {
            None
        }
    })
    .unwrap_or_else(|| panic!("no reload was counted:\n{}", s.logs()))
}

fn propose(s: &TestServer, base: u64, id: &str) -> (String, Vec<u8>) {
    let payload = serde_json::to_vec(&j!({
        "registry_id": "test-registry",
        "base_version": base,
        "ops": [put("node", id, j!({"v": base}))],
    }))
    .unwrap();
    let r = s.post("/propose", &payload);
    assert_eq!(r.status, 202, "{}", r.text());
    (
        json(&r)["proposal_id"].as_str().unwrap().to_string(),
        payload,
    )
}

fn approve(s: &TestServer, id: &str, payload: &[u8], signer: &Signer) -> ClientResponse {
    let body = j!({"proposal_id": id, "signatures": [{"keyid": signer.keyid, "sig": signer.sign(payload)}]});
    s.post("/approve", &serde_json::to_vec(&body).unwrap())
}

fn commit(s: &TestServer, id: &str) -> ClientResponse {
    s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes())
}

fn signers_json(s: &TestServer) -> serde_json::Value {
    json(&s.get("/registry/signers"))
}

fn rfc3339(unix: i64) -> String {
    svc_registry::clock::rfc3339(unix)
}

#[test]
fn sighup_adds_a_signer_raises_the_threshold_and_refuses_broken_files() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let d = Signer::new("d", 4);
    let (p1, payload1) = propose(&s, 0, "n1");
    let r = approve(&s, &p1, &payload1, &d);
    assert_eq!(r.status, 403, "d is not configured yet: {}", r.text());

    // Add d and raise the threshold to 3.
    let keys: Vec<Key> = [&a, &b, &c, &d].map(|k| (k, None, None)).to_vec();
    assert_eq!(
        reload(&s, &config_text(&s, 3, &keys, "", "")),
        Reload::Applied
    );
    let set = signers_json(&s);
    assert_eq!(set["threshold"], 3);
    assert_eq!(set["keys"].as_array().unwrap().len(), 4);
    assert!(s.logs().contains("msg=reloaded audit=1"), "{}", s.logs());
    assert!(s
        .logs()
        .contains("applied=\"signers.keys,signers.threshold\""));
    for signer in [&a, &b] {
        assert_eq!(approve(&s, &p1, &payload1, signer).status, 200);
    }
    let r = commit(&s, &p1);
    assert_eq!(r.status, 412, "2 of 3 is no quorum any more: {}", r.text());
    let r = approve(&s, &p1, &payload1, &d);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["approvals"], 3);
    assert_eq!(commit(&s, &p1).status, 200);

    // Broken files are refused whole, say why, and change nothing.
    for (text, needle) in [
        (
            "registry_id = \"test-registry\"\nthis is not toml".to_string(),
            "config.toml",
        ),
        (
            config_text(&s, 3, &keys, "", "").replace("threshold = 3", "threshhold = 2"),
            "threshhold",
        ),
        (config_text(&s, 5, &keys, "", ""), "signers.threshold = 5"),
        (
            config_text(&s, 3, &keys, "", "").replace("test-registry", "other-registry"),
            "registry_id",
        ),
    ] {
        assert_eq!(reload(&s, &text), Reload::Refused, "{needle}");
        let logs = s.logs();
        let line = logs
            .lines()
            .rev()
            .find(|l| l.contains("reload refused"))
            .unwrap();
        assert!(
            line.contains("audit=1") && line.contains(needle),
            "{needle}: {line}"
        );
    }
    assert_eq!(s.metric("registry_reload_fail_total"), 4.0);
    assert_eq!(signers_json(&s), set, "the old signer set stays");
    let (p2, payload2) = propose(&s, 1, "n2");
    for signer in [&a, &b, &d] {
        assert_eq!(approve(&s, &p2, &payload2, signer).status, 200);
    }
    assert_eq!(json(&commit(&s, &p2))["version"], 2);

    // A restart-only key is reported and not applied; the listener stays where it is.
    let text = config_text(&s, 3, &keys, "", "").replace(
        "registry_addr = \"127.0.0.1:0\"",
        "registry_addr = \"127.0.0.1:1\"",
    );
    assert_eq!(reload(&s, &text), Reload::Applied);
    assert!(
        s.logs().contains("restart_needed_for=\"registry_addr\""),
        "{}",
        s.logs()
    );
    assert_eq!(s.head()["version"], 2, "still served on the old address");
    let effective = s.admin("GET", "/admin/config", None).text();
    assert!(
        effective.contains("registry_addr = \"127.0.0.1:0\""),
        "{effective}"
    );
    assert_eq!(s.metric("registry_reload_success_total"), 2.0);
}

#[test]
fn a_key_rotates_with_overlap_and_history_verifies_against_keys_valid_at_each_commit() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let a2 = Signer::new("a-2026", 11);
    let now = svc_registry::clock::now_unix();

    // Alice approves with her old key, then the set gains her new key (overlapping windows).
    let (p1, payload1) = propose(&s, 0, "n1");
    assert_eq!(approve(&s, &p1, &payload1, &a).status, 200);
    let overlap: Vec<Key> = vec![
        (&a, None, Some(rfc3339(now + 3600))),
        (&a2, Some(rfc3339(now - 60)), None),
        (&b, None, None),
        (&c, None, None),
    ];
    assert_eq!(
        reload(&s, &config_text(&s, 2, &overlap, "", "")),
        Reload::Applied
    );
    // The proposal gathers its quorum across the rotation: old key before, new key after.
    let r = approve(&s, &p1, &payload1, &a2);
    assert_eq!(json(&r)["approvals"], 2, "{}", r.text());
    let r = commit(&s, &p1);
    assert_eq!(r.status, 200, "{}", r.text());
    let v1 = json(&s.get("/registry/1"));
    let keyids: Vec<&str> = v1["envelope"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["keyid"].as_str().unwrap())
        .collect();
    assert_eq!(keyids, ["a", "a-2026"]);

    // Retire the old key: not_after is now; it stays published.
    let retired_at = svc_registry::clock::now_unix();
    let retired: Vec<Key> = vec![
        (&a, None, Some(rfc3339(retired_at))),
        (&a2, Some(rfc3339(now - 60)), None),
        (&b, None, None),
        (&c, None, None),
    ];
    assert_eq!(
        reload(&s, &config_text(&s, 2, &retired, "", "")),
        Reload::Applied
    );
    // Wait out the real not_after (whole seconds of wall-clock time).
    eventually(
        Duration::from_secs(3),
        "the wall clock passes not_after",
        || svc_registry::clock::now_unix() > retired_at,
    );
    let set = signers_json(&s);
    let old = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == "a")
        .expect("the retired key is still published");
    assert_eq!(old["not_after"], rfc3339(retired_at));
    let (p2, payload2) = propose(&s, 1, "n2");
    let r = approve(&s, &p2, &payload2, &a);
    assert_eq!(r.status, 403, "a retired key no longer approves");
    assert!(r.text().contains("validity"), "{}", r.text());
    for signer in [&a2, &b] {
        assert_eq!(approve(&s, &p2, &payload2, signer).status, 200);
    }
    assert_eq!(commit(&s, &p2).status, 200);

    // Unpinned verify: the published set (retired key included) checks all history.
    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 3 records"), "{out}");

    // Pinned to a set without the retired key, record 1 no longer verifies: that is why
    // retired keys stay published.
    let dir = tempfile::tempdir().unwrap();
    let mut without = set.clone();
    without["keys"]
        .as_array_mut()
        .unwrap()
        .retain(|k| k["keyid"] != "a");
    let pinned = dir.path().join("signers.json");
    std::fs::write(&pinned, serde_json::to_vec(&without).unwrap()).unwrap();
    let (ok, _, err) = s.ronctl(&["registry", "verify", "--signers", pinned.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("BROKEN at version 1"), "{err}");

    // Each record is checked against the keys valid at its committed_at.
    let log = json(&s.get("/registry/log?from=0&limit=10"));
    let records: Vec<CommitRecord> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| CommitRecord::from_value(v.clone()).unwrap())
        .collect();
    let t1 = records[1].committed_at_ms.div_euclid(1000);
    let t2 = records[2].committed_at_ms.div_euclid(1000);
    let check = |a_window: (Option<i64>, Option<i64>)| {
        let mut set = set.clone();
        for k in set["keys"].as_array_mut().unwrap() {
            if k["keyid"] == "a" {
                k["not_before"] = a_window.0.map(rfc3339).into();
                k["not_after"] = a_window.1.map(rfc3339).into();
            }
        }
        let set = svc_registry::cli::signers_from_json(&set).unwrap();
        verify_chain("test-registry", &records, &set)
    };
    assert_eq!(check((None, Some(t1))), Ok(3), "valid through commit 1");
    assert_eq!(
        check((None, Some(t1 - 1))).unwrap_err().version,
        1,
        "retired before commit 1"
    );
    assert_eq!(
        check((Some(t1 + 1), None)).unwrap_err().version,
        1,
        "not yet valid at commit 1"
    );
    // Commit 2 was signed without the old key: its window does not matter there.
    assert!(t2 >= t1);
}

#[test]
fn sighup_applies_limits_log_level_chaos_and_maintenance_live() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let keys: Vec<Key> = [&a, &b, &c].map(|k| (k, None, None)).to_vec();
    let two_ops = serde_json::to_vec(&j!({
        "registry_id": "test-registry", "base_version": 0,
        "ops": [put("node", "x", j!({})), put("node", "y", j!({}))],
    }))
    .unwrap();
    assert_eq!(s.post("/propose", &two_ops).status, 202);
    let chaos = br#"{"fault": "storage-latency", "ms": 5}"#;
    assert_eq!(s.admin("POST", "/admin/chaos", Some(chaos)).status, 403);
    assert!(!s.logs().contains("msg=request "), "debug is off");

    let tables = "[proposals]\nmax_ops = 1\n[chaos]\nenabled = true\n[maintenance]\nread_only = true\nreason = \"disk swap\"\n";
    let text = config_text(&s, 2, &keys, "log_level = \"debug\"\n", tables);
    assert_eq!(reload(&s, &text), Reload::Applied);
    // Limits.
    let changed = String::from_utf8(two_ops.clone())
        .unwrap()
        .replace("\"x\"", "\"x2\"");
    // Maintenance from the file: writes shed, reads and readiness stay, the reason shows.
    let r = s.post("/propose", changed.as_bytes());
    assert_eq!(r.status, 503, "{}", r.text());
    let ready = s.admin("GET", "/readyz", None);
    assert_eq!(ready.status, 200);
    assert!(ready.text().contains("disk swap"), "{}", ready.text());
    assert!(s
        .logs()
        .contains("msg=\"maintenance switched\" audit=1 source=sighup"));
    assert_eq!(s.metric("registry_read_only"), 1.0);
    // Switched off at run time; a reload that leaves [maintenance] alone keeps it off.
    let r = s.admin(
        "POST",
        "/admin/maintenance",
        Some(br#"{"read_only": false}"#),
    );
    assert_eq!(r.status, 200);
    let text2 = config_text(&s, 2, &keys, "log_level = \"debug\"\n", tables).replace("[sse]", "")
        + "[sse]\nheartbeat_secs = 5\n";
    assert_eq!(reload(&s, &text2), Reload::Applied);
    let r = s.post("/propose", changed.as_bytes());
    assert_eq!(r.status, 413, "max_ops = 1 applies: {}", r.text());
    // Log level: debug request lines now appear.
    s.get("/registry/head");
    assert!(
        s.wait_log("msg=request ", Duration::from_secs(5)),
        "{}",
        s.logs()
    );
    // Chaos switched on by the file, then off again (which clears the fault).
    let r = s.admin("POST", "/admin/chaos", Some(chaos));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.005);
    let off = config_text(&s, 2, &keys, "", "[maintenance]\nread_only = false\n");
    assert_eq!(reload(&s, &off), Reload::Applied);
    assert_eq!(s.metric("registry_chaos_storage_latency_seconds"), 0.0);
    assert_eq!(s.admin("POST", "/admin/chaos", Some(chaos)).status, 403);
    // Maintenance table changed (reason dropped, still off): writes stay on; max_ops is back.
    assert_eq!(s.post("/propose", changed.as_bytes()).status, 202);
}

#[test]
fn reloads_and_maintenance_switches_go_on_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bus.sock");
    let mut setup = Setup::default();
    setup.tables = format!("[bus]\nsocket = {:?}\n", sock.display().to_string());
    let s = TestServer::start(setup);
    let mut bus = BusClient::connect(&sock);
    // The subscription is registered asynchronously: a commit event shows it is in place.
    let (event, _) = bus.commit_until_subscribed(&s, 0);
    assert_eq!(event["type"], "commit");
    let mut next = || bus.next();
    let same = std::fs::read_to_string(&s.config_path).unwrap();
    assert_eq!(reload(&s, &same), Reload::Applied);
    assert_eq!(next(), j!({"type": "reload", "ok": true}));
    assert_eq!(reload(&s, "broken ="), Reload::Refused);
    assert_eq!(next(), j!({"type": "reload", "ok": false}));
    s.admin(
        "POST",
        "/admin/maintenance",
        Some(br#"{"read_only": true, "reason": "bus test"}"#),
    );
    assert_eq!(
        next(),
        j!({"type": "write_plane", "ready": false, "reason": "bus test"})
    );
    s.admin(
        "POST",
        "/admin/maintenance",
        Some(br#"{"read_only": false}"#),
    );
    assert_eq!(
        next(),
        j!({"type": "write_plane", "ready": true, "reason": null})
    );
}
