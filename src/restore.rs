//! Rebuilding state at start-up from a checkpoint and the log's records.
//!
//! Decision: start-up reads and re-verifies only what follows the checkpoint (each record's
//! shape, hash link and proposal id, and its ops re-applied); the checkpoint is tied to the log
//! by its record's hash and the Lsn where the log continues. Re-hashing the whole chain from
//! genesis (two SHA-256s per record, ~2 s per million versions) would make start-up grow with
//! history, so it runs after readiness instead ([`verify_history`], the background check thread),
//! reporting a problem through a metric and `/readyz`. Signatures are not re-verified at start-up
//! (they were verified before the commit was acknowledged, and are covered by the hash chain);
//! the full offline check including every quorum signature is `ronctl registry verify`.
//!
//! Pure over its inputs: reads records through a [`History`], returns a snapshot or an error
//! naming where the problem is.

use crate::domain::descriptor::{Descriptor, Kind};
use crate::domain::proposal::{self, ProposalLimits};
use crate::domain::record::CommitRecord;
use crate::domain::state::{self, Descriptors};
use crate::history::{History, Loc, MemoryStore};
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
    /// Where the log continues after record `version` (the Lsn just past it), so start-up can
    /// check the checkpoint against the log without re-hashing the chain. Absent in checkpoints
    /// written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    log_end: Option<u64>,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        log_end: Option<u64>,
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
        log_end: snap.history.loc(snap.version()).map(|l| l.end),
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

