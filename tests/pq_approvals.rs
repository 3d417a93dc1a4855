//! Moving a registry to hybrid keys, end to end against the real binary and ronctl
//! (docs/OPERATIONS.md, "Moving a registry to hybrid keys"): `ronctl keygen --alg hybrid` and
//! `--alg ml-dsa-65`, a `set_signers` rotation from ed25519 2-of-3 to a 5-of-7 ed25519+ML-DSA-65
//! set, then a commit approved by five hybrid keys — online (`registry approve --signer`) and
//! offline (`--export-payload`, `ronctl sign`, `--import-sig`) — whose ~23 kB of signatures fit
//! the default `max_body_bytes` in one request, the log and record size limits, the log pages,
//! the stream, a restart, `ronctl registry verify`, and a follower that verifies it all.

mod common;
use common::*;
use serde_json::json as j;
use std::io::BufRead;
use std::path::PathBuf;
use svc_registry::domain::signers::KeyAlg;

struct KeyFile {
    keyid: String,
    path: PathBuf,
    alg: String,
    public_key: String,
}

fn keygen(dir: &std::path::Path, keyid: &str, alg: &str) -> KeyFile {
    let path = dir.join(format!("{keyid}.key"));
    let out = ronctl_ok(&[
        "--output",
        "json",
        "keygen",
        "--out",
        path.to_str().unwrap(),
        "--keyid",
        keyid,
        "--alg",
        alg,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let (_, key) = svc_registry::cli::load_signer(&path).unwrap();
    assert_eq!(v["public_key"], key.public_key().to_text());
    KeyFile {
        keyid: keyid.into(),
        path,
        alg: v["alg"].as_str().unwrap().into(),
        public_key: v["public_key"].as_str().unwrap().into(),
    }
}

fn approve_with(s: &TestServer, id: &str, key: &KeyFile) -> String {
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        id,
        "--signer",
        key.path.to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok, "{} approves: {out}{err}", key.keyid);
    out
}

#[test]
fn keygen_writes_each_algorithm_and_the_key_files_sign_what_the_set_lists() {
    let dir = tempfile::tempdir().unwrap();
    let ed = keygen(dir.path(), "e", "ed25519");
    let pq = keygen(dir.path(), "p", "ml-dsa-65");
    let hy = keygen(dir.path(), "h", "hybrid");
    assert_eq!(
        (ed.alg.as_str(), pq.alg.as_str(), hy.alg.as_str()),
        ("ed25519", "ml-dsa-65", "ed25519+ml-dsa-65")
    );
    assert_eq!(ed.public_key.len(), 64);
    assert_eq!(pq.public_key.len(), 3904);
    assert_eq!(hy.public_key.len(), 64 + 1 + 3904);
    // An ed25519 key file is as before (no "alg" member), the others name their algorithm.
    let text = |k: &KeyFile| std::fs::read_to_string(&k.path).unwrap();
    assert!(!text(&ed).contains("\"alg\""));
    assert!(text(&hy).contains("\"alg\": \"ed25519+ml-dsa-65\""));
    // load_key (ed25519 only) refuses a post-quantum key file rather than misreading it.
    assert!(svc_registry::cli::load_key(&pq.path).is_err());
    // A key file whose public_key was edited is refused.
    let tampered = dir.path().join("t.key");
    std::fs::write(
        &tampered,
        text(&hy).replace(&hy.public_key[..10], "0000000000"),
    )
    .unwrap();
    assert!(svc_registry::cli::load_signer(&tampered)
        .unwrap_err()
        .contains("does not match"));
    let (_, key) = svc_registry::cli::load_signer(&hy.path).unwrap();
    assert_eq!(key.alg(), KeyAlg::Ed25519MlDsa65);
}

#[test]
fn a_rotation_to_5_of_7_hybrid_keys_then_a_hybrid_quorum_commit_flows_through_every_path() {
    let s = TestServer::start(Setup::default());
    let dir = tempfile::tempdir().unwrap();
    let hybrid: Vec<KeyFile> = (1..=7)
        .map(|i| keygen(dir.path(), &format!("h{i}"), "hybrid"))
        .collect();

    // set_signers: ed25519 2-of-3 -> hybrid 5-of-7, proposed by ronctl from a TOML file.
    let mut toml = "threshold = 5\n".to_string();
    for k in &hybrid {
        toml.push_str(&format!(
            "[[keys]]\nkeyid = {:?}\nalg = {:?}\npublic_key = {:?}\n",
            k.keyid, k.alg, k.public_key
        ));
    }
    let newset = dir.path().join("hybrid.toml");
    std::fs::write(&newset, toml).unwrap();
    let (ok, out, err) = s.ronctl(&["signers", "propose", "--file", newset.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(err.contains("added    h1 ed25519+ml-dsa-65"), "{err}");
    let id = out.trim().to_string();
    // The old quorum (ed25519, a and b) and the new one (five hybrid keys) both sign.
    let payload = json(&s.get(&format!("/proposals/{id}")))["payload"]
        .as_str()
        .map(|p| svc_registry::domain::dsse::unb64(p).unwrap())
        .unwrap();
    let old: Vec<serde_json::Value> = s.setup.signers[..2]
        .iter()
        .map(|k| j!({"keyid": k.keyid, "sig": k.sign(&payload)}))
        .collect();
    let r = s.post(
        "/approve",
        &serde_json::to_vec(&j!({"proposal_id": id, "signatures": old})).unwrap(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    for k in &hybrid[..5] {
        approve_with(&s, &id, k);
    }
    let (ok, out, err) = s.ronctl(&["registry", "commit", "--id", &id]);
    assert!(ok, "{out}{err}");
    let rotation = s.records_from(1).remove(0);
    assert!(rotation.to_json().len() > 5 * 4400, "5 hybrid signatures");

    // A put on the hybrid set: all five approvals in ONE request (the biggest approve body a
    // 5-of-7 hybrid quorum makes), signed by the key files.
    let put_payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": 1,
        "ops": [put("node", "pq-node", j!({"addr": "10.0.0.9:9000"}))]}))
    .unwrap();
    let r = s.post("/propose", &put_payload);
    assert_eq!(r.status, 202, "{}", r.text());
    let put_id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let sigs: Vec<serde_json::Value> = hybrid[2..7]
        .iter()
        .map(|k| {
            let (keyid, key) = svc_registry::cli::load_signer(&k.path).unwrap();
            let sig = key.sign_payload(&put_payload, &[7; 32]).unwrap().encode();
            assert!(sig.len() > 4400, "a hybrid approval is ~4.5 kB of base64");
            j!({"keyid": keyid, "sig": sig})
        })
        .collect();
    let body = serde_json::to_vec(&j!({"proposal_id": put_id, "signatures": sigs})).unwrap();
    assert!(
        body.len() > 22_000 && body.len() < 1024 * 1024,
        "{}",
        body.len()
    );
    let r = s.post("/approve", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["approvals"], 5);

    // A subscriber sees the big commit on the stream.
    let (head, reader) = svc_registry::http::client::open_stream(
        &s.target(),
        "/registry/stream",
        &[("Last-Event-ID", "1")],
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    let r = s.post(
        "/commit",
        format!(r#"{{"proposal_id":"{put_id}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let hash = json(&r)["hash"].as_str().unwrap().to_string();
    let mut saw = false;
    for line in reader.lines() {
        let line = line.unwrap();
        if line.contains(&hash) {
            saw = true;
            break;
        }
    }
    assert!(saw, "the stream carried version 2");

    // An ML-DSA-65 key joins offline: export the payload, sign with `ronctl sign`, import.
    let pq = keygen(dir.path(), "p1", "ml-dsa-65");
    let mut toml = std::fs::read_to_string(&newset).unwrap();
    toml.push_str(&format!(
        "[[keys]]\nkeyid = \"p1\"\nalg = \"ml-dsa-65\"\npublic_key = {:?}\n",
        pq.public_key
    ));
    std::fs::write(&newset, toml).unwrap();
    let (ok, out, err) = s.ronctl(&["signers", "propose", "--file", newset.to_str().unwrap()]);
    assert!(ok, "{err}");
    let id3 = out.trim().to_string();
    for k in &hybrid[..4] {
        approve_with(&s, &id3, k);
    }
    let payload_file = dir.path().join("payload.bin");
    let (ok, _, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id3,
        "--export-payload",
        payload_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let sig_file = dir.path().join("sig.json");
    ronctl_ok(&[
        "sign",
        "--payload",
        payload_file.to_str().unwrap(),
        "--signer",
        pq.path.to_str().unwrap(),
        "--out",
        sig_file.to_str().unwrap(),
    ]);
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id3,
        "--import-sig",
        sig_file.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    // p1 is only in the new set: it counts there (4 hybrid + p1 = 5 of 5 needed).
    assert!(
        out.contains("approvals 4 of 5; new signer set 5 of 5"),
        "{out}"
    );
    let (ok, out, err) = s.ronctl(&[
        "registry",
        "approve",
        "--id",
        &id3,
        "--signer",
        hybrid[4].path.to_str().unwrap(),
        "--yes",
    ]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = s.ronctl(&["registry", "commit", "--id", &id3]);
    assert!(ok, "{out}{err}");

    // The log pages carry the big records; the whole history verifies offline, anchored at
    // the genesis hash; and it all survives kill -9 and recovery.
    let records = s.records_from(0);
    assert_eq!(records.len(), 4);
    let genesis = records[0].hash.clone();
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--genesis-hash", &genesis]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 signer set(s)"), "{out}");
    for alg in ["ed25519", "ml-dsa-65", "ed25519+ml-dsa-65"] {
        let n = s.metric(&format!("approval_verify_seconds_count{{alg=\"{alg}\"}}"));
        assert!(n >= 1.0, "{alg}: {n}");
    }
    let head = s.head();
    let s = s.restart_killed();
    assert_eq!(s.head()["hash"], head["hash"]);
    let (ok, out, err) = s.ronctl(&["registry", "verify", "--genesis-hash", &genesis]);
    assert!(ok, "{out}{err}");

    // A Micronode follower verifies the rotation to hybrid keys and the hybrid quorum from the
    // genesis hash alone, and serves the same bytes.
    let f = TestServer::start(Setup {
        tables: format!(
            "[follow]\nupstreams = [\"http://{}\"]\ngenesis_hash = {genesis:?}\ntimeout_ms = 1000\n",
            s.registry
        ),
        flags: vec!["--amnesia".into()],
        ..Setup::default()
    });
    eventually(
        TIMEOUT,
        "the follower verifies up to the hybrid commit",
        || f.head()["hash"] == head["hash"],
    );
    for v in 0..records.len() {
        let path = format!("/registry/{v}");
        assert_eq!(f.get(&path).body, s.get(&path).body, "{path}");
    }
    assert_eq!(f.metric("registry_follow_verify_failures_total"), 0.0);
}
