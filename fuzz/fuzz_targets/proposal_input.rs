//! The `proposal` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/proposal.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Proposal parsing and validation (`domain::proposal::parse`, docs/FORMATS.md) and application of what
//! it accepts (`domain::state::apply`).
//!
//! Checked: no panic; an accepted proposal honours every rule the parser promises (registry id,
//! 1..=max_ops ops, valid kinds and ids, no target twice, put bodies are JSON objects within the
//! size limit, deletes carry no body); applying it to a small state either succeeds with exactly
//! the ops' effect or is a 409 for a delete of an absent descriptor, leaving the state untouched;
//! the exact bytes survive a commit record's JSON round trip (they are what signers sign).

use crate::common;
use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use svc_registry::domain::descriptor::valid_id;
use svc_registry::domain::proposal::{self, Op, ProposalLimits};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::state::{self, Descriptors};
use svc_registry::error::Code;

const LIMITS: ProposalLimits = ProposalLimits {
    max_ops: 8,
    max_descriptor_bytes: 256,
};

fn base() -> &'static Descriptors {
    static BASE: OnceLock<Descriptors> = OnceLock::new();
    BASE.get_or_init(|| {
        let (_, snaps) = common::chain_of(3);
        snaps[3].descriptors.clone()
    })
}

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let p = match proposal::parse(data, common::REGISTRY, &LIMITS) {
        Ok(p) => p,
        Err(e) => {
            assert!(
                matches!(e.code, Code::BadRequest | Code::TooLarge),
                "parse refused with {:?}",
                e.code
            );
            return;
        }
    };
    assert_eq!(p.registry_id, common::REGISTRY);
    if p.new_signers().is_some() {
        // A set_signers op targets no descriptor and is always alone (docs/FORMATS.md).
        assert_eq!(p.ops.len(), 1, "set_signers with other ops");
        return;
    }
    assert!((1..=LIMITS.max_ops).contains(&p.ops.len()));
    let mut targets = HashSet::new();
    for op in &p.ops {
        let (kind, id) = op.target();
        assert!(valid_id(id), "accepted id {id:?}");
        assert!(targets.insert((kind, id.clone())), "a target twice");
        if let Op::Put { body, .. } = op {
            assert!(body.get().len() <= LIMITS.max_descriptor_bytes);
            let v: serde_json::Value =
                serde_json::from_str(body.get()).expect("an accepted body is JSON");
            assert!(
                v.is_object(),
                "an accepted body is not an object: {}",
                body.get()
            );
        }
    }

    let before = base();
    let version = 4;
    match state::apply(before, &p.ops, version) {
        Ok(after) => {
            let mut expect = before.len() as i64;
            for op in &p.ops {
                let (kind, id) = op.target();
                match op {
                    Op::Put { body, .. } => {
                        let d = after.get(kind, id).expect("a put descriptor is there");
                        assert_eq!(d.version(), version);
                        assert_eq!(d.body(), body.get());
                        expect += i64::from(!before.contains(kind, id));
                    }
                    Op::Delete { .. } => {
                        assert!(
                            after.get(kind, id).is_none(),
                            "a deleted descriptor is there"
                        );
                        assert!(before.contains(kind, id), "deleted an absent descriptor");
                        expect -= 1;
                    }
                    Op::SetSigners { .. } => unreachable!("returned above"),
                }
            }
            assert_eq!(after.len() as i64, expect);
        }
        Err(e) => {
            assert_eq!(e.code, Code::Conflict);
            assert!(
                p.ops.iter().any(|op| matches!(op, Op::Delete { kind, id }
                    if !before.contains(*kind, id))),
                "a conflict without a delete of an absent descriptor"
            );
        }
    }

    // The exact bytes are what gets signed and hashed: a record keeps them byte for byte.
    let rec = CommitRecord {
        version: 1,
        hash: "0".repeat(64),
        prev_hash: "0".repeat(64),
        committed_at_ms: 0,
        proposal_id: svc_registry::domain::sha256_hex(data),
        payload: Arc::from(data),
        signatures: Vec::new(),
        descriptors: 0,
        genesis_signers: None,
    };
    let back = CommitRecord::from_json(&rec.to_json()).expect("a record of it decodes");
    assert_eq!(&*back.payload, data);
}
