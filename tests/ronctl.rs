//! ronctl end to end against the real server: keygen → propose → approve ×M → commit → verify,
//! offline signing, and verify catching a tampered record.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use std::process::Command;

/// `ronctl registry verify` of a saved log page against pinned signers.
fn verify_file(
    s: &TestServer,
    signers: &std::path::Path,
    log: &std::path::Path,
) -> (bool, String, String) {
    s.ronctl(&[
        "registry",
        "verify",
        "--signers",
        signers.to_str().unwrap(),
        "--log-file",
        log.to_str().unwrap(),
    ])
}

#[test]
fn keygen_propose_approve_commit_verify_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    // Three fresh keys from ronctl keygen, configured as a 2-of-3 signer set.
    let mut signers = Vec::new();
    let mut key_files = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let path = dir.path().join(format!("{name}.key"));
        let stdout = ronctl_ok(&["keygen", "--out", path.to_str().unwrap(), "--keyid", name]);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "private key file mode");
        let (keyid, key) = svc_registry::cli::load_key(&path).unwrap();
        assert_eq!(keyid, name);
        assert!(stdout.contains(&hex::encode(key.verifying_key().as_bytes())));
        signers.push(Signer { keyid, key });
        key_files.push(path);
    }
    // keygen refuses to overwrite a key.
    let again = Command::new(ronctl_bin())
        .args(["keygen", "--out", key_files[0].to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let s = TestServer::start(Setup {
        signers,
        ..Setup::default()
    });
    let proposal = dir.path().join("p.json");
    std::fs::write(&proposal, br#"{"registry_id": "test-registry", "base_version": 0, "ops": [{"op": "put", "kind": "node", "id": "node-7", "body": {"addr": "10.0.0.7:9000"}}]}"#).unwrap();
    let (ok, out, err) = s.ronctl(&["registry", "propose", "--file", proposal.to_str().unwrap()]);
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    assert_eq!(id.len(), 64);

    // First approval shows the diff it signs.
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        key_files[0].to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("approvals 1 of 2"), "{out}");
    assert!(
        err.contains("node/node-7") && err.contains("10.0.0.7:9000"),
        "the review shows the diff: {err}"
    );
    // Commit under quorum fails with a clear message and a non-zero exit.
    let (ok, _, err) = s.ronctl(&["registry", "commit", "--id", &id]);
    assert!(!ok);
    assert!(
        err.contains("412") && err.contains("quorum_not_met"),
        "{err}"
    );

    // Second approval made offline: export the payload, sign it, import the signature.
    let payload = dir.path().join("payload.bin");
    let sig = dir.path().join("sig.json");
    assert!(
        s.ronctl(&[
            "registry",
            "approve",
            "--id",
            &id,
            "--export-payload",
            payload.to_str().unwrap()
        ])
        .0
    );
    ronctl_ok(&[
        "sign",
        "--payload",
        payload.to_str().unwrap(),
        "--signer",
        key_files[1].to_str().unwrap(),
        "--out",
        sig.to_str().unwrap(),
    ]);
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--import-sig",
        sig.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("approvals 2 of 2"), "{out}");

    let (ok, out, err) = s.ronctl(&["registry", "commit", "--id", &id]);
    assert!(ok, "{err}");
    assert!(out.starts_with("version 1 hash "), "{out}");
    let (ok, out, _) = s.ronctl(&["registry", "head"]);
    assert!(ok && out.contains("\"version\": 1"), "{out}");
    let (ok, out, _) = s.ronctl(&["registry", "get", "1"]);
    assert!(ok && out.contains(&id));

    // verify against pinned keys (the signer set as published, saved to a file).
    let pinned = dir.path().join("signers.json");
    std::fs::write(&pinned, s.get("/registry/signers").body).unwrap();
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--signers", pinned.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.starts_with("ok: 2 records"), "{out}");
    assert!(
        out.contains("ok: the served state at version 1 (1 descriptors) is the replay"),
        "{out}"
    );
    // Unpinned works but warns.
    let (ok, _, err) = s.ronctl(&["registry", "verify"]);
    assert!(ok && err.contains("warning"), "{err}");
}

