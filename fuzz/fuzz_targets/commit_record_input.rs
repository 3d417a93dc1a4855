//! The `commit_record` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/commit_record.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Commit record decoding: the JSON payload of every log frame and of `/registry/log` pages
//! (`CommitRecord::from_json`), which restore and `ronctl registry verify` trust for shape.
//!
//! Checked: no panic; a record that decodes encodes back to JSON that decodes to the same record
//! (the stored form is stable), its hash link check does not panic, and the offline auditor
//! (`verify_chain`) handles it after genesis without panicking.

use svc_registry::domain::audit::verify_chain;
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::signers::{SignerKey, SignerSet};

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let Ok(rec) = CommitRecord::from_json(data) else {
        return;
    };
    let json = rec.to_json();
    let back = CommitRecord::from_json(&json).expect("an encoded record decodes");
    // committed_at is re-rendered with millisecond precision: compare after one round trip.
    let again = CommitRecord::from_json(&back.to_json()).expect("and again");
    assert_eq!(back, again, "the stored form is not stable");
    assert_eq!(
        back.payload, rec.payload,
        "payload bytes changed in a round trip"
    );
    assert_eq!(back.signatures, rec.signatures);
    assert_eq!(back.hash, rec.hash);
    let key = ed25519_key();
    let set = SignerSet::new(1, vec![key]).expect("one key");
    let genesis = CommitRecord::genesis("r", std::sync::Arc::new(set.clone()));
    let _ = rec.verify_link("r", &genesis.hash);
    let _ = rec.head_json();
    let _ = verify_chain("r", &[genesis, rec], &set);
}

fn ed25519_key() -> SignerKey {
    // The public key of the all-sevens seed (a valid, not small-order point).
    let public = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
    SignerKey {
        keyid: "a".into(),
        public: public.into(),
        not_before: None,
        not_after: None,
    }
}
