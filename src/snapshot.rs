//! The immutable snapshot that HTTP workers read lock-free through `ArcSwap`, and the
//! [`Publisher`]s told of each one the writer makes visible.
//!
//! Architecture invariant: only the writer thread builds and publishes snapshots, and it publishes
//! version V only after V is durable. A snapshot never changes after publication; building V+1
//! shares structure with V (persistent map, shared history index): publishing is O(ops · log n).
//! History is not on the heap: per version the snapshot holds a 16-byte location of the record
//! in the journal ([`History`]); only genesis and the head are kept as records.

use crate::domain::quorum::SignerHistory;
use crate::domain::record::CommitRecord;
use crate::domain::signers::SignerSet;
use crate::domain::state::Descriptors;
use crate::history::{History, HistorySource, Loc, NoSource};
use std::sync::Arc;

pub struct Snapshot {
    pub registry_id: Arc<str>,
    pub head: Arc<CommitRecord>,
    /// `/registry/head` body, encoded once at publication.
    pub head_json: Arc<[u8]>,
    pub descriptors: Descriptors,
    /// Every version from genesis (or from a retention window's floor) to head, read from the
    /// journal.
    pub history: History,
    /// Every signer set from genesis to head (docs/FORMATS.md): which set judges a proposal on which
    /// base. Shared between snapshots until a `set_signers` commit replaces it.
    pub signers: Arc<SignerHistory>,
}

impl Snapshot {
    /// Version 0 of a registry whose initial signer set is `set` (genesis v2), with no journal
    /// to read history from (for tests whose journal keeps nothing; [`Snapshot::genesis_over`]
    /// names one).
    pub fn genesis(registry_id: &str, set: Arc<SignerSet>) -> Snapshot {
        Snapshot::genesis_over(registry_id, set, Arc::new(NoSource))
    }

    /// Version 0 whose later records will be read from `source`.
    pub fn genesis_over(
        registry_id: &str,
        set: Arc<SignerSet>,
        source: Arc<dyn HistorySource>,
    ) -> Snapshot {
        let head = Arc::new(CommitRecord::genesis(registry_id, set.clone()));
        let history = History::new(head.clone(), source);
        Snapshot::new(
            registry_id.into(),
            head,
            Descriptors::new(),
            history,
            Arc::new(SignerHistory::genesis(set)),
        )
    }

    pub fn new(
        registry_id: Arc<str>,
        head: Arc<CommitRecord>,
        descriptors: Descriptors,
        history: History,
        signers: Arc<SignerHistory>,
    ) -> Snapshot {
        let head_json = serde_json::to_vec(&head.head_json())
            .expect("head serializes")
            .into();
        Snapshot::with_head_json(registry_id, head, head_json, descriptors, history, signers)
    }

    /// Like [`Snapshot::new`], with the `/registry/head` body already encoded (the writer's
    /// commit step has it from [`CommitRecord::encode`]: the head is not serialised twice).
    pub fn with_head_json(
        registry_id: Arc<str>,
        head: Arc<CommitRecord>,
        head_json: Arc<[u8]>,
        descriptors: Descriptors,
        history: History,
        signers: Arc<SignerHistory>,
    ) -> Snapshot {
        debug_assert_eq!(history.len(), head.version + 1);
        debug_assert!(signers.current().0 <= head.version);
        debug_assert_eq!(head.descriptors, descriptors.len() as u64);
        debug_assert_eq!(
            &*head_json,
            &serde_json::to_vec(&head.head_json()).expect("head serializes")[..],
            "the head body is the head's JSON"
        );
        Snapshot {
            registry_id,
            head,
            head_json,
            descriptors,
            history,
            signers,
        }
    }

    pub fn version(&self) -> u64 {
        self.head.version
    }

    /// The served head JSON of this snapshot (`GET /registry/head`, a stream `reset`): the
    /// fields encoded at publication, then `oldest_version` as it is now (SPEC §14: the window's
    /// floor moves when a checkpoint lets old segments go, without a new version).
    pub fn served_head(&self) -> Vec<u8> {
        with_oldest(&self.head_json, self.oldest_version())
    }

    /// The oldest version whose record this node still serves (0 without a retention window).
    pub fn oldest_version(&self) -> u64 {
        self.history.oldest_version()
    }
}

