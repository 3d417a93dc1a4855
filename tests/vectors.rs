//! The Rust code reproduces the independently produced vectors in tests/vectors/ byte for byte
//! (see tests/vectors/make_vectors.py for the command that produced them).

mod common;
use common::vector_signers;
use svc_registry::domain::{chain, dsse, sha256_hex, signers};

#[test]
fn pae_proposal_id_signatures_and_chain_match_the_vectors() {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("vectors/dsse_chain.json")).unwrap();
    assert_eq!(v["payload_type"], dsse::PAYLOAD_TYPE);
    let registry_id = v["registry_id"].as_str().unwrap();
    assert_eq!(
        chain::genesis_hash(registry_id),
        v["genesis_hash"].as_str().unwrap()
    );
    let keys = vector_signers(&v);
    let mut prev = chain::genesis_hash(registry_id);
    for ver in v["versions"].as_array().unwrap() {
        let payload = dsse::unb64(ver["payload_b64"].as_str().unwrap()).unwrap();
        assert_eq!(
            dsse::pae(&payload),
            dsse::unb64(ver["pae_b64"].as_str().unwrap()).unwrap()
        );
        assert_eq!(sha256_hex(&payload), ver["proposal_id"].as_str().unwrap());
        let mut sigs = Vec::new();
        for (x, k) in ver["signatures"].as_array().unwrap().iter().zip(&keys) {
            let (keyid, sk) = (&k.keyid, &k.key);
            assert_eq!(x["keyid"].as_str().unwrap(), keyid);
            let ours = dsse::encode_sig(&signers::sign_payload(sk, &payload));
            assert_eq!(
                ours,
                x["sig"].as_str().unwrap(),
                "ed25519 is deterministic: same bytes"
            );
            assert!(signers::verify_strict(
                &sk.verifying_key(),
                &dsse::decode_sig(&ours).unwrap(),
                &dsse::pae(&payload)
            ));
            sigs.push((keyid.clone(), ours));
        }
        assert_eq!(ver["prev_hash"].as_str().unwrap(), prev);
        let version = ver["version"].as_u64().unwrap();
        let h = chain::commit_hash(
            registry_id,
            version,
            &prev,
            ver["proposal_id"].as_str().unwrap(),
            &sigs,
        );
        assert_eq!(h, ver["hash"].as_str().unwrap());
        prev = h;
    }
}
