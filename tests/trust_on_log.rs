//! Issue #13 / SPEC §8 end to end against the real binary: the signer set is on the log. A
//! rotation 2-of-3 → 3-of-4 (one key removed) needs both quorums; the removed key stops
//! counting; `ronctl registry verify` walks the whole history; a forged `set_signers` signed by
//! the old quorum only is BROKEN at its version; bad `set_signers` inputs are 400 naming the
//! problem.

mod common;
use common::*;
use serde_json::json as j;
use svc_registry::domain::chain;
use svc_registry::domain::record::CommitRecord;

fn key_json(s: &Signer) -> serde_json::Value {
    j!({"keyid": s.keyid, "alg": "ed25519", "public_key": s.public_hex()})
}

fn set_signers_payload(base: u64, threshold: usize, keys: &[&Signer], note: &str) -> Vec<u8> {
    let keys: Vec<serde_json::Value> = keys.iter().map(|k| key_json(k)).collect();
    serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
        "ops": [{"op": "set_signers", "threshold": threshold, "keys": keys}], "note": note}))
    .unwrap()
}

fn propose(s: &TestServer, payload: &[u8]) -> String {
    let r = s.post("/propose", payload);
    assert_eq!(r.status, 202, "{}", r.text());
    json(&r)["proposal_id"].as_str().unwrap().to_string()
}

fn approve(s: &TestServer, id: &str, payload: &[u8], signers: &[&Signer]) -> ClientResponse {
    let sigs: Vec<serde_json::Value> = signers
        .iter()
        .map(|k| j!({"keyid": k.keyid, "sig": k.sign(payload)}))
        .collect();
    s.post(
        "/approve",
        &serde_json::to_vec(&j!({"proposal_id": id, "signatures": sigs})).unwrap(),
    )
}

fn commit(s: &TestServer, id: &str) -> ClientResponse {
    s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes())
}

fn put_payload(base: u64, id: &str) -> Vec<u8> {
    serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
        "ops": [put("node", id, j!({"v": base}))]}))
    .unwrap()
}

