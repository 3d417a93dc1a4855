//! Rebuilding state at start-up from a checkpoint and the log's records.
//!
//! Decision: start-up re-verifies the **whole chain** (every record's hash link and proposal id),
//! because history is kept in memory anyway and the check costs two SHA-256s per record; ops are
//! re-applied only after the checkpoint. Signatures are not re-verified at start-up (they were
//! verified before the commit was acknowledged, and are covered by the hash chain); the full
//! offline check including every quorum signature is `ronctl registry verify`.
//!
//! Pure: takes bytes, returns a snapshot or an error naming where the problem is.

use crate::domain::descriptor::{Descriptor, Kind};
use crate::domain::proposal::{self, ProposalLimits};
use crate::domain::record::CommitRecord;
use crate::domain::state::{self, Descriptors};
use crate::snapshot::Snapshot;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// Where a record came from, for error messages.
pub trait Located {
    fn location(&self) -> String;
    fn payload(&self) -> &[u8];
}

#[derive(Debug)]
pub struct RestoreError(pub String);

impl std::fmt::Display for RestoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointJson {
    registry_id: String,
    version: u64,
    hash: String,
    descriptors: Vec<CheckpointDescriptor>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointDescriptor {
    kind: Kind,
    id: String,
    version: u64,
    body: Box<RawValue>,
}

/// Serialize a snapshot's state as a checkpoint payload.
pub fn checkpoint_bytes(snap: &Snapshot) -> Vec<u8> {
    #[derive(Serialize)]
    struct Out<'a> {
        registry_id: &'a str,
        version: u64,
        hash: &'a str,
        descriptors: Vec<DOut<'a>>,
    }
    #[derive(Serialize)]
    struct DOut<'a> {
        kind: Kind,
        id: &'a str,
        version: u64,
        body: &'a RawValue,
    }
    let out = Out {
        registry_id: &snap.registry_id,
        version: snap.version(),
        hash: &snap.head.hash,
        descriptors: snap
            .descriptors
            .values()
            .map(|d| DOut {
                kind: d.kind,
                id: &d.id,
                version: d.version,
                body: &d.body,
            })
            .collect(),
    };
    serde_json::to_vec(&out).expect("a snapshot serializes")
}

/// What a restore produced.
pub struct Restored {
    pub snapshot: Snapshot,
    /// (proposal_id, version) of the most recent commits, oldest first.
    pub recent_commits: Vec<(String, u64)>,
    /// The checkpoint version used (0 = none).
    pub from_checkpoint: u64,
}

