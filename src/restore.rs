//! Rebuilding state at start-up from a checkpoint and the log's records.
//!
//! Decision: start-up re-verifies the **whole chain** (every record's hash link and proposal id),
//! because history is kept in memory anyway and the check costs two SHA-256s per record; ops are
//! re-applied only after the checkpoint. Signatures are not re-verified at start-up (they were
//! verified before the commit was acknowledged, and are covered by the hash chain); the full
//! offline check including every quorum signature is `ronctl registry verify`.
//!
//! The log starts with the genesis record (docs/FORMATS.md, genesis v2: it carries the initial signer
//! set, fixed into `hash_0`); a log that starts at version 1 was made with genesis v1 and is
//! refused, never reinterpreted. The signer history (which set judges which base version) comes
//! from the checkpoint when it carries one, else from the genesis record and every
//! `set_signers` record of the log.
//!
//! Pending frames (durable proposals and approvals, `domain::pending`) are set aside and
//! returned for the writer; they never touch the chain.
//!
//! Pure: takes bytes, returns a snapshot or an error naming where the problem is.

use crate::domain::descriptor::{Descriptor, Kind};
use crate::domain::pending::{self, PendingFrame, PendingFrames, RestoredPending};
use crate::domain::proposal::{self, ProposalLimits};
use crate::domain::quorum::SignerHistory;
use crate::domain::record::CommitRecord;
use crate::domain::signers::{SignerSet, SignerSetJson};
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
    /// The signer history up to this version (docs/FORMATS.md). Absent in checkpoints written before
    /// §8: restore then rebuilds it from the log.
    #[serde(default)]
    signers: Option<Vec<CheckpointSigners>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointSigners {
    since_version: u64,
    set: SignerSetJson,
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
        signers: Vec<CheckpointSigners>,
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
        signers: snap
            .signers
            .entries()
            .iter()
            .map(|(since_version, set)| CheckpointSigners {
                since_version: *since_version,
                set: set.to_json_form_as_listed(),
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
    /// Pending proposals with their approvals, from the log's pending frames, minus those a
    /// commit record carries (expiry is the writer's to judge: it holds the clock).
    pub pending: Vec<RestoredPending>,
}

/// The refusal for a data directory made before the signer set was on the log (its log starts at version 1: genesis
/// v1 was never written down). Nothing is reinterpreted: the operator decides.
pub fn genesis_v1_refusal(location: &str) -> String {
    format!(
        "{location}: this data directory was created with genesis v1 (before the signer set was \
         fixed into the log, docs/FORMATS.md); this version only opens genesis v2 data directories and \
         does not migrate them. Start a new data directory (the [signers] of the config become \
         its genesis set) and re-submit the registry's content there, or keep running the \
         previous release on this one"
    )
}

/// The genesis record a log starts with (docs/FORMATS.md: genesis v2 carries its signer set), checked
/// against `registry_id`.
pub fn genesis_from_frame<R: Located>(
    registry_id: &str,
    first: &R,
) -> Result<CommitRecord, RestoreError> {
    let rec = CommitRecord::from_json(first.payload()).map_err(|e| {
        RestoreError(format!(
            "{}: the first record is not valid: {}",
            first.location(),
            e.message
        ))
    })?;
    if rec.version != 0 {
        return Err(RestoreError(genesis_v1_refusal(&first.location())));
    }
    if rec.genesis_signers.is_none() {
        return Err(RestoreError(genesis_v1_refusal(&first.location())));
    }
    if !rec.verify_link(registry_id, "") {
        return Err(RestoreError(format!(
            "{}: the genesis record does not belong to registry {registry_id:?} \
             (its hash does not match its registry_id and signer set)",
            first.location()
        )));
    }
    Ok(rec)
}

/// Rebuild the snapshot: `checkpoint` (seq, payload) if any, then every record in order. The
/// first record is the genesis record (version 0).
pub fn restore<R: Located>(
    registry_id: &str,
    checkpoint: Option<(u64, &[u8])>,
    records: &[R],
) -> Result<Restored, RestoreError> {
    let Some((first, records)) = records.split_first() else {
        return Err(RestoreError("the log holds no genesis record".to_string()));
    };
    // Pending frames (proposals and approvals awaiting commit) are set aside; the chain is
    // made of the commit records alone.
    let mut frames = PendingFrames::default();
    let mut commits: Vec<&R> = Vec::with_capacity(records.len());
    for r in records {
        if pending::is_pending_frame(r.payload()) {
            PendingFrame::from_bytes(r.payload())
                .and_then(|f| frames.add(f))
                .map_err(|e| RestoreError(format!("{}: {e}", r.location())))?;
        } else {
            commits.push(r);
        }
    }
    let records = commits;
    let genesis = Arc::new(genesis_from_frame(registry_id, first)?);
    let genesis_set = genesis
        .genesis_signers
        .clone()
        .expect("genesis_from_frame checked it");
    let mut signers = SignerHistory::genesis(genesis_set.clone());
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
    // The checkpoint's signer history, when it carries one (older checkpoints do not: then
    // the history is rebuilt from the log's set_signers records like everything after it).
    let cp_signers = match cp.as_ref().and_then(|c| c.signers.as_ref()) {
        Some(entries) => Some(checkpoint_history(cp_version, entries, &genesis_set)?),
        None => None,
    };
    let limits = ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    let mut recent = std::collections::VecDeque::new();
    let mut committed_ids = std::collections::HashSet::new();
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
        // Payloads before the checkpoint are parsed only to find signer-set changes, and only
        // when the checkpoint does not carry the signer history.
        if rec.version > cp_version || cp_signers.is_none() {
            let p = proposal::parse(&rec.payload, registry_id, &limits).map_err(|e| {
                RestoreError(format!(
                    "{}: version {} payload: {}",
                    where_(),
                    rec.version,
                    e.message
                ))
            })?;
            if let Some(set) = p.new_signers() {
                signers.record(rec.version, set.clone()).map_err(|e| {
                    RestoreError(format!("{}: version {}: {e}", where_(), rec.version))
                })?;
            }
            if rec.version > cp_version {
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
        }
        let rec = Arc::new(rec);
        committed_ids.insert(rec.proposal_id.clone());
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
            if let Some(h) = &cp_signers {
                signers = h.clone();
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
        snapshot: Snapshot::new(
            registry_id.into(),
            head,
            descriptors,
            history,
            Arc::new(signers),
        ),
        recent_commits: recent.into_iter().collect(),
        from_checkpoint: cp_version,
        pending: frames.live(&|id| committed_ids.contains(id), i64::MIN),
    })
}

/// The signer history a checkpoint carries: it must start with the log's genesis set and hold
/// no set newer than the checkpoint.
fn checkpoint_history(
    cp_version: u64,
    entries: &[CheckpointSigners],
    genesis: &Arc<SignerSet>,
) -> Result<SignerHistory, RestoreError> {
    let fail = |why: String| RestoreError(format!("checkpoint {cp_version}: signers: {why}"));
    let sets = entries
        .iter()
        .map(|e| {
            SignerSet::from_json_form(&e.set)
                .map(|s| (e.since_version, Arc::new(s)))
                .map_err(|err| fail(format!("the set since version {}: {err}", e.since_version)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let history = SignerHistory::from_entries(sets).map_err(|e| fail(e.to_string()))?;
    if history.entries()[0].1 != *genesis {
        return Err(fail("its genesis set is not the log's".to_string()));
    }
    if history.current().0 > cp_version {
        return Err(fail(format!(
            "holds a set from version {}, after the checkpoint",
            history.current().0
        )));
    }
    Ok(history)
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

    fn set(seeds: &[u8], threshold: usize) -> Arc<SignerSet> {
        let keys = seeds
            .iter()
            .map(|&seed| crate::domain::signers::SignerKey {
                keyid: format!("k{seed}"),
                public: ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key(),
                not_before: None,
                not_after: None,
            })
            .collect();
        Arc::new(SignerSet::new(threshold, keys).unwrap())
    }

    /// A chain of `n` commits, each putting one node; returns the records (genesis first) and
    /// the snapshots.
    fn chain_of(n: u64) -> (Vec<Rec>, Vec<Snapshot>) {
        let mut snaps = vec![Snapshot::genesis("r", set(&[1, 2], 1))];
        let mut recs = vec![Rec(snaps[0].head.to_json(), 0)];
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
                genesis_signers: None,
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
        let mut v: serde_json::Value = serde_json::from_slice(&recs[2].0).unwrap();
        v["hash"] = serde_json::json!("0".repeat(64));
        recs[2].0 = serde_json::to_vec(&v).unwrap();
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

    #[test]
    fn a_log_without_a_v2_genesis_is_refused_as_genesis_v1() {
        let (recs, _) = chain_of(2);
        // What a v1 data directory holds: commits from version 1, no genesis record.
        let err = restore("r", None, &recs[1..]).err().unwrap().0;
        assert!(
            err.contains("genesis v1") && err.contains("record #1"),
            "{err}"
        );
        // A genesis record without its signer set is v1 too.
        let mut v: serde_json::Value = serde_json::from_slice(&recs[0].0).unwrap();
        v.as_object_mut().unwrap().remove("signers");
        let mut v1 = chain_of(2).0;
        v1[0].0 = serde_json::to_vec(&v).unwrap();
        assert!(restore("r", None, &v1)
            .err()
            .unwrap()
            .0
            .contains("genesis v1"));
        assert!(restore("r", None, &Vec::<Rec>::new()).is_err());
    }

    /// Genesis, one put, a set_signers, one put: the history comes back from the log alone,
    /// from a checkpoint that carries it, and from an old checkpoint without it.
    #[test]
    fn the_signer_history_is_rebuilt_from_the_log_and_from_checkpoints() {
        let (mut recs, mut snaps) = chain_of(1);
        let new_set = set(&[3, 4, 5], 2);
        let form = serde_json::to_string(&new_set.to_json_form()).unwrap();
        let payload = format!(
            r#"{{"registry_id":"r","base_version":1,"ops":[{{"op":"set_signers",{}}}]}}"#,
            &form[1..form.len() - 1]
        );
        let prev = snaps.last().unwrap();
        let pid = sha256_hex(payload.as_bytes());
        let sigs = vec![("k1".to_string(), "c2ln".to_string())];
        let rec = Arc::new(CommitRecord {
            version: 2,
            hash: chain::commit_hash("r", 2, &prev.head.hash, &pid, &sigs),
            prev_hash: prev.head.hash.clone(),
            committed_at_ms: 2_000,
            proposal_id: pid,
            payload: payload.into_bytes().into(),
            signatures: sigs,
            descriptors: 1,
            genesis_signers: None,
        });
        recs.push(Rec(rec.to_json(), 2));
        let next = prev.next_with(rec, prev.descriptors.clone(), Some(new_set.clone()));
        snaps.push(next);
        let full = restore("r", None, &recs).unwrap();
        let h = &full.snapshot.signers;
        assert_eq!(h.entries().len(), 2);
        assert_eq!(**h.set_at(1), *set(&[1, 2], 1));
        assert_eq!(h.in_force_at(2), (2, &new_set));

        let cp = checkpoint_bytes(&snaps[2]);
        let from_cp = restore("r", Some((2, &cp)), &recs).unwrap();
        assert_eq!(from_cp.snapshot.signers.entries().len(), 2);
        assert_eq!(**from_cp.snapshot.signers.set_at(5), *new_set);

        let mut old: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        old.as_object_mut().unwrap().remove("signers");
        let old = serde_json::to_vec(&old).unwrap();
        let from_old = restore("r", Some((2, &old)), &recs).unwrap();
        assert_eq!(**from_old.snapshot.signers.set_at(2), *new_set);

        // A checkpoint whose genesis set is not the log's is refused.
        let mut bad: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        bad["signers"][0]["set"]["threshold"] = serde_json::json!(2);
        let err = restore("r", Some((2, &serde_json::to_vec(&bad).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("signers"), "{err}");
    }
}
