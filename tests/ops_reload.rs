//! SIGHUP against the real process: a differing signer set is warned about and ignored (the
//! log is authoritative, docs/FORMATS.md; rotation is a set_signers, checked here too), limits, log
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

/// docs/FORMATS.md: the signer set is on the log; a reload with a different `[signers]` is reported
/// with the exact warning and not used (it used to add a signer and raise the threshold).
#[test]
fn sighup_with_a_different_signer_set_warns_and_keeps_the_log_set_and_refuses_broken_files() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let d = Signer::new("d", 4);
    let (p1, payload1) = propose(&s, 0, "n1");
    let r = approve(&s, &p1, &payload1, &d);
    assert_eq!(r.status, 403, "d is not configured: {}", r.text());
    let before = signers_json(&s);

    // A config that adds d and raises the threshold to 3: reloaded, warned about, not used.
    let keys: Vec<Key> = [&a, &b, &c, &d].map(|k| (k, None, None)).to_vec();
    assert_eq!(
        reload(&s, &config_text(&s, 3, &keys, "", "")),
        Reload::Applied
    );
    assert!(s.wait_log("msg=reloaded audit=1", TIMEOUT), "{}", s.logs());
    assert!(
        s.logs()
            .contains("msg=\"config signer set differs from the log; the log is authoritative\""),
        "{}",
        s.logs()
    );
    let set = signers_json(&s);
    assert_eq!(set, before, "the log's signer set stays in force");
    assert_eq!(set["threshold"], 2);
    let r = approve(&s, &p1, &payload1, &d);
    assert_eq!(r.status, 403, "d is still no signer: {}", r.text());
    for signer in [&a, &b] {
        assert_eq!(approve(&s, &p1, &payload1, signer).status, 200);
    }
    assert_eq!(commit(&s, &p1).status, 200, "2 of 3 is still the quorum");

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
        let refusals = || s.logs().matches("reload refused").count();
        let seen = refusals();
        assert_eq!(reload(&s, &text), Reload::Refused, "{needle}");
        // The metric moves before the log line has come through the stderr reader: wait for
        // this refusal's line, so the newest one below is this refusal's.
        poll_until(TIMEOUT, || refusals() > seen);
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
    assert_eq!(signers_json(&s), set, "the signer set stays");
    let (p2, payload2) = propose(&s, 1, "n2");
    for signer in [&a, &b] {
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
        s.wait_log("restart_needed_for=\"registry_addr\"", TIMEOUT),
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

/// A key rotation is a set_signers on the log now (docs/FORMATS.md), not a reload: Alice's key is
/// replaced (old quorum and new quorum both sign), her old key no longer approves, and every
/// version verifies against the set in force at its base — unpinned, pinned to the genesis
/// set, and pinned to the genesis hash — while pinning today's set as the genesis is refused.
#[test]
fn a_key_rotates_by_set_signers_and_history_verifies_against_the_set_in_force_at_each_version() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let a2 = Signer::new("a-2026", 11);
    let (p1, payload1) = propose(&s, 0, "n1");
    for signer in [&a, &b] {
        assert_eq!(approve(&s, &p1, &payload1, signer).status, 200);
    }
    assert_eq!(commit(&s, &p1).status, 200);
    let genesis_set = json(&s.get("/registry/signers?version=0"));

    let keys = j!([
        {"keyid": "a-2026", "alg": "ed25519", "public_key": a2.public_hex()},
        {"keyid": "b", "alg": "ed25519", "public_key": b.public_hex()},
        {"keyid": "c", "alg": "ed25519", "public_key": c.public_hex()},
    ]);
    let payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": 1,
        "ops": [{"op": "set_signers", "threshold": 2, "keys": keys}]}))
    .unwrap();
    let r = s.post("/propose", &payload);
    assert_eq!(r.status, 202, "{}", r.text());
    let rot = json(&r)["proposal_id"].as_str().unwrap().to_string();
    for signer in [&a, &b, &a2] {
        assert_eq!(approve(&s, &rot, &payload, signer).status, 200);
    }
    let r = commit(&s, &rot);
    assert_eq!(r.status, 200, "{}", r.text());
    let now = signers_json(&s);
    assert_eq!(now["since_version"], 2);
    assert!(now["keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["keyid"] != "a"));

    let (p3, payload3) = propose(&s, 2, "n3");
    let r = approve(&s, &p3, &payload3, &a);
    assert_eq!(
        r.status,
        403,
        "the replaced key no longer approves: {}",
        r.text()
    );
    for signer in [&a2, &c] {
        assert_eq!(approve(&s, &p3, &payload3, signer).status, 200);
    }
    assert_eq!(commit(&s, &p3).status, 200);

    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok: 4 records"), "{out}");
    let genesis_hash = json(&s.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        out.contains(&genesis_hash),
        "unpinned verify names what it trusted: {out}"
    );
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--genesis-hash", &genesis_hash]);
    assert!(ok, "{out}{err}");
    let dir = tempfile::tempdir().unwrap();
    let pinned = dir.path().join("signers.json");
    std::fs::write(&pinned, serde_json::to_vec(&genesis_set).unwrap()).unwrap();
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--signers", pinned.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    // Today's set is not the genesis set: pinning it as such is a break at version 0.
    std::fs::write(&pinned, serde_json::to_vec(&now).unwrap()).unwrap();
    let (ok, _, err) = s.ronctl(&["registry", "verify", "--signers", pinned.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("BROKEN at version 0"), "{err}");

    let log = json(&s.get("/registry/log?from=0&limit=10"));
    let records: Vec<CommitRecord> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| CommitRecord::from_value(v.clone()).unwrap())
        .collect();
    let set0 = svc_registry::cli::signers_from_json(&genesis_set).unwrap();
    assert_eq!(verify_chain("test-registry", &records, &set0), Ok(4));
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
    assert!(s.wait_log(
        "msg=\"maintenance switched\" audit=1 source=sighup",
        TIMEOUT
    ));
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