/// A checkpoint is trusted for its descriptors at start-up (its CRC guards against damage, not
/// against an edit with the CRC recomputed), so `verify` compares the served state with a replay
/// of the signed history: an edited body in the newest checkpoint is caught and named.
#[test]
fn verify_catches_a_served_state_that_differs_from_the_signed_history() {
    let mut setup = Setup::default();
    setup.tables = "[storage]\ncheckpoint_every_commits = 2\n".into();
    let s = TestServer::start(setup);
    for v in 0..4u64 {
        s.commit_ops(
            v,
            serde_json::json!([put("node", &format!("n{v}"), serde_json::json!({"v": v}))]),
        );
    }
    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("served state at version 4 (4 descriptors)"),
        "{out}"
    );

    // Stop (a final checkpoint at HEAD), then rewrite one body in that checkpoint with a valid
    // CRC: the same count and head hash, so start-up takes it.
    let s = s.stop();
    let dir = s.data_dir.join("checkpoints");
    let newest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .max()
        .expect("a checkpoint");
    let bytes = std::fs::read(&newest).unwrap();
    let payload = &bytes[24..bytes.len() - 4];
    // A body of the same length: checkpoint payload version 2 stores each body length-prefixed
    // in binary (docs/FORMATS.md §7), so an edit that keeps the length needs no other change.
    let (from, to) = (br#"{"v":2}"#, br#"{"v":7}"#);
    let at = payload
        .windows(from.len())
        .position(|w| w == from)
        .expect("n2's body in the checkpoint");
    let mut forged = payload.to_vec();
    forged[at..at + to.len()].copy_from_slice(to);
    let mut out = bytes[..16].to_vec();
    out.extend_from_slice(&(forged.len() as u64).to_le_bytes());
    out.extend_from_slice(&forged);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&newest, out).unwrap();

    let s = s.restart_killed();
    let served = json(&s.get("/registry/descriptors/node/n2"));
    assert_eq!(served["body"]["v"], 7, "the forged checkpoint was used");
    let (ok, out, err) = s.ronctl(&["registry", "verify"]);
    assert!(!ok, "verify passed a forged state: {out}");
    assert!(out.contains("hash chain intact"), "{out}");
    assert!(err.contains("STATE DIFFERS at version 4"), "{err}");
    assert!(err.contains("node/n2 is served as of version"), "{err}");
    assert!(err.contains("with another body"), "{err}");
}