/// Rebuild the snapshot: `checkpoint` (seq, payload) if any, then every record in order.
pub fn restore<R: Located>(
    registry_id: &str,
    checkpoint: Option<(u64, &[u8])>,
    records: &[R],
) -> Result<Restored, RestoreError> {
    let genesis = Arc::new(CommitRecord::genesis(registry_id));
    let mut history = imbl::Vector::new();
    history.push_back(genesis.clone());
    let mut head = genesis;
    let mut descriptors = Descriptors::new();

    let cp = match checkpoint {
        Some((seq, bytes)) => {
            let cp: CheckpointJson = serde_json::from_slice(bytes)
                .map_err(|e| RestoreError(format!("checkpoint {seq}: not valid: {e}")))?;
            if cp.registry_id != registry_id || cp.version != seq {
                return Err(RestoreError(format!(
                    "checkpoint {seq}: belongs to {:?} version {}, not {registry_id:?} version {seq}",
                    cp.registry_id, cp.version
                )));
            }
            Some(cp)
        }
        None => None,
    };
    let cp_version = cp.as_ref().map_or(0, |c| c.version);
    if cp_version > records.len() as u64 {
        return Err(RestoreError(format!(
            "checkpoint is at version {cp_version} but the log holds only {} records",
            records.len()
        )));
    }
    let limits = ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    let mut recent = std::collections::VecDeque::new();
    for (i, r) in records.iter().enumerate() {
        let where_ = || r.location();
        let rec = CommitRecord::from_json(r.payload()).map_err(|e| {
            RestoreError(format!("{}: record is not valid: {}", where_(), e.message))
        })?;
        let expect = i as u64 + 1;
        if rec.version != expect {
            return Err(RestoreError(format!(
                "{}: expected version {expect}, found {}",
                where_(),
                rec.version
            )));
        }
        if !rec.verify_link(registry_id, &head.hash) {
            return Err(RestoreError(format!(
                "{}: broken hash chain at version {}",
                where_(),
                rec.version
            )));
        }
        if rec.version > cp_version {
            let p = proposal::parse(&rec.payload, registry_id, &limits).map_err(|e| {
                RestoreError(format!(
                    "{}: version {} payload: {}",
                    where_(),
                    rec.version,
                    e.message
                ))
            })?;
            if p.new_signers().is_some() {
                return Err(RestoreError(format!(
                    "{}: version {} is a set_signers, which is not supported yet",
                    where_(),
                    rec.version
                )));
            }
            descriptors = state::apply(&descriptors, &p.ops, rec.version).map_err(|e| {
                RestoreError(format!(
                    "{}: version {} does not apply: {}",
                    where_(),
                    rec.version,
                    e.message
                ))
            })?;
            if rec.descriptors != descriptors.len() as u64 {
                return Err(RestoreError(format!(
                    "{}: version {} says {} descriptors, replay gives {}",
                    where_(),
                    rec.version,
                    rec.descriptors,
                    descriptors.len()
                )));
            }
        }
        let rec = Arc::new(rec);
        recent.push_back((rec.proposal_id.clone(), rec.version));
        if recent.len() > 16_384 {
            recent.pop_front();
        }
        history.push_back(rec.clone());
        head = rec;
        if head.version == cp_version {
            let cp = cp.as_ref().expect("cp_version > 0 only with a checkpoint");
            if cp.hash != head.hash {
                return Err(RestoreError(format!(
                    "checkpoint {cp_version}: its hash does not match the log's record {cp_version}"
                )));
            }
            for d in &cp.descriptors {
                let id: Arc<str> = d.id.as_str().into();
                descriptors.insert(
                    (d.kind, id.clone()),
                    Arc::new(Descriptor {
                        kind: d.kind,
                        id,
                        version: d.version,
                        body: Arc::from(d.body.clone()),
                    }),
                );
            }
            if head.descriptors != descriptors.len() as u64 {
                return Err(RestoreError(format!(
                    "checkpoint {cp_version}: holds {} descriptors, the record says {}",
                    descriptors.len(),
                    head.descriptors
                )));
            }
        }
    }
    Ok(Restored {
        snapshot: Snapshot::new(registry_id.into(), head, descriptors, history),
        recent_commits: recent.into_iter().collect(),
        from_checkpoint: cp_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{chain, sha256_hex};

    struct Rec(Vec<u8>, usize);
    impl Located for Rec {
        fn location(&self) -> String {
            format!("record #{}", self.1)
        }
        fn payload(&self) -> &[u8] {
            &self.0
        }
    }

    /// A chain of `n` commits, each putting one node; returns the records and the snapshots.
    fn chain_of(n: u64) -> (Vec<Rec>, Vec<Snapshot>) {
        let mut snaps = vec![Snapshot::genesis("r")];
        let mut recs = Vec::new();
        for v in 1..=n {
            let prev = snaps.last().unwrap();
            let payload = format!(
                r#"{{"registry_id":"r","base_version":{},"ops":[{{"op":"put","kind":"node","id":"n{v}","body":{{"v":{v}}}}}]}}"#,
                v - 1
            );
            let p = proposal::parse(
                payload.as_bytes(),
                "r",
                &ProposalLimits {
                    max_ops: 9,
                    max_descriptor_bytes: 99,
                },
            )
            .unwrap();
            let descriptors = state::apply(&prev.descriptors, &p.ops, v).unwrap();
            let pid = sha256_hex(payload.as_bytes());
            let sigs = vec![("k".to_string(), "c2ln".to_string())];
            let rec = Arc::new(CommitRecord {
                version: v,
                hash: chain::commit_hash("r", v, &prev.head.hash, &pid, &sigs),
                prev_hash: prev.head.hash.clone(),
                committed_at_ms: 1_000 * v as i64,
                proposal_id: pid,
                payload: payload.into_bytes().into(),
                signatures: sigs,
                descriptors: descriptors.len() as u64,
            });
            recs.push(Rec(rec.to_json(), v as usize));
            snaps.push(prev.next(rec, descriptors));
        }
        (recs, snaps)
    }

    #[test]
    fn replay_from_genesis_and_from_a_checkpoint_agree() {
        let (recs, snaps) = chain_of(5);
        let full = restore("r", None, &recs).unwrap();
        assert_eq!(full.snapshot.version(), 5);
        assert_eq!(full.snapshot.head_json, snaps[5].head_json);
        assert_eq!(full.snapshot.descriptors.len(), 5);
        let cp = checkpoint_bytes(&snaps[3]);
        let from_cp = restore("r", Some((3, &cp)), &recs).unwrap();
        assert_eq!(from_cp.from_checkpoint, 3);
        assert_eq!(from_cp.snapshot.head_json, full.snapshot.head_json);
        let a: Vec<Vec<u8>> = full
            .snapshot
            .descriptors
            .values()
            .map(|d| d.to_json())
            .collect();
        let b: Vec<Vec<u8>> = from_cp
            .snapshot
            .descriptors
            .values()
            .map(|d| d.to_json())
            .collect();
        assert_eq!(a, b);
        assert_eq!(full.recent_commits.len(), 5);
    }

    #[test]
    fn a_broken_chain_or_a_foreign_checkpoint_refuses_with_its_location() {
        let (mut recs, snaps) = chain_of(3);
        let mut v: serde_json::Value = serde_json::from_slice(&recs[1].0).unwrap();
        v["hash"] = serde_json::json!("0".repeat(64));
        recs[1].0 = serde_json::to_vec(&v).unwrap();
        let err = restore("r", None, &recs).err().unwrap().0;
        assert!(
            err.contains("record #2") && err.contains("broken hash chain"),
            "{err}"
        );

        let (recs, _) = chain_of(3);
        let cp = checkpoint_bytes(&snaps[2]);
        let foreign = String::from_utf8(cp.clone())
            .unwrap()
            .replace("\"registry_id\":\"r\"", "\"registry_id\":\"x\"");
        assert!(restore("r", Some((2, foreign.as_bytes())), &recs).is_err());
        assert!(restore("r", Some((7, &cp)), &recs).is_err());
        let mut v: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        v["hash"] = serde_json::json!("f".repeat(64));
        let err = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("does not match"), "{err}");
        assert!(restore("other", None, &recs).is_err());
    }
}
