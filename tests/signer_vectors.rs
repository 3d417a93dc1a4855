//! The Rust domain reproduces the independently produced signer-set vectors in
//! tests/vectors/signers.json byte for byte (tests/vectors/signers_vectors.py made them with
//! Python's hashlib and pyca/cryptography, following docs/FORMATS.md): SS, signers_digest,
//! the JSON form, genesis v2, and a set_signers proposal's id, PAE, signatures, S and hash.

use svc_registry::domain::proposal::{self, ProposalLimits};
use svc_registry::domain::quorum::{self, Approval};
use svc_registry::domain::signers::{self, SignerSet, SignerSetJson};
use svc_registry::domain::{chain, dsse, sha256_hex};

fn vectors() -> serde_json::Value {
    serde_json::from_str(include_str!("vectors/signers.json")).unwrap()
}

fn str_of<'a>(v: &'a serde_json::Value, field: &str) -> &'a str {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Check one signer-set vector and return the set.
fn check_set(v: &serde_json::Value) -> SignerSet {
    let name = str_of(v, "name");
    let set = SignerSet::parse_json(v["input"].to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        String::from_utf8(set.canonical_bytes()).unwrap(),
        str_of(v, "ss"),
        "{name}: SS"
    );
    assert_eq!(set.digest(), str_of(v, "signers_digest"), "{name}");
    assert_eq!(signers::signers_digest(&set), set.digest());
    let want: SignerSetJson = serde_json::from_value(v["json_form"].clone()).unwrap();
    assert_eq!(set.to_json_form(), want, "{name}: JSON form");
    // Absent times are null in the JSON form, not missing.
    assert_eq!(
        serde_json::to_value(set.to_json_form()).unwrap(),
        v["json_form"],
        "{name}: JSON form as JSON"
    );
    // The JSON form reads back as the same set.
    let again = SignerSet::parse_json(&serde_json::to_vec(&set.to_json_form()).unwrap()).unwrap();
    assert_eq!(again.canonical_bytes(), set.canonical_bytes(), "{name}");
    set
}

#[test]
fn signer_sets_and_genesis_v2_match_the_vectors() {
    let v = vectors();
    let sets: Vec<SignerSet> = v["sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(check_set)
        .collect();
    assert_eq!(sets.len(), 2);
    assert_ne!(sets[0].digest(), sets[1].digest(), "windows are in SS");
    let registry_id = str_of(&v, "registry_id");
    assert_eq!(
        str_of(&v["genesis_v2"], "signers"),
        str_of(&v["sets"][0], "name")
    );
    assert_eq!(
        chain::genesis_hash_v2(registry_id, &sets[0].digest()),
        str_of(&v["genesis_v2"], "hash")
    );
}

#[test]
fn a_set_signers_rotation_matches_the_vectors() {
    let v = vectors();
    let registry_id = str_of(&v, "registry_id");
    assert_eq!(str_of(&v, "payload_type"), dsse::PAYLOAD_TYPE);
    let keys: Vec<(String, ed25519_dalek::SigningKey)> = v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let seed: [u8; 32] = hex::decode(str_of(k, "seed_hex"))
                .unwrap()
                .try_into()
                .unwrap();
            let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
            assert_eq!(
                hex::encode(sk.verifying_key().as_bytes()),
                str_of(k, "public_key")
            );
            (str_of(k, "keyid").to_string(), sk)
        })
        .collect();
    let in_force = check_set(&v["sets"][0]);
    let x = &v["set_signers"];

    let payload = dsse::unb64(str_of(x, "payload_b64")).unwrap();
    let pae = dsse::pae(&payload);
    assert_eq!(pae, dsse::unb64(str_of(x, "pae_b64")).unwrap());
    assert_eq!(sha256_hex(&payload), str_of(x, "proposal_id"));
    let limits = ProposalLimits {
        max_ops: 16,
        max_descriptor_bytes: 1 << 16,
    };
    let parsed = proposal::parse(&payload, registry_id, &limits).unwrap();
    assert_eq!(parsed.base_version, x["base_version"].as_u64().unwrap());
    let new = parsed.new_signers().expect("a set_signers proposal");
    let expected_new = check_set(&x["new_set"]);
    assert_eq!(new.canonical_bytes(), expected_new.canonical_bytes());

    let approvals: Vec<Approval> = x["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let keyid = str_of(a, "keyid");
            let sk = &keys.iter().find(|(k, _)| k == keyid).unwrap().1;
            let sig = signers::sign_payload(sk, &payload);
            assert_eq!(
                dsse::encode_sig(&sig),
                str_of(a, "sig"),
                "{keyid}: same bytes"
            );
            let public = hex::decode(str_of(a, "public_key")).unwrap();
            Approval {
                keyid: keyid.to_string(),
                verified: signers::verify_strict(&sk.verifying_key(), &sig, &pae),
                public_key: public,
                sig: dsse::encode_sig(&sig),
                // Inside every window of the vector's keys except erin's, who does not sign.
                at_unix: 1_780_000_000,
            }
        })
        .collect();
    let q = quorum::count(&in_force, Some(new), &approvals);
    assert!(q.met(), "{:?}", q.shortfall_message());
    assert_eq!(
        q.in_force.counted as u64,
        x["counted_in_force"].as_u64().unwrap()
    );
    assert_eq!(
        q.new.unwrap().counted as u64,
        x["counted_new"].as_u64().unwrap()
    );
    let want: Vec<(String, String)> = x["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (str_of(s, "keyid").to_string(), str_of(s, "sig").to_string()))
        .collect();
    assert_eq!(
        q.signatures, want,
        "S: every counted signature, sorted by keyid"
    );

    let genesis = chain::genesis_hash_v2(registry_id, &in_force.digest());
    assert_eq!(str_of(x, "prev_hash"), genesis);
    let version = x["version"].as_u64().unwrap();
    assert_eq!(
        chain::commit_hash(
            registry_id,
            version,
            &genesis,
            str_of(x, "proposal_id"),
            &q.signatures
        ),
        str_of(x, "hash")
    );
}
