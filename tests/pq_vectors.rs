//! Post-quantum approvals against vectors made by independent implementations
//! (tests/vectors/pq.json, written by tests/vectors/pq_vectors.py with dilithium-py's pure-Python
//! FIPS 204 ML-DSA-65 and pyca/cryptography's Ed25519): key derivation from seeds, the signer
//! set's SS / digest / genesis v2 hash, deterministic and hedged ML-DSA-65 signatures and a
//! hybrid one byte for byte, the version 1 commit hash; then the real binary accepts those
//! approvals, refuses every tampered variant with the vector's status (400 / 403) without
//! counting it, and refuses the bad signer sets.

mod common;
use common::*;
use serde_json::json as j;
use svc_registry::domain::quorum::{self, Approval};
use svc_registry::domain::signers::{KeyAlg, PublicKey, SecretKey, Sig, SignerSet};
use svc_registry::domain::{chain, dsse, sha256_hex};

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("vectors/pq.json")).unwrap()
}

fn s<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn secret(k: &serde_json::Value) -> SecretKey {
    let seeds: Vec<[u8; 32]> = k["seeds_hex"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            hex::decode(h.as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    SecretKey::from_seeds(KeyAlg::parse(s(k, "alg")).unwrap(), &seeds).unwrap()
}

fn public(v: &serde_json::Value, keyid: &str) -> PublicKey {
    let k = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == keyid)
        .unwrap();
    PublicKey::parse(KeyAlg::parse(s(k, "alg")).unwrap(), s(k, "public_key")).unwrap()
}

fn payload(v: &serde_json::Value) -> Vec<u8> {
    dsse::unb64(s(&v["proposal"], "payload_b64")).unwrap()
}

#[test]
fn keys_from_seeds_and_signatures_match_the_independent_implementation() {
    let v = vectors();
    let p = &v["proposal"];
    let payload = payload(&v);
    let pae = dsse::pae(&payload);
    assert_eq!(pae, dsse::unb64(s(p, "pae_b64")).unwrap());
    assert_eq!(sha256_hex(&payload), s(p, "proposal_id"));
    for k in v["keys"].as_array().unwrap() {
        let key = secret(k);
        assert_eq!(key.public_key().to_text(), s(k, "public_key"), "{k}");
        let want = p["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["keyid"] == k["keyid"])
            .unwrap();
        // The deterministic variant (rnd = 0^32) reproduces dilithium-py's bytes exactly.
        let ours = key.sign_payload(&payload, &[0; 32]).unwrap();
        assert_eq!(ours.encode(), s(want, "sig"), "{}", s(k, "keyid"));
        let theirs = Sig::decode(s(want, "sig")).unwrap();
        assert!(key.public_key().verify(&theirs, &pae));
    }
    // The hedged variant with the vector's rnd, too.
    let h = &p["hedged"];
    let rnd: [u8; 32] = hex::decode(s(h, "rnd_hex")).unwrap().try_into().unwrap();
    let pq = secret(&v["keys"][1]);
    assert_eq!(pq.alg(), KeyAlg::MlDsa65);
    let ours = pq.sign_payload(&payload, &rnd).unwrap();
    assert_eq!(ours.encode(), s(h, "sig"));
    assert_ne!(s(h, "sig"), s(&p["approvals"][1], "sig"), "hedged differs");
    assert!(public(&v, "pq").verify(&Sig::decode(s(h, "sig")).unwrap(), &pae));
}

#[test]
fn the_set_genesis_and_commit_hash_match_the_vectors() {
    let v = vectors();
    let input = j!({"threshold": v["set"]["threshold"], "keys": v["set"]["keys"]});
    let set = SignerSet::parse_json(input.to_string().as_bytes()).unwrap();
    assert_eq!(
        String::from_utf8(set.canonical_bytes()).unwrap(),
        s(&v["set"], "ss")
    );
    assert_eq!(set.digest(), s(&v["set"], "signers_digest"));
    let registry_id = s(&v, "registry_id");
    let genesis = chain::genesis_hash_v2(registry_id, &set.digest());
    assert_eq!(genesis, s(&v, "genesis_v2_hash"));
    // The JSON form reads back as the same set (text forms round-trip).
    let again = SignerSet::parse_json(&serde_json::to_vec(&set.to_json_form()).unwrap()).unwrap();
    assert_eq!(again, set);

    let c = &v["proposal"]["commit"];
    let pae = dsse::pae(&payload(&v));
    let approvals: Vec<Approval> = v["proposal"]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| c["approved_by"].as_array().unwrap().contains(&a["keyid"]))
        .map(|a| {
            let key = public(&v, s(a, "keyid"));
            Approval {
                keyid: s(a, "keyid").to_string(),
                public_key: key.to_bytes(),
                sig: Sig::decode(s(a, "sig")).unwrap().encode(),
                verified: key.verify(&Sig::decode(s(a, "sig")).unwrap(), &pae),
                at_unix: 0,
            }
        })
        .collect();
    let counted = quorum::count(&set, None, &approvals);
    assert!(counted.met(), "{:?}", counted.shortfall_message());
    let want: Vec<(String, String)> = c["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (s(x, "keyid").to_string(), s(x, "sig").to_string()))
        .collect();
    assert_eq!(counted.signatures, want);
    assert_eq!(
        chain::commit_hash(
            registry_id,
            1,
            &genesis,
            s(&v["proposal"], "proposal_id"),
            &want
        ),
        s(c, "hash")
    );
}

#[test]
fn tampered_approvals_are_refused_by_shape_or_by_verification() {
    let v = vectors();
    let pae = dsse::pae(&payload(&v));
    for t in v["tampered"].as_array().unwrap() {
        let name = s(t, "name");
        match (Sig::decode(s(t, "sig")), t["status"].as_u64().unwrap()) {
            (None, 400) => {}
            (Some(sig), 403) => assert!(
                !public(&v, s(t, "keyid")).verify(&sig, &pae),
                "{name}: verified"
            ),
            (decoded, status) => panic!("{name}: decoded {decoded:?}, vector says {status}"),
        }
    }
    for b in v["bad_sets"].as_array().unwrap() {
        let err = SignerSet::parse_json(b["set"].to_string().as_bytes()).unwrap_err();
        assert!(err.contains(s(b, "error")), "{}: {err}", s(b, "name"));
    }
}

/// A server whose genesis signer set is the vectors' 2-of-3 (one key of each algorithm).
fn vector_server(v: &serde_json::Value) -> TestServer {
    let mut tables = String::new();
    for k in v["set"]["keys"].as_array().unwrap() {
        tables.push_str(&format!(
            "[[signers.keys]]\nkeyid = {:?}\nalg = {:?}\npublic_key = {:?}\n",
            s(k, "keyid"),
            s(k, "alg"),
            s(k, "public_key")
        ));
    }
    TestServer::start(Setup {
        threshold: 2,
        signers: Vec::new(),
        tables,
        ..Setup::default()
    })
}

fn approve_one(srv: &TestServer, id: &str, keyid: &str, sig: &str) -> ClientResponse {
    srv.post(
        "/approve",
        &serde_json::to_vec(&j!({"proposal_id": id, "signatures": [{"keyid": keyid, "sig": sig}]}))
            .unwrap(),
    )
}

#[test]
fn the_server_accepts_the_vectors_and_refuses_each_tampered_variant_uncounted() {
    let v = vectors();
    let srv = vector_server(&v);
    let g = json(&srv.get("/registry/0"));
    assert_eq!(g["hash"], v["genesis_v2_hash"], "genesis v2 of the PQ set");
    let signers = json(&srv.get("/registry/signers"));
    assert_eq!(signers["signers_digest"], v["set"]["signers_digest"]);

    let payload = payload(&v);
    let r = srv.post("/propose", &payload);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = s(&v["proposal"], "proposal_id");
    assert_eq!(json(&r)["proposal_id"], id);

    for t in v["tampered"].as_array().unwrap() {
        let r = approve_one(&srv, id, s(t, "keyid"), s(t, "sig"));
        assert_eq!(
            u64::from(r.status),
            t["status"].as_u64().unwrap(),
            "{}: {}",
            s(t, "name"),
            r.text()
        );
        let view = json(&srv.get(&format!("/proposals/{id}")));
        assert_eq!(view["approvals"], j!([]), "{} was counted", s(t, "name"));
    }
    // One valid approval is not a quorum: 412.
    let approvals = v["proposal"]["approvals"].as_array().unwrap();
    let by = |keyid: &str| approvals.iter().find(|a| a["keyid"] == keyid).unwrap();
    let r = approve_one(&srv, id, "pq", s(by("pq"), "sig"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["approvals"], 1);
    let commit = format!(r#"{{"proposal_id":"{id}"}}"#);
    assert_eq!(srv.post("/commit", commit.as_bytes()).status, 412);
    let r = approve_one(&srv, id, "hy", s(by("hy"), "sig"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["approvals"], 2);
    let r = srv.post("/commit", commit.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    // The server's hash is the one computed independently in Python.
    assert_eq!(json(&r)["hash"], v["proposal"]["commit"]["hash"]);
    let rec = json(&srv.get("/registry/1"));
    // The record is a DSSE envelope whose signatures are the stored forms.
    assert_eq!(
        rec["envelope"]["signatures"],
        v["proposal"]["commit"]["signatures"]
    );

    // Verify cost is measured per algorithm (both halves of a hybrid in its own series).
    for alg in ["ml-dsa-65", "ed25519+ml-dsa-65"] {
        let count = srv.metric(&format!("approval_verify_seconds_count{{alg=\"{alg}\"}}"));
        assert!(count >= 1.0, "{alg}: {count}");
    }
    // The offline audit walks it, anchored at the genesis hash.
    let (ok, out, err) = srv.ronctl(&[
        "registry",
        "verify",
        "--genesis-hash",
        s(&v, "genesis_v2_hash"),
    ]);
    assert!(ok, "{out}{err}");
    // Restart: recovery and the pending/commit paths read the PQ record back.
    let srv = srv.restart_killed();
    assert_eq!(srv.head()["hash"], v["proposal"]["commit"]["hash"]);

    // Bad signer sets are 400 in a set_signers, naming the problem.
    for b in v["bad_sets"].as_array().unwrap() {
        let mut op = b["set"].clone();
        op["op"] = "set_signers".into();
        let p = serde_json::to_vec(
            &j!({"registry_id": "test-registry", "base_version": 1, "ops": [op]}),
        )
        .unwrap();
        let r = srv.post("/propose", &p);
        assert_eq!(r.status, 400, "{}: {}", s(b, "name"), r.text());
        assert!(
            r.text().contains(s(b, "error")),
            "{}: {}",
            s(b, "name"),
            r.text()
        );
    }
}

/// The committed vectors are what the generator writes today: re-run it (dilithium-py and
/// cryptography needed) and compare byte for byte.
#[test]
fn the_generator_reproduces_the_committed_vectors() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import dilithium_py.ml_dsa, cryptography"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip_notice(
            "the_generator_reproduces_the_committed_vectors",
            "python3 with dilithium-py and cryptography is not installed (pip install dilithium-py cryptography)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pq.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/pq_vectors.py");
    let run = std::process::Command::new("python3")
        .arg(script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::read(&out).unwrap() == include_bytes!("vectors/pq.json"),
        "tests/vectors/pq.json differs from what tests/vectors/pq_vectors.py writes now"
    );
}