#[test]
fn verify_detects_a_tampered_record_and_names_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(Setup::default());
    for v in 0..3u64 {
        s.commit_ops(
            v,
            serde_json::json!([put("node", &format!("n{v}"), serde_json::json!({"v": v}))]),
        );
    }
    let pinned = dir.path().join("signers.json");
    std::fs::write(&pinned, s.get("/registry/signers").body).unwrap();
    let log = json(&s.get("/registry/log?from=0&limit=100"));
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec(&log).unwrap()).unwrap();
    let (ok, out, err) = verify_file(&s, &pinned, &good);
    assert!(ok, "{err}");
    assert!(out.contains("4 records"));

    type Tamper = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Tamper)> = vec![
        // A rewritten payload (different descriptor) at version 2.
        (
            "payload",
            Box::new(|l: &mut serde_json::Value| {
                let p = svc_registry::domain::dsse::b64(br#"{"registry_id":"test-registry","base_version":1,"ops":[{"op":"put","kind":"node","id":"evil","body":{}}]}"#);
                l["records"][2]["envelope"]["payload"] = serde_json::json!(p);
            }),
        ),
        // A forged hash link.
        (
            "hash",
            Box::new(|l: &mut serde_json::Value| {
                l["records"][2]["hash"] = serde_json::json!("0".repeat(64))
            }),
        ),
        // A signature swapped for one over other bytes: the chain is recomputed by the forger
        // but the quorum no longer verifies.
        (
            "signature",
            Box::new(|l: &mut serde_json::Value| {
                let other = Signer::new("a", 1).sign(b"something else");
                l["records"][2]["envelope"]["signatures"][0]["sig"] = serde_json::json!(other);
                let recs: Vec<svc_registry::domain::record::CommitRecord> = l["records"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| {
                        svc_registry::domain::record::CommitRecord::from_value(r.clone()).unwrap()
                    })
                    .collect();
                let mut prev = recs[1].hash.clone();
                for i in 2..recs.len() {
                    let r = &recs[i];
                    let h = svc_registry::domain::chain::commit_hash(
                        "test-registry",
                        r.version,
                        &prev,
                        &r.proposal_id,
                        &r.signatures,
                    );
                    l["records"][i]["prev_hash"] = serde_json::json!(prev);
                    l["records"][i]["hash"] = serde_json::json!(h.clone());
                    prev = h;
                }
            }),
        ),
    ];
    for (name, tamper) in cases {
        let mut bad = log.clone();
        tamper(&mut bad);
        let path = dir.path().join(format!("bad-{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&bad).unwrap()).unwrap();
        let (ok, _, err) = verify_file(&s, &pinned, &path);
        assert!(!ok, "{name}: tampering not detected");
        assert!(err.contains("BROKEN at version 2"), "{name}: {err}");
    }
}

#[test]
fn ronctl_reports_unreachable_servers_and_http_errors_clearly() {
    let s = TestServer::start(Setup::default());
    let (ok, _, err) = s.ronctl(&["registry", "get", "42"]);
    assert!(!ok);
    assert!(err.contains("404") && err.contains("not_found"), "{err}");
    let out = Command::new(ronctl_bin())
        .args(["--url", "http://127.0.0.1:1", "registry", "head"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write a key file for `signer` (the format `ronctl keygen` writes).
fn key_file(dir: &std::path::Path, name: &str, signer: &Signer) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.key"));
    let kf = serde_json::json!({
        "keyid": signer.keyid,
        "secret_key": hex::encode(signer.key.to_bytes()),
        "public_key": signer.public_hex(),
    });
    std::fs::write(&path, kf.to_string()).unwrap();
    path
}

#[test]
fn approve_asks_first_and_checks_the_key_against_the_published_signer() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(Setup::default());
    let proposal = dir.path().join("p.json");
    std::fs::write(&proposal, br#"{"registry_id": "test-registry", "base_version": 0, "ops": [{"op": "put", "kind": "node", "id": "n1", "body": {}}]}"#).unwrap();
    let (ok, out, err) = s.ronctl(&["registry", "propose", "--file", proposal.to_str().unwrap()]);
    assert!(ok, "{err}");
    let id = out.trim().to_string();
    let approvals = || json(&s.get(&format!("/proposals/{id}")))["approvals"].clone();

    // No terminal on stdin and no --yes: refused, nothing sent.
    let good = key_file(dir.path(), "a", &Signer::new("a", 1));
    let (ok, _, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        good.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("refusing to sign without confirmation") && err.contains("--yes"),
        "{err}"
    );
    assert_eq!(approvals(), serde_json::json!([]));

    // A key file claiming keyid "a" with another key: refused locally, before sending.
    let wrong = key_file(dir.path(), "a-wrong", &Signer::new("a", 9));
    let (ok, _, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        wrong.to_str().unwrap(),
        "--yes",
    ]);
    assert!(!ok);
    assert!(
        err.contains("does not match signer \"a\"") && err.contains("nothing was sent"),
        "{err}"
    );
    // A keyid the server does not know.
    let stranger = key_file(dir.path(), "zed", &Signer::new("zed", 7));
    let (ok, _, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        stranger.to_str().unwrap(),
        "--yes",
    ]);
    assert!(!ok);
    assert!(
        err.contains("\"zed\" is not in the server's signer set") && err.contains("a, b, c"),
        "{err}"
    );
    assert_eq!(approvals(), serde_json::json!([]));

    // --yes with the right key signs; --output json answers one JSON document.
    let (ok, out, err) = s.ronctl(&[
        "--output",
        "json",
        "registry",
        "approve",
        "--id",
        &id,
        "--signer",
        good.to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    assert_eq!(v["threshold"], 2);
    assert_eq!(approvals().as_array().unwrap().len(), 1);
}

#[test]
fn descriptor_log_and_proposal_commands_replace_curl_in_text_and_json() {
    let s = TestServer::start(Setup::default());
    s.commit_ops(
        0,
        serde_json::json!([
            put("node", "n1", serde_json::json!({"addr": "10.0.0.1:1"})),
            put("service", "svc.api", serde_json::json!({"port": 443}))
        ]),
    );
    let ronctl_json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let (ok, out, err) = s.ronctl(&all);
        assert!(ok, "{args:?}: {err}");
        assert_eq!(out.trim().lines().count(), 1, "one JSON line: {out}");
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    };
    let all = ronctl_json(&["registry", "descriptors"]);
    assert_eq!(all["version"], 1);
    assert_eq!(all["descriptors"].as_array().unwrap().len(), 2);
    let nodes = ronctl_json(&["registry", "descriptors", "--kind", "node"]);
    assert_eq!(nodes["descriptors"][0]["id"], "n1");
    assert_eq!(nodes["descriptors"].as_array().unwrap().len(), 1);
    let one = ronctl_json(&["registry", "descriptor", "service", "svc.api"]);
    assert_eq!(one["body"]["port"], 443);
    let page = ronctl_json(&["registry", "log", "--from", "1", "--limit", "1"]);
    assert_eq!(page["records"][0]["version"], 1);
    let id = page["records"][0]["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = ronctl_json(&["registry", "proposal", &id]);
    assert_eq!(p["state"], "committed");
    assert_eq!(ronctl_json(&["registry", "head"])["version"], 1);

    // Text for people.
    let (ok, out, _) = s.ronctl(&["registry", "descriptors"]);
    assert!(
        ok && out.contains("2 descriptor(s) at version 1") && out.contains("node/n1  v1"),
        "{out}"
    );
    let (ok, out, _) = s.ronctl(&["registry", "log", "--from", "0"]);
    assert!(
        ok && out.contains("version 1  hash ") && out.contains("end of log"),
        "{out}"
    );
    let (ok, out, _) = s.ronctl(&["registry", "proposal", &id]);
    assert!(
        ok && out.contains("state: committed") && out.contains("\"id\":\"svc.api\""),
        "{out}"
    );
    let (ok, _, err) = s.ronctl(&["registry", "descriptor", "node", "nope"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[test]
fn help_version_completions_and_man_page() {
    let run = |args: &[&str]| {
        let out = Command::new(ronctl_bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let help = run(&["--help"]);
    assert!(
        help.contains("Operator and signer CLI for svc-registry") && help.contains("--output"),
        "{help}"
    );
    assert!(
        !help.contains("Authoritative append-only registry"),
        "ronctl has its own description"
    );
    assert!(run(&["--version"]).starts_with("ronctl "));
    let man = run(&["manpage"]);
    assert!(man.contains(".TH ronctl"), "{}", &man[..man.len().min(200)]);
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        assert!(
            script.contains("ronctl") && script.contains("descriptors"),
            "{shell}"
        );
    }
    // The arguments the walk-through found bare now explain themselves.
    for (cmd, want) in [
        (vec!["registry", "propose"], "sent byte for byte"),
        (vec!["registry", "approve"], "printed by `propose`"),
        (vec!["registry", "approve"], "Sign without asking"),
        (vec!["registry", "commit"], "printed by `propose`"),
        (vec!["registry", "get"], "0 is genesis"),
        (vec!["sign"], "Private key file"),
        (vec!["maintenance", "on"], "Why (shown by /readyz"),
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let text = run(&args);
        assert!(
            text.contains(want),
            "{cmd:?} --help lacks {want:?}:\n{text}"
        );
    }
}
