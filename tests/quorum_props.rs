//! Property: a commit succeeds iff M distinct configured keys, valid now, signed the exact PAE
//! of the proposal — whatever mix of duplicates, unknown keys, wrong bytes, expired keys and
//! replays from another registry the approvals contain. Checked through HTTP on one server.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use proptest::prelude::*;
use serde_json::json as j;

/// How one approval attempt is made.
#[derive(Clone, Debug)]
enum Attempt {
    /// Signer i (0..4; 3 is not configured) signs the exact payload.
    Good(usize),
    /// Signer i signs the payload bytes without the PAE.
    RawPayload(usize),
    /// Signer i signs the same proposal for another registry_id (replay).
    OtherRegistry(usize),
    /// Signer i's signature is sent under signer k's keyid.
    WrongKeyid(usize, usize),
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![
        4 => (0usize..4).prop_map(Attempt::Good),
        1 => (0usize..3).prop_map(Attempt::RawPayload),
        1 => (0usize..3).prop_map(Attempt::OtherRegistry),
        1 => (0usize..3, 0usize..3).prop_map(|(a, b)| Attempt::WrongKeyid(a, b)),
    ]
}

#[test]
fn commit_succeeds_iff_threshold_distinct_valid_keys_signed_the_pae() {
    let s = TestServer::start(Setup::default());
    let outsider = Signer::new("outsider", 9);
    let signers: Vec<&Signer> = s.setup.signers.iter().chain([&outsider]).collect();
    let head = std::cell::Cell::new(0u64);
    let case = std::cell::Cell::new(0u32);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    runner
        .run(&proptest::collection::vec(attempt(), 0..7), |attempts| {
            case.set(case.get() + 1);
            let (case, base) = (case.get(), head.get());
            let payload = serde_json::to_vec(&j!({
                "registry_id": "test-registry", "base_version": base,
                "ops": [put("node", &format!("case-{case}"), j!({}))],
            }))
            .unwrap();
            let r = s.post("/propose", &payload);
            prop_assert_eq!(r.status, 202);
            let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
            let mut model = std::collections::BTreeSet::new();
            for a in &attempts {
                let (keyid, sig, counts) = match *a {
                    Attempt::Good(i) => {
                        (signers[i].keyid.clone(), signers[i].sign(&payload), i < 3)
                    }
                    Attempt::RawPayload(i) => {
                        use ed25519_dalek::Signer as _;
                        let sig = signers[i].key.sign(&payload).to_bytes();
                        (
                            signers[i].keyid.clone(),
                            svc_registry::domain::dsse::encode_sig(&sig),
                            false,
                        )
                    }
                    Attempt::OtherRegistry(i) => {
                        let other = String::from_utf8(payload.clone())
                            .unwrap()
                            .replace("test-registry", "evil-registry");
                        (
                            signers[i].keyid.clone(),
                            signers[i].sign(other.as_bytes()),
                            false,
                        )
                    }
                    Attempt::WrongKeyid(i, k) => {
                        (signers[k].keyid.clone(), signers[i].sign(&payload), i == k)
                    }
                };
                let r = s.post(
                    "/approve",
                    &serde_json::to_vec(
                        &j!({"proposal_id": id, "signatures": [{"keyid": keyid, "sig": sig}]}),
                    )
                    .unwrap(),
                );
                if counts {
                    prop_assert_eq!(r.status, 200, "{:?}: {}", a, r.text());
                    model.insert(keyid);
                } else {
                    prop_assert_eq!(r.status, 403, "{:?}: {}", a, r.text());
                }
            }
            let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
            if model.len() >= 2 {
                prop_assert_eq!(r.status, 200, "{:?}: {}", attempts, r.text());
                head.set(base + 1);
            } else {
                prop_assert_eq!(r.status, 412, "{:?}: {}", attempts, r.text());
            }
            prop_assert_eq!(s.head()["version"].as_u64().unwrap(), head.get());
            Ok(())
        })
        .unwrap();
}

#[test]
fn keys_count_only_inside_their_validity_window() {
    let mut setup = Setup::default();
    setup.threshold = 1;
    setup.signers.truncate(1);
    setup.tables = format!(
        "[[signers.keys]]\nkeyid = \"old\"\npublic_key = \"{}\"\nnot_before = \"2020-01-01T00:00:00Z\"\nnot_after = \"2021-01-01T00:00:00Z\"\n[[signers.keys]]\nkeyid = \"future\"\npublic_key = \"{}\"\nnot_before = \"2999-01-01T00:00:00Z\"\n",
        Signer::new("old", 7).public_hex(),
        Signer::new("future", 8).public_hex()
    );
    let s = TestServer::start(setup);
    let payload = serde_json::to_vec(
        &j!({"registry_id": "test-registry", "base_version": 0, "ops": [put("node", "n", j!({}))]}),
    )
    .unwrap();
    let id = json(&s.post("/propose", &payload))["proposal_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (keyid, seed) in [("old", 7), ("future", 8)] {
        let sig = Signer::new(keyid, seed).sign(&payload);
        let r = s.post(
            "/approve",
            &serde_json::to_vec(
                &j!({"proposal_id": id, "signatures": [{"keyid": keyid, "sig": sig}]}),
            )
            .unwrap(),
        );
        assert_eq!(r.status, 403, "{keyid}: {}", r.text());
        assert!(json(&r)["message"].as_str().unwrap().contains("validity"));
    }
    assert_eq!(
        s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes())
            .status,
        412
    );
    let published = json(&s.get("/registry/signers"));
    assert_eq!(published["keys"][1]["not_after"], "2021-01-01T00:00:00Z");
}
