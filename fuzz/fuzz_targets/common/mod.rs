//! Helpers shared by the fuzz targets: a small valid chain of commit records.
#![allow(dead_code)]

use std::sync::Arc;
use svc_registry::domain::proposal::{self, ProposalLimits};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::signers::{SignerKey, SignerSet};
use svc_registry::domain::{chain, sha256_hex, state};
use svc_registry::restore::Located;
use svc_registry::snapshot::Snapshot;

pub const REGISTRY: &str = "fuzz";

/// A record payload with a name for error messages.
pub struct Rec(pub Vec<u8>);

impl Located for Rec {
    fn location(&self) -> String {
        "fuzz".to_string()
    }
    fn payload(&self) -> &[u8] {
        &self.0
    }
}

/// The proposal of version `v` (1-based) of the fixed chain: puts, one delete at version 4.
pub fn proposal_bytes(v: u64) -> Vec<u8> {
    let ops = match v {
        4 => r#"[{"op":"delete","kind":"node","id":"n1"},{"op":"put","kind":"region","id":"eu-1","body":{"zone":"a"}}]"#.to_string(),
        _ => format!(r#"[{{"op":"put","kind":"node","id":"n{v}","body":{{"addr":"10.0.0.{v}:9000"}}}},{{"op":"put","kind":"service","id":"s{v}","body":{{}}}}]"#),
    };
    format!(
        r#"{{"registry_id":"{REGISTRY}","base_version":{},"ops":{ops},"note":"v{v}"}}"#,
        v - 1
    )
    .into_bytes()
}

/// The genesis signer set of the fixed chain (genesis v2 commits to it).
pub fn genesis_set() -> Arc<SignerSet> {
    let key = |seed: u8, keyid: &str| SignerKey {
        keyid: keyid.to_string(),
        public: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .into(),
        not_before: None,
        not_after: None,
    };
    Arc::new(SignerSet::new(2, vec![key(1, "a"), key(2, "b")]).expect("a valid set"))
}

/// The fixed chain of `n` commits: record JSON as stored in the log (the genesis record first,
/// then versions 1..=n) and every snapshot (index = version).
pub fn chain_of(n: u64) -> (Vec<Rec>, Vec<Snapshot>) {
    let limits = ProposalLimits {
        max_ops: 16,
        max_descriptor_bytes: 1024,
    };
    let mut snaps = vec![Snapshot::genesis(REGISTRY, genesis_set())];
    let mut recs = vec![Rec(snaps[0].head.to_json())];
    let mut end = 0u64;
    for v in 1..=n {
        let prev = snaps.last().expect("genesis");
        let payload = proposal_bytes(v);
        let p = proposal::parse(&payload, REGISTRY, &limits).expect("the fixed chain parses");
        let descriptors = state::apply(&prev.descriptors, &p.ops, v).expect("and applies");
        let pid = sha256_hex(&payload);
        let sigs = vec![
            ("a".to_string(), "c2lnLWE=".to_string()),
            ("b".to_string(), "c2lnLWI=".to_string()),
        ];
        let rec = Arc::new(CommitRecord {
            version: v,
            hash: chain::commit_hash(REGISTRY, v, &prev.head.hash, &pid, &sigs),
            prev_hash: prev.head.hash.clone(),
            committed_at_ms: 1_767_225_600_000 + v as i64,
            proposal_id: pid,
            payload: payload.into(),
            signatures: sigs,
            descriptors: descriptors.len() as u64,
            genesis_signers: None,
        });
        let json = rec.to_json();
        // Where `restore` lays the commit records out in its in-memory journal (genesis is
        // not in it): one after the other from 0.
        end += json.len() as u64;
        let loc = svc_registry::history::Loc {
            end,
            len: json.len() as u32,
        };
        recs.push(Rec(json));
        let next = prev.next(rec, descriptors, loc);
        snaps.push(next);
    }
    (recs, snaps)
}

/// Descriptors of a snapshot as comparable JSON lines.
pub fn descriptor_lines(s: &Snapshot) -> Vec<Vec<u8>> {
    s.descriptors.values().map(|d| d.to_json()).collect()
}