/// A head JSON object (`{…}`) with `"oldest_version": oldest` appended as its last field: the
/// form `GET /registry/head` and the stream's events serve.
pub fn with_oldest(head_json: &[u8], oldest: u64) -> Vec<u8> {
    debug_assert_eq!(head_json.last(), Some(&b'}'));
    let mut body = Vec::with_capacity(head_json.len() + 24);
    body.extend_from_slice(&head_json[..head_json.len() - 1]);
    body.extend_from_slice(b",\"oldest_version\":");
    // Digits without `format!`: this runs on every head request.
    body.extend_from_slice(crate::http::decimal(&mut [0u8; 20], oldest));
    body.push(b'}');
    body
}

impl Snapshot {
    /// The served JSON of the record at `version`: `Ok(None)` if not committed, `Err` if the
    /// journal could not be read back intact.
    pub fn record_bytes(&self, version: u64) -> Result<Option<Vec<u8>>, String> {
        self.history.bytes(version)
    }

    /// The record at `version`, parsed (see [`Snapshot::record_bytes`]).
    pub fn record(&self, version: u64) -> Result<Option<Arc<CommitRecord>>, String> {
        if version == self.head.version {
            return Ok(Some(self.head.clone()));
        }
        Ok(self.history.record(version)?.map(Arc::new))
    }

    /// The next snapshot after applying a commit record whose state is `descriptors`; `loc` is
    /// where the journal holds the record's bytes.
    pub fn next(&self, record: Arc<CommitRecord>, descriptors: Descriptors, loc: Loc) -> Snapshot {
        self.next_with(record, descriptors, loc, None)
    }

    /// Like [`Snapshot::next`]; `new_signers` is the set a `set_signers` record puts in force
    /// from its own version on.
    pub fn next_with(
        &self,
        record: Arc<CommitRecord>,
        descriptors: Descriptors,
        loc: Loc,
        new_signers: Option<Arc<SignerSet>>,
    ) -> Snapshot {
        let head_json = serde_json::to_vec(&record.head_json())
            .expect("head serializes")
            .into();
        self.next_encoded(record, head_json, descriptors, loc, new_signers)
    }

    /// Like [`Snapshot::next_with`], with the new head's `/registry/head` body already encoded
    /// (see [`Snapshot::with_head_json`]).
    pub fn next_encoded(
        &self,
        record: Arc<CommitRecord>,
        head_json: Arc<[u8]>,
        descriptors: Descriptors,
        loc: Loc,
        new_signers: Option<Arc<SignerSet>>,
    ) -> Snapshot {
        assert_eq!(
            record.version,
            self.version() + 1,
            "versions advance by one"
        );
        let mut history = self.history.clone();
        history.push(loc);
        let signers = match new_signers {
            Some(set) => {
                let mut h = (*self.signers).clone();
                h.record(record.version, set)
                    .expect("a new version follows every earlier signer set");
                Arc::new(h)
            }
            None => self.signers.clone(),
        };
        Snapshot::with_head_json(
            self.registry_id.clone(),
            record,
            head_json,
            descriptors,
            history,
            signers,
        )
    }
}

/// Everything that learns of a version when the writer makes it visible (the stream fan-out,
/// the event bus, the checkpoint nudge). Beside the snapshot because it is told of snapshots:
/// the roles that implement it need not know the writer.
pub trait Publisher: Send {
    /// Called after `snapshot` was stored in the ArcSwap; `records` are the versions it made
    /// visible, oldest first.
    fn published(&mut self, snapshot: &Arc<Snapshot>, records: &[Arc<CommitRecord>]);

    /// The write plane stopped (storage failure).
    fn shed(&mut self, _reason: &str) {}
}

/// Several publishers, called in order.
pub struct Publishers(pub Vec<Box<dyn Publisher>>);

impl Publisher for Publishers {
    fn published(&mut self, snapshot: &Arc<Snapshot>, records: &[Arc<CommitRecord>]) {
        for p in &mut self.0 {
            p.published(snapshot, records);
        }
    }

    fn shed(&mut self, reason: &str) {
        for p in &mut self.0 {
            p.shed(reason);
        }
    }
}