#[test]
fn rotation_2_of_3_to_3_of_4_needs_both_quorums_and_verifies_over_the_whole_history() {
    let s = TestServer::start(Setup::default());
    let (a, b, c) = (
        Signer::new("a", 1),
        Signer::new("b", 2),
        Signer::new("c", 3),
    );
    let (d, e) = (Signer::new("d", 4), Signer::new("e", 5));
    let dir = tempfile::tempdir().unwrap();
    let genesis_pin = dir.path().join("genesis-signers.json");
    std::fs::write(&genesis_pin, s.get("/registry/signers?version=0").body).unwrap();

    // Only the new quorum (a, d, e: 3 of the new 3-of-4) but one key of the old set: 412
    // naming the set in force, short by one.
    let only_new = set_signers_payload(0, 3, &[&a, &b, &d, &e], "only the new quorum");
    let q = propose(&s, &only_new);
    let r = approve(&s, &q, &only_new, &[&d, &e, &a]);
    assert_eq!(
        r.status,
        200,
        "keys only in the new set may approve it: {}",
        r.text()
    );
    assert_eq!(
        (
            json(&r)["approvals"].as_u64(),
            json(&r)["new_approvals"].as_u64()
        ),
        (Some(1), Some(3))
    );
    let r = commit(&s, &q);
    assert_eq!(r.status, 412, "{}", r.text());
    let msg = json(&r)["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("the signer set in force has 1 of 2 approvals (1 short)")
            && !msg.contains("new signer set"),
        "{msg}"
    );

    // The rotation proper: the diff shows what changes.
    let rotate = set_signers_payload(0, 3, &[&a, &b, &d, &e], "2-of-3 to 3-of-4, c leaves");
    let p = propose(&s, &rotate);
    let view = json(&s.get(&format!("/proposals/{p}")));
    let diff = &view["diff"][0];
    assert_eq!(diff["op"], "set_signers");
    assert_eq!(
        (
            diff["threshold"]["old"].as_u64(),
            diff["threshold"]["new"].as_u64()
        ),
        (Some(2), Some(3))
    );
    let ids = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|k| k["keyid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&diff["added"]), ["d", "e"]);
    assert_eq!(ids(&diff["removed"]), ["c"]);
    // Only the old quorum (a, b count in both sets: 2 of the new 3): 412 naming the new set.
    assert_eq!(approve(&s, &p, &rotate, &[&a, &b]).status, 200);
    let r = commit(&s, &p);
    assert_eq!(r.status, 412, "{}", r.text());
    let msg = json(&r)["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("the new signer set has 2 of 3 approvals (1 short)")
            && !msg.contains("in force"),
        "{msg}"
    );
    assert_eq!(approve(&s, &p, &rotate, &[&d]).status, 200);
    let r = commit(&s, &p);
    assert_eq!(r.status, 200, "{}", r.text());
    let record = json(&s.get("/registry/1"));
    let keyids: Vec<&str> = record["envelope"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["keyid"].as_str().unwrap())
        .collect();
    assert_eq!(
        keyids,
        ["a", "b", "d"],
        "S lists every counted signature, by keyid"
    );
    let now = json(&s.get("/registry/signers"));
    assert_eq!(
        (now["threshold"].as_u64(), now["since_version"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(json(&s.get("/registry/signers?version=0"))["threshold"], 2);
    assert_eq!(s.get("/registry/signers?version=9").status, 404);

    // The new set governs proposals based at or after version 1: c's approval does not
    // count (refused), and 3 of the new keys are needed.
    let p2 = put_payload(1, "n2");
    let id2 = propose(&s, &p2);
    assert_eq!(approve(&s, &id2, &p2, &[&c]).status, 403);
    assert_eq!(approve(&s, &id2, &p2, &[&a, &e]).status, 200);
    assert_eq!(commit(&s, &id2).status, 412, "2 of 3 is no quorum now");
    assert_eq!(approve(&s, &id2, &p2, &[&b]).status, 200);
    assert_eq!(json(&commit(&s, &id2))["version"], 2);

    // The whole history verifies: unpinned (printing the genesis it trusted), pinned to the
    // genesis set, pinned to the genesis hash.
    let genesis = json(&s.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(
        ok && out.contains("ok: 3 records") && out.contains(&genesis),
        "{out}{err}"
    );
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "verify",
        "--signers",
        genesis_pin.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--genesis-hash", &genesis]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = s.ronctl(&["registry", "verify", "--genesis-hash", &"0".repeat(64)]);
    assert!(!ok && err.contains("BROKEN at version 0"), "{err}");

    // Restart: the history comes back from the log, and the new set still governs.
    let s = s.restart_killed();
    assert_eq!(json(&s.get("/registry/signers"))["since_version"], 1);
    let p3 = put_payload(2, "n3");
    let id3 = propose(&s, &p3);
    assert_eq!(approve(&s, &id3, &p3, &[&a, &b, &e]).status, 200);
    assert_eq!(json(&commit(&s, &id3))["version"], 3);
}

/// A copied log whose version 1 is replaced by a set_signers signed by the old quorum only
/// (a new set of one key of the forger's, hash chain recomputed) is BROKEN at version 1.
#[test]
fn a_forged_set_signers_signed_by_the_old_quorum_only_is_broken_at_its_version() {
    let s = TestServer::start(Setup::default());
    let (a, b) = (Signer::new("a", 1), Signer::new("b", 2));
    let p1 = put_payload(0, "n1");
    let id1 = propose(&s, &p1);
    assert_eq!(approve(&s, &id1, &p1, &[&a, &b]).status, 200);
    assert_eq!(commit(&s, &id1).status, 200);
    let log = json(&s.get("/registry/log?from=0&limit=10"));
    let mut records: Vec<CommitRecord> = log["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| CommitRecord::from_value(v.clone()).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let genesis_pin = dir.path().join("genesis-signers.json");
    std::fs::write(&genesis_pin, s.get("/registry/signers?version=0").body).unwrap();
    let write_log = |records: &[CommitRecord]| {
        let path = dir.path().join("log.json");
        let values: Vec<serde_json::Value> = records.iter().map(|r| r.to_value()).collect();
        std::fs::write(&path, serde_json::to_vec(&values).unwrap()).unwrap();
        path
    };
    let good = write_log(&records);
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "verify",
        "--log-file",
        good.to_str().unwrap(),
        "--signers",
        genesis_pin.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");

    let mallory = Signer::new("mallory", 66);
    let forged = set_signers_payload(0, 1, &[&mallory], "");
    let pid = svc_registry::domain::sha256_hex(&forged);
    let sigs = vec![
        ("a".to_string(), a.sign(&forged)),
        ("b".to_string(), b.sign(&forged)),
    ];
    let prev = records[0].hash.clone();
    records[1] = CommitRecord {
        version: 1,
        hash: chain::commit_hash("test-registry", 1, &prev, &pid, &sigs),
        prev_hash: prev,
        committed_at_ms: records[1].committed_at_ms,
        proposal_id: pid,
        payload: forged.into(),
        signatures: sigs,
        descriptors: 0,
        genesis_signers: None,
    };
    let bad = write_log(&records);
    for pin in [vec!["--signers", genesis_pin.to_str().unwrap()], vec![]] {
        let mut args = vec!["registry", "verify", "--log-file", bad.to_str().unwrap()];
        args.extend(pin);
        let (ok, out, err) = s.ronctl(&args);
        assert!(!ok, "a forged rotation verified: {out}");
        assert!(
            err.contains("BROKEN at version 1") && err.contains("new signer set"),
            "{err}"
        );
    }
}

#[test]
fn bad_set_signers_inputs_are_400_naming_the_problem() {
    let s = TestServer::start(Setup::default());
    let (a, b) = (Signer::new("a", 1), Signer::new("b", 2));
    let weak = "0000000000000000000000000000000000000000000000000000000000000000";
    let key =
        |keyid: &str, public: String| j!({"keyid": keyid, "alg": "ed25519", "public_key": public});
    let cases = [
        (
            j!([{"op": "set_signers", "threshold": 1, "keys": [key("a", a.public_hex()), key("a", b.public_hex())]}]),
            "keyid \"a\" appears twice",
        ),
        (
            j!([{"op": "set_signers", "threshold": 1, "keys": [key("a", a.public_hex()), key("b", a.public_hex())]}]),
            "same public_key",
        ),
        (
            j!([{"op": "set_signers", "threshold": 1, "keys": [key("w", weak.into())]}]),
            "weak (small-order) key",
        ),
        (
            j!([{"op": "set_signers", "threshold": 0, "keys": [key("a", a.public_hex())]}]),
            "threshold = 0 must be between 1",
        ),
        (
            j!([{"op": "set_signers", "threshold": 2, "keys": [key("a", a.public_hex())]}]),
            "threshold = 2 must be between 1 and the number of keys (1)",
        ),
        (
            j!([{"op": "set_signers", "threshold": 1, "keys": [{"keyid": "a", "alg": "rsa", "public_key": a.public_hex()}]}]),
            "alg \"rsa\" is unknown",
        ),
        (
            j!([put("node", "n", j!({})), {"op": "set_signers", "threshold": 1, "keys": [key("a", a.public_hex())]}]),
            "must be the only op in its proposal",
        ),
    ];
    for (ops, needle) in cases {
        let payload = serde_json::to_vec(
            &j!({"registry_id": "test-registry", "base_version": 0, "ops": ops}),
        )
        .unwrap();
        let r = s.post("/propose", &payload);
        assert_eq!(r.status, 400, "{needle}: {}", r.text());
        let msg = json(&r)["message"].as_str().unwrap().to_lowercase();
        assert!(msg.contains(needle), "{needle}: {msg}");
    }
    assert_eq!(s.head()["version"], 0);
}

/// A data directory made before SPEC §8 (its log starts at version 1: genesis v1 was never
/// written down) is refused at start with a message saying what it is and what to do; the
/// process stays up, not ready, and nothing is rewritten.
#[test]
fn a_genesis_v1_data_directory_is_refused_at_start_by_name() {
    let s = TestServer::start(Setup::default()).stop();
    let log_dir = s.data_dir.join("log");
    std::fs::remove_dir_all(&log_dir).unwrap();
    let _ = std::fs::remove_dir_all(s.data_dir.join("checkpoints"));
    // What the previous release wrote: commit records from version 1 on, on the v1 genesis.
    let (a, b) = (Signer::new("a", 1), Signer::new("b", 2));
    let payload = put_payload(0, "n1");
    let pid = svc_registry::domain::sha256_hex(&payload);
    let sigs = vec![
        ("a".to_string(), a.sign(&payload)),
        ("b".to_string(), b.sign(&payload)),
    ];
    let prev = chain::genesis_hash("test-registry");
    let v1 = CommitRecord {
        version: 1,
        hash: chain::commit_hash("test-registry", 1, &prev, &pid, &sigs),
        prev_hash: prev,
        committed_at_ms: 1_767_225_600_000,
        proposal_id: pid,
        payload: payload.into(),
        signatures: sigs,
        descriptors: 1,
        genesis_signers: None,
    };
    {
        let opts = svc_registry::log::StorageOptions {
            segment_bytes: 1 << 20,
            checkpoints_kept: 2,
        };
        let mut o = svc_registry::log::open(
            &s.data_dir,
            &opts,
            std::sync::Arc::new(svc_registry::log::OsIo),
        )
        .unwrap();
        let lsn = o.writer.append(&v1.to_json()).unwrap();
        o.syncer.sync_to(lsn).unwrap();
    }
    let before = std::fs::read(svc_registry::log::segment_path(&log_dir, 0)).unwrap();
    let s = s.restart_unready();
    eventually(TIMEOUT, "the refusal is logged", || {
        s.logs().contains("created with genesis v1")
    });
    let logs = s.logs();
    assert!(
        logs.contains("does not migrate") && logs.contains("Start a new data directory"),
        "{logs}"
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(
        std::fs::read(svc_registry::log::segment_path(&log_dir, 0)).unwrap(),
        before,
        "the old log is left as it was"
    );
}

/// `ronctl signers propose` builds the set_signers on HEAD from a TOML file and shows the
/// change; `registry approve` works for it, offline signing included (export, sign, import);
/// `signers show [--version V]` answers for any version.
#[test]
fn ronctl_signers_propose_approve_offline_and_show() {
    let s = TestServer::start(Setup::default());
    let dir = tempfile::tempdir().unwrap();
    let d_key = dir.path().join("d.key");
    ronctl_ok(&["keygen", "--out", d_key.to_str().unwrap(), "--keyid", "d"]);
    let (_, d) = svc_registry::cli::load_key(&d_key).unwrap();
    let (a, b) = (Signer::new("a", 1), Signer::new("b", 2));
    let newset = dir.path().join("newset.toml");
    std::fs::write(
        &newset,
        format!(
            "threshold = 2\n[[keys]]\nkeyid = \"a\"\npublic_key = \"{}\"\n[[keys]]\nkeyid = \"b\"\npublic_key = \"{}\"\n[[keys]]\nkeyid = \"d\"\npublic_key = \"{}\"\nnot_after = \"2099-01-01T00:00:00Z\"\n",
            a.public_hex(),
            b.public_hex(),
            hex::encode(d.verifying_key().as_bytes())
        ),
    )
    .unwrap();
    let (ok, out, err) = s.ronctl(&["signers", "propose", "--file", newset.to_str().unwrap()]);
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    assert!(err.contains("threshold 2 -> 2"), "{err}");
    assert!(
        err.contains("added    d ed25519") && err.contains("2099-01-01T00:00:00Z"),
        "{err}"
    );
    assert!(err.contains("removed  c ed25519"), "{err}");

    // a and b sign offline: export the exact payload, sign it elsewhere, import the signature.
    for signer in [&a, &b] {
        let payload_file = dir.path().join("payload.bin");
        let (ok, _, err) = s.ronctl(&[
            "registry",
            "approve",
            "--id",
            &id,
            "--export-payload",
            payload_file.to_str().unwrap(),
        ]);
        assert!(ok && err.contains("set_signers: threshold 2 -> 2"), "{err}");
        let payload = std::fs::read(&payload_file).unwrap();
        let sig_file = dir.path().join("sig.json");
        std::fs::write(
            &sig_file,
            serde_json::to_vec(&j!({"keyid": signer.keyid, "sig": signer.sign(&payload)})).unwrap(),
        )
        .unwrap();
        let (ok, out, err) = s.ronctl(&[
            "registry",
            "approve",
            "--id",
            &id,
            "--import-sig",
            sig_file.to_str().unwrap(),
        ]);
        assert!(ok, "{err}");
        assert!(out.contains("new signer set"), "{out}");
    }
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        d_key.to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("approvals 2 of 2; new signer set 3 of 2"),
        "{out}"
    );
    let (ok, out, err) = s.ronctl(&["registry", "commit", "--id", &id]);
    assert!(ok, "{out}{err}");

    let (ok, out, err) = s.ronctl(&["signers", "show"]);
    assert!(ok, "{err}");
    let now: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(now["since_version"], 1);
    assert!(err.contains("in force since version 1"), "{err}");
    let (ok, out, _) = s.ronctl(&["signers", "show", "--version", "0"]);
    assert!(ok);
    let then: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(then["since_version"], 0);
    assert_eq!(then["keys"].as_array().unwrap().len(), 3);
    let (ok, _, err) = s.ronctl(&["signers", "show", "--version", "7"]);
    assert!(!ok && err.contains("404"), "{err}");

    // A bad file is refused before anything is sent, naming the problem.
    std::fs::write(
        &newset,
        "threshold = 0\n[[keys]]\nkeyid = \"a\"\npublic_key = \"00\"\n",
    )
    .unwrap();
    let (ok, _, err) = s.ronctl(&["signers", "propose", "--file", newset.to_str().unwrap()]);
    assert!(!ok && err.contains("newset.toml"), "{err}");
}