/// The `log_end` a checkpoint payload names (where the log continues after its record), if it
/// has one. Used before restore to decide which records recovery may check by header only;
/// restore then ties the checkpoint to the log (hash and `log_end`) or replays everything, so a
/// wrong answer here costs a full replay, never a wrong state. Read from the fixed-order head of
/// the payload (`checkpoint_bytes` writes `log_end` before the descriptors), so a checkpoint of
/// a million descriptors is not parsed twice.
pub fn checkpoint_log_end(payload: &[u8]) -> Option<u64> {
    let head_end = find(payload, b"\"descriptors\":")?;
    let at = find(&payload[..head_end], b"\"log_end\":")? + b"\"log_end\":".len();
    let digits = payload[at..head_end]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// What a restore produced.
pub struct Restored {
    pub snapshot: Snapshot,
    /// (proposal_id, version) of the most recent commits, oldest first.
    pub recent_commits: Vec<(String, u64)>,
    /// The checkpoint version used (0 = none).
    pub from_checkpoint: u64,
}

/// How many recent proposal ids a restore hands the writer (its "already committed" memory).
const RECENT_COMMITS: u64 = 16_384;

/// Rebuild the snapshot from records held in memory (`ronctl`'s replay of fetched history,
/// tests): they are written to an in-memory journal and restored by [`restore_history`], the
/// same code start-up runs on the log.
pub fn restore<R: Located>(
    registry_id: &str,
    checkpoint: Option<(u64, &[u8])>,
    records: &[R],
) -> Result<Restored, RestoreError> {
    let store =
        Arc::new(MemoryStore::new().map_err(|e| RestoreError(format!("in-memory journal: {e}")))?);
    let mut history = History::new(Arc::new(CommitRecord::genesis(registry_id)), store.clone());
    let mut end = 0u64;
    let mut where_ = Vec::with_capacity(records.len());
    for r in records {
        let payload = r.payload();
        store
            .write_at(end, payload)
            .map_err(|e| RestoreError(format!("in-memory journal: {e}")))?;
        end += payload.len() as u64;
        let len = u32::try_from(payload.len())
            .map_err(|_| RestoreError(format!("{}: record too large", r.location())))?;
        history.push(Loc { end, len });
        where_.push(r.location());
    }
    restore_history(registry_id, checkpoint, history, &|v| {
        where_
            .get(v as usize - 1)
            .cloned()
            .unwrap_or_else(|| format!("version {v}"))
    })
}

/// Rebuild the snapshot over `history` (every record's location, genesis to the log's end).
///
/// With a checkpoint at version C: its record C must be in the history with the checkpoint's
/// hash (and, when the checkpoint says where the log continues, end exactly there); the state is
/// the checkpoint's and only versions after C are read, re-verified (shape, hash link, proposal
/// id) and re-applied. Without one, every version is. Versions up to C are not re-hashed here:
/// the background check (`verify_history`) does that after start-up without holding readiness.
/// `location` names where a version's record is, for error messages.
pub fn restore_history(
    registry_id: &str,
    checkpoint: Option<(u64, &[u8])>,
    history: History,
    location: &dyn Fn(u64) -> String,
) -> Result<Restored, RestoreError> {
    let records = history.len() - 1;
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
    if cp_version > records {
        return Err(RestoreError(format!(
            "checkpoint is at version {cp_version} but the log holds only {records} records"
        )));
    }
    let read = |v: u64| -> Result<CommitRecord, RestoreError> {
        match history.record(v) {
            Ok(Some(rec)) => Ok(rec),
            Ok(None) => Err(RestoreError(format!(
                "{}: version {v} is missing",
                location(v)
            ))),
            Err(e) => Err(RestoreError(format!("{}: {e}", location(v)))),
        }
    };
    let mut descriptors = Descriptors::new();
    let mut head = history.genesis().clone();
    if let Some(cp) = &cp {
        if cp_version > 0 {
            head = Arc::new(read(cp_version)?);
            if cp.hash != head.hash {
                return Err(RestoreError(format!(
                    "checkpoint {cp_version}: its hash does not match the log's record {cp_version}"
                )));
            }
            if let (Some(want), Some(loc)) = (cp.log_end, history.loc(cp_version)) {
                if want != loc.end {
                    return Err(RestoreError(format!(
                        "checkpoint {cp_version}: says the log continues at {want}, but record \
                         {cp_version} ends at {}",
                        loc.end
                    )));
                }
            }
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
    let limits = ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    let recent_from = records.saturating_sub(RECENT_COMMITS - 1).max(1);
    let mut recent = Vec::new();
    // Proposal ids of recent versions the replay below does not read: only the id is parsed
    // (the bytes are still read through the CRC-checking journal reader).
    #[derive(Deserialize)]
    struct IdOnly {
        version: u64,
        proposal_id: Option<String>,
    }
    for v in recent_from..=cp_version {
        let bytes = match history.bytes(v) {
            Ok(Some(b)) => b,
            Ok(None) => {
                return Err(RestoreError(format!(
                    "{}: version {v} is missing",
                    location(v)
                )))
            }
            Err(e) => return Err(RestoreError(format!("{}: {e}", location(v)))),
        };
        let id: IdOnly = serde_json::from_slice(&bytes)
            .map_err(|e| RestoreError(format!("{}: record is not valid: {e}", location(v))))?;
        match id.proposal_id {
            Some(pid) if id.version == v => recent.push((pid, v)),
            _ => {
                return Err(RestoreError(format!(
                    "{}: expected version {v} with a proposal id, found version {}",
                    location(v),
                    id.version
                )))
            }
        }
    }
    for v in cp_version + 1..=records {
        let rec = read(v)?;
        let where_ = || location(v);
        if !rec.verify_link(registry_id, &head.hash) {
            return Err(RestoreError(format!(
                "{}: broken hash chain at version {}",
                where_(),
                rec.version
            )));
        }
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
        if v >= recent_from {
            recent.push((rec.proposal_id.clone(), v));
        }
        head = Arc::new(rec);
    }
    Ok(Restored {
        snapshot: Snapshot::new(registry_id.into(), head, descriptors, history),
        recent_commits: recent,
        from_checkpoint: cp_version,
    })
}

/// The full check of a restored history, from genesis: every record's shape, version, hash
/// link and proposal id, ending at `head_hash`. Start-up skips this for versions a checkpoint
/// covers; the background check thread runs it after readiness (and `ronctl registry verify`
/// does more: signatures too). Returns the first problem found.
pub fn verify_history(
    registry_id: &str,
    history: &History,
    head_hash: &str,
) -> Result<u64, String> {
    let mut prev = history.genesis().hash.clone();
    let last = history.len() - 1;
    for v in 1..=last {
        let rec = history
            .record(v)?
            .ok_or_else(|| format!("version {v} is missing"))?;
        if !rec.verify_link(registry_id, &prev) {
            return Err(format!("broken hash chain at version {v}"));
        }
        prev = rec.hash;
    }
    if prev != head_hash {
        return Err(format!(
            "the chain re-hashed from genesis ends at {prev}, the served head is {head_hash}"
        ));
    }
    Ok(last)
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
        // Locations as `restore` lays the records out in its in-memory journal.
        let mut end = 0u64;
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
            let json = rec.to_json();
            end += json.len() as u64;
            let loc = Loc {
                end,
                len: json.len() as u32,
            };
            recs.push(Rec(json, v as usize));
            snaps.push(prev.next(rec, descriptors, loc));
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

    #[test]
    fn a_checkpoint_must_say_where_the_log_continues_and_history_verifies_in_full() {
        let (recs, snaps) = chain_of(4);
        let cp = checkpoint_bytes(&snaps[2]);
        let mut v: serde_json::Value = serde_json::from_slice(&cp).unwrap();
        let end = v["log_end"]
            .as_u64()
            .expect("a checkpoint says where the log continues");
        v["log_end"] = serde_json::json!(end + 1);
        let err = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs)
            .err()
            .unwrap()
            .0;
        assert!(err.contains("continues at"), "{err}");
        assert_eq!(checkpoint_log_end(&cp), Some(end));
        // An older checkpoint without the field still restores.
        v.as_object_mut().unwrap().remove("log_end");
        let old = restore("r", Some((2, &serde_json::to_vec(&v).unwrap())), &recs).unwrap();
        assert_eq!(old.snapshot.head_json, snaps[4].head_json);
        assert_eq!(old.recent_commits.len(), 4, "ids before the checkpoint too");

        let full = restore("r", None, &recs).unwrap();
        let head = full.snapshot.head.hash.clone();
        assert_eq!(verify_history("r", &full.snapshot.history, &head), Ok(4));
        let err = verify_history("r", &full.snapshot.history, &"0".repeat(64)).unwrap_err();
        assert!(err.contains("served head"), "{err}");
        // A record read back through the history is byte for byte what was stored.
        assert_eq!(full.snapshot.record_bytes(3).unwrap().unwrap(), recs[2].0);
    }
}
