//! The writer: the single owner of pending proposals and HEAD.
//!
//! Thread: `writer`. Input: `requests` (bounded; HTTP workers `try_send` and answer `429 busy`
//! when it is full) and `internal` (verifier results and durability notices). Output: replies
//! through each request's [`Replier`], verify jobs to the verifier pool, sync requests to the
//! fsync thread, and published snapshots (`ArcSwap`) plus commit events.
//!
//! Owned state (no other thread touches it): the pending proposals, the *staged* head (appended
//! to the log, maybe not yet durable) and the queue of staged commits waiting for their sync.
//!
//! A commit whose proposal builds on a version that is not staged yet (`base_version` above the
//! staged head: its predecessor is still on its way through another HTTP worker) is *held* for
//! up to `proposals.commit_wait_ms`, at most `proposals.max_pending` of them: it is tried again
//! the moment the staged head reaches its base, and answered `409` as before if its wait ends
//! first. Pipelined clients then form group-commit batches instead of retry storms; nothing about
//! the compare-and-swap changes (a commit still stages only at exactly `base_version + 1`).
//!
//! Commit protocol, in order: check quorum → CAS on base_version against the staged head →
//! apply ops (a conflict changes nothing) → append the record to the journal → ask the fsync
//! thread for durability → on its notice, publish the snapshot of the newest durable version,
//! answer every commit it covers and emit their events. A journal or sync failure poisons the
//! write plane: every later write answers 503, reads keep working.
//!
//! Shutdown: on [`WriteRequest::Shutdown`] the writer stops taking requests, waits for
//! durability of everything appended, answers, and exits.

use crate::domain::chain;
use crate::domain::dsse;
use crate::domain::proposal::{self, Op, Proposal, ProposalLimits};
use crate::domain::record::CommitRecord;
use crate::domain::signers::SignerSet;
use crate::domain::state;
use crate::error::{ApiError, Code};
use crate::http::{Replier, Response};
use crate::metrics::m;
use crate::roles::verifier::{Verified, VerifyJob};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{select, Receiver, Sender, TrySendError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What HTTP workers ask of the writer.
pub enum WriteRequest {
    Propose {
        bytes: Vec<u8>,
        replier: Replier,
    },
    GetProposal {
        id: String,
        replier: Replier,
    },
    Approve {
        proposal_id: String,
        /// (keyid, decoded signature)
        signatures: Vec<(String, [u8; 64])>,
        replier: Replier,
    },
    Commit {
        proposal_id: String,
        replier: Replier,
    },
    /// Stop: finish what is staged, then exit.
    Shutdown,
}

/// What the verifier pool and the fsync thread tell the writer.
pub enum Internal {
    Verified(Verified),
    /// Everything appended up to this journal position is durable.
    Durable(u64),
    /// A sync failed: nothing past the last durable position may be acknowledged, ever.
    SyncFailed(String),
}

/// Why the journal refused an append.
#[derive(Debug)]
pub enum JournalError {
    /// The disk is full; nothing was written (507, the write plane stays up).
    NoSpace(String),
    /// The record does not fit a log segment; nothing was written (413).
    TooLarge(String),
    /// Anything else; the write plane is poisoned.
    Failed(String),
}

/// Where commit records go before they count. Implemented by the on-disk log and by the
/// in-memory journal of `--amnesia`.
pub trait Journal: Send {
    /// Append one record; returns the journal position just past it.
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError>;
    /// Does durability need a sync (false for `--amnesia` and `fsync = "never"`)?
    fn needs_sync(&self) -> bool;
}

/// A journal that keeps nothing: `--amnesia` (state lives in the snapshot only).
pub struct MemoryJournal {
    end: u64,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        MemoryJournal { end: 0 }
    }
}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        self.end += payload.len() as u64;
        Ok(self.end)
    }
    fn needs_sync(&self) -> bool {
        false
    }
}

/// Everything published by the writer when a version becomes visible.
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

/// Live settings of the writer that SIGHUP may change.
#[derive(Clone)]
pub struct WriterSettings {
    pub ttl: Duration,
    pub max_pending: usize,
    /// How long a commit whose base is ahead of the staged head is held (zero: refused at once).
    pub commit_wait: Duration,
    pub limits: ProposalLimits,
}

pub struct WriterParts {
    pub registry_id: String,
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub signers: Arc<ArcSwap<SignerSet>>,
    pub settings: Arc<ArcSwap<WriterSettings>>,
    pub requests: Receiver<WriteRequest>,
    pub internal_rx: Receiver<Internal>,
    pub verify_tx: Sender<VerifyJob>,
    /// Sync requests (journal positions) to the fsync thread; `None` when no sync is needed.
    pub sync_tx: Option<Sender<u64>>,
    pub journal: Box<dyn Journal>,
    pub publisher: Box<dyn Publisher>,
    /// Set when the write plane is poisoned, with the reason (for /readyz).
    pub poisoned: Arc<parking_lot::Mutex<Option<String>>>,
    pub clock: fn() -> i64,
}

#[derive(Clone)]
struct Approval {
    public: [u8; 32],
    sig: [u8; 64],
}

struct Pending {
    bytes: Arc<[u8]>,
    pae: Arc<[u8]>,
    proposal: Arc<Proposal>,
    expires_unix: i64,
    approvals: BTreeMap<String, Approval>,
    expired: bool,
}

struct ApproveInFlight {
    proposal_id: String,
    /// (keyid, public key, signature) per submitted signature.
    signatures: Vec<(String, [u8; 32], [u8; 64])>,
    remaining: usize,
    failed: Option<usize>,
    replier: Replier,
}

/// A commit held until the staged head reaches its proposal's base version.
struct Held {
    proposal_id: String,
    replier: Replier,
    started: Instant,
    deadline: Instant,
}

struct Staged {
    version: u64,
    position: u64,
    snapshot: Arc<Snapshot>,
    waiter: Option<(Replier, Instant)>,
}

/// How many committed proposal ids are remembered for `GET /proposals/{id}` and the
/// "already committed" answer; older ones are refused by the CAS check anyway.
const COMMITTED_REMEMBERED: usize = 16_384;

pub struct Writer {
    p: WriterParts,
    pending: HashMap<String, Pending>,
    committed: HashMap<String, u64>,
    committed_order: VecDeque<String>,
    approvals_in_flight: HashMap<u64, ApproveInFlight>,
    next_request: u64,
    /// The head that later commits build on: published or waiting for its sync.
    staged: Arc<Snapshot>,
    waiting: VecDeque<Staged>,
    /// Held commits by their proposal's base version, oldest first within one base.
    held: BTreeMap<u64, VecDeque<Held>>,
    held_count: usize,
    /// Set while held commits are being retried (a retry that stages must not start another).
    releasing: bool,
    shutting_down: bool,
}

impl Writer {
    pub fn new(parts: WriterParts) -> Writer {
        let staged = parts.snapshot.load_full();
        Writer {
            p: parts,
            pending: HashMap::new(),
            committed: HashMap::new(),
            committed_order: VecDeque::new(),
            approvals_in_flight: HashMap::new(),
            next_request: 0,
            staged,
            waiting: VecDeque::new(),
            held: BTreeMap::new(),
            held_count: 0,
            releasing: false,
            shutting_down: false,
        }
    }

    /// Remember recently committed proposal ids (e.g. from log replay).
    pub fn remember_committed(&mut self, proposal_id: String, version: u64) {
        self.committed.insert(proposal_id.clone(), version);
        self.committed_order.push_back(proposal_id);
        while self.committed_order.len() > COMMITTED_REMEMBERED {
            if let Some(old) = self.committed_order.pop_front() {
                self.committed.remove(&old);
            }
        }
    }

    /// The thread body.
    pub fn run(mut self) {
        let tick = crossbeam_channel::tick(Duration::from_secs(1));
        loop {
            if self.shutting_down && self.waiting.is_empty() && self.approvals_in_flight.is_empty()
            {
                break;
            }
            // A timer only while commits are held: wakes the loop at the first one's deadline.
            let held_timer = match self.next_deadline() {
                Some(d) => crossbeam_channel::at(d),
                None => crossbeam_channel::never(),
            };
            select! {
                recv(self.p.internal_rx) -> msg => match msg {
                    Ok(msg) => self.on_internal(msg),
                    Err(_) => break,
                },
                recv(self.p.requests) -> msg => match msg {
                    Ok(WriteRequest::Shutdown) | Err(_) => self.on_request(WriteRequest::Shutdown),
                    Ok(req) if self.shutting_down => drop(req),
                    Ok(req) => self.on_request(req),
                },
                recv(held_timer) -> _ => self.on_tick(Instant::now()),
                recv(tick) -> _ => self.expire(),
            }
        }
        log::info!("msg=\"writer stopped\" head={}", self.staged.version());
    }

    fn poisoned(&self) -> Option<String> {
        self.p.poisoned.lock().clone()
    }

    fn poison(&mut self, reason: String) {
        log::error!("msg=\"write plane stopped\" reason={reason:?}");
        self.p.publisher.shed(&reason);
        *self.p.poisoned.lock() = Some(reason);
        m().registry_write_plane_ready.set(0);
        for held in std::mem::take(&mut self.held).into_values().flatten() {
            held.replier.send(err(&ApiError::unavailable(
                "storage failed; the write plane is stopped",
            )));
        }
        self.held_count = 0;
        m().registry_commits_held.set(0);
        // Nothing staged past the last durable point may ever be acknowledged.
        for staged in self.waiting.drain(..) {
            if let Some((replier, _)) = staged.waiter {
                replier.send(err(&ApiError::unavailable(
                    "storage failed; the write plane is stopped",
                )));
            }
        }
        self.staged = self.p.snapshot.load_full();
    }

    /// Handle one request (the thread body calls this; simulations call it directly).
    pub fn on_request(&mut self, req: WriteRequest) {
        if let Some(reason) = self.poisoned() {
            m().rejected_total.with_label_values(&["deps"]).inc();
            let replier = match req {
                WriteRequest::Propose { replier, .. }
                | WriteRequest::GetProposal { replier, .. }
                | WriteRequest::Approve { replier, .. }
                | WriteRequest::Commit { replier, .. } => replier,
                // Nothing is held or waiting once stopped (`poison` answered them): just exit.
                WriteRequest::Shutdown => {
                    self.shutting_down = true;
                    return;
                }
            };
            replier.send(err(&ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            ))));
            return;
        }
        match req {
            WriteRequest::Propose { bytes, replier } => {
                let r = self.propose(bytes, &replier.corr_id);
                replier.send(r.unwrap_or_else(|e| err(&e)));
            }
            WriteRequest::GetProposal { id, replier } => {
                replier.send(self.get_proposal(&id).unwrap_or_else(|e| err(&e)));
            }
            WriteRequest::Approve {
                proposal_id,
                signatures,
                replier,
            } => self.approve(proposal_id, signatures, replier),
            WriteRequest::Commit {
                proposal_id,
                replier,
            } => self.commit(proposal_id, replier, Instant::now(), true),
            WriteRequest::Shutdown => {
                // Held commits get their answer now: their predecessors will not come.
                self.shutting_down = true;
                self.release_held(None);
            }
        }
    }

    /// End the wait of every held commit whose deadline is at or before `now` (the thread body
    /// calls this from its timer; simulations call it directly).
    pub fn on_tick(&mut self, now: Instant) {
        self.release_held(Some(now));
    }

    /// The earliest deadline among held commits.
    fn next_deadline(&self) -> Option<Instant> {
        self.held.values().flatten().map(|h| h.deadline).min()
    }

    /// Answer (refuse, usually) every held commit whose deadline is at or before `now`, or all
    /// of them with `None`.
    fn release_held(&mut self, now: Option<Instant>) {
        let mut due = Vec::new();
        for queue in self.held.values_mut() {
            let (go, stay): (VecDeque<Held>, VecDeque<Held>) = std::mem::take(queue)
                .into_iter()
                .partition(|h| now.is_none_or(|now| h.deadline <= now));
            *queue = stay;
            due.extend(go);
        }
        self.held.retain(|_, q| !q.is_empty());
        self.held_count -= due.len();
        m().registry_commits_held.set(self.held_count as i64);
        for h in due {
            self.commit(h.proposal_id, h.replier, h.started, false);
        }
    }

    /// Retry every held commit whose base the staged head has reached: the one at exactly the
    /// staged version stages (and may let the next base through); one below it lost its race
    /// and gets its 409.
    fn retry_held(&mut self) {
        if self.releasing {
            return;
        }
        self.releasing = true;
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.staged.version() {
                break;
            }
            let queue = entry.remove();
            self.held_count -= queue.len();
            m().registry_commits_held.set(self.held_count as i64);
            for h in queue {
                self.commit(h.proposal_id, h.replier, h.started, false);
            }
        }
        self.releasing = false;
    }

    fn now(&self) -> i64 {
        (self.p.clock)()
    }

    /// Mark proposals past their TTL expired; keep their tombstones until their slot is needed.
    fn expire(&mut self) {
        let now = self.now();
        for p in self.pending.values_mut() {
            if !p.expired && now >= p.expires_unix {
                p.expired = true;
            }
        }
        let live = self.pending.values().filter(|p| !p.expired).count();
        m().registry_pending_proposals.set(live as i64);
    }

    fn propose(&mut self, bytes: Vec<u8>, corr_id: &str) -> Result<Response, ApiError> {
        let settings = self.p.settings.load();
        let parsed = proposal::parse(&bytes, &self.p.registry_id, &settings.limits)?;
        // The domain parses set_signers (SPEC §8), but the writer does not count its double
        // quorum or keep the signer history yet: refuse it rather than commit it as a no-op.
        if parsed.new_signers().is_some() {
            return Err(ApiError::bad_request("set_signers is not supported yet"));
        }
        let id = crate::domain::sha256_hex(&bytes);
        let now = self.now();
        self.expire();
        if self.committed.contains_key(&id) {
            return Err(ApiError::conflict(format!(
                "proposal {id} is already committed"
            )));
        }
        if let Some(p) = self.pending.get(&id) {
            if !p.expired {
                return Ok(accepted(&id, p.expires_unix));
            }
        }
        let head = self.staged.version();
        if parsed.base_version < head {
            m().registry_cas_conflicts_total.inc();
            return Err(ApiError::conflict(format!(
                "base_version {} is behind HEAD {head}",
                parsed.base_version
            )));
        }
        if !self.pending.contains_key(&id) && self.pending.len() >= settings.max_pending {
            // Free the slot of the oldest proposal that can never commit: expired, or built on a
            // base the staged head has passed (it lost its compare-and-swap; until its TTL it
            // still answers 409 "not HEAD", and a client rebuilds on HEAD either way). With none,
            // shed. (Found by the 10-minute soak: racing committers' losers filled every slot
            // for `ttl_secs`, and every proposal was refused 429.)
            let oldest_dead = self
                .pending
                .iter()
                .filter(|(_, p)| p.expired || p.proposal.base_version < head)
                .min_by_key(|(id, p)| (p.expires_unix, *id))
                .map(|(id, _)| id.clone());
            match oldest_dead {
                Some(old) => {
                    self.pending.remove(&old);
                }
                None => {
                    m().rejected_total.with_label_values(&["busy"]).inc();
                    return Err(ApiError::busy(format!(
                        "{} proposals are pending, the limit is {}",
                        self.pending.len(),
                        settings.max_pending
                    )));
                }
            }
        }
        let expires_unix = now + settings.ttl.as_secs() as i64;
        let bytes: Arc<[u8]> = bytes.into();
        self.pending.insert(
            id.clone(),
            Pending {
                pae: dsse::pae(&bytes).into(),
                bytes,
                proposal: Arc::new(parsed),
                expires_unix,
                approvals: BTreeMap::new(),
                expired: false,
            },
        );
        self.expire();
        log::info!(
            "msg=proposed corr_id={corr_id} proposal_id={id} base_version={}",
            { self.pending[&id].proposal.base_version }
        );
        Ok(accepted(&id, expires_unix))
    }

    /// The pending proposal `id`, or the error a client should see for it.
    fn live(&mut self, id: &str) -> Result<&mut Pending, ApiError> {
        let now = self.now();
        if let Some(v) = self.committed.get(id) {
            return Err(ApiError::conflict(format!(
                "proposal {id} is already committed at version {v}"
            )));
        }
        let p = self
            .pending
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
        if p.expired || now >= p.expires_unix {
            p.expired = true;
            return Err(ApiError::new(
                Code::Expired,
                format!(
                    "proposal {id} expired at {}",
                    crate::clock::rfc3339(p.expires_unix)
                ),
            ));
        }
        Ok(p)
    }

    fn get_proposal(&mut self, id: &str) -> Result<Response, ApiError> {
        let signers = self.p.signers.load_full();
        let now = self.now();
        let (p, state) = if let Some(&version) = self.committed.get(id) {
            let rec = self
                .staged
                .record(version)
                .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
            let body = serde_json::json!({
                "proposal_id": id,
                "payload": dsse::b64(&rec.payload),
                "approvals": rec.signatures.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                "threshold": signers.threshold,
                "state": "committed",
                "version": version,
                "diff": [],
            });
            return Ok(json(200, &body));
        } else {
            let p = self
                .pending
                .get_mut(id)
                .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
            if now >= p.expires_unix {
                p.expired = true;
            }
            let state = if p.expired { "expired" } else { "pending" };
            (&*p, state)
        };
        let current = self.p.snapshot.load();
        let diff: Vec<serde_json::Value> = p
            .proposal
            .ops
            .iter()
            .map(|op| {
                let (kind, oid) = op.target();
                let cur = current
                    .descriptors
                    .get(&(kind, oid.clone()))
                    .map(|d| serde_json::to_value(&*d.body).unwrap_or_default());
                let (name, proposed) = match op {
                    Op::Put { body, .. } => ("put", serde_json::to_value(&**body).ok()),
                    Op::Delete { .. } => ("delete", None),
                    // Unreachable: propose refuses set_signers proposals.
                    Op::SetSigners { .. } => ("set_signers", None),
                };
                serde_json::json!({
                    "op": name, "kind": kind, "id": &**oid,
                    "current": cur, "proposed": proposed,
                })
            })
            .collect();
        let body = serde_json::json!({
            "proposal_id": id,
            "payload": dsse::b64(&p.bytes),
            "approvals": counted(p, &signers, now),
            "threshold": signers.threshold,
            "state": state,
            "base_version": p.proposal.base_version,
            "expires_at": crate::clock::rfc3339(p.expires_unix),
            "diff": diff,
        });
        Ok(json(200, &body))
    }

    fn approve(&mut self, id: String, signatures: Vec<(String, [u8; 64])>, replier: Replier) {
        let signers = self.p.signers.load_full();
        let now = self.now();
        let p = match self.live(&id) {
            Ok(p) => p,
            Err(e) => return replier.send(err(&e)),
        };
        if signatures.is_empty() {
            return replier.send(err(&ApiError::bad_request("signatures is empty")));
        }
        // Look every keyid up first: an unknown or out-of-window key refuses the whole request.
        let mut checks = Vec::with_capacity(signatures.len());
        for (keyid, sig) in signatures {
            let Some(slot) = signers.slot(&keyid) else {
                return replier.send(err(&ApiError::forbidden(format!(
                    "keyid {keyid:?} is not a configured signer"
                ))));
            };
            let key = &signers.keys[slot];
            if !key.valid_at(now) {
                return replier.send(err(&ApiError::forbidden(format!(
                    "key {keyid:?} is outside its validity window"
                ))));
            }
            checks.push((keyid, key.public, sig));
        }
        let pae = p.pae.clone();
        // A signature already recorded for the same key is idempotent: nothing to verify.
        let to_verify: Vec<usize> = checks
            .iter()
            .enumerate()
            .filter(|(_, (keyid, public, sig))| {
                p.approvals
                    .get(keyid)
                    .is_none_or(|a| a.sig != *sig || a.public != public.to_bytes())
            })
            .map(|(i, _)| i)
            .collect();
        let request = self.next_request;
        self.next_request += 1;
        let inflight = ApproveInFlight {
            proposal_id: id,
            signatures: checks
                .iter()
                .map(|(k, public, sig)| (k.clone(), public.to_bytes(), *sig))
                .collect(),
            remaining: to_verify.len(),
            failed: None,
            replier,
        };
        for &i in &to_verify {
            let job = VerifyJob {
                key: checks[i].1,
                sig: checks[i].2,
                pae: pae.clone(),
                request,
                index: i,
            };
            if let Err(e) = self.p.verify_tx.try_send(job) {
                let msg = match e {
                    TrySendError::Full(_) => "the verifier queue is full",
                    TrySendError::Disconnected(_) => "the verifier pool is gone",
                };
                m().rejected_total.with_label_values(&["busy"]).inc();
                // Jobs already queued for this request will come back and find no entry.
                return inflight.replier.send(err(&ApiError::busy(msg)));
            }
        }
        if to_verify.is_empty() {
            self.finish_approve(inflight);
        } else {
            self.approvals_in_flight.insert(request, inflight);
        }
    }

    fn on_verified(&mut self, v: Verified) {
        let Some(entry) = self.approvals_in_flight.get_mut(&v.request) else {
            return;
        };
        entry.remaining -= 1;
        if !v.ok && entry.failed.is_none() {
            entry.failed = Some(v.index);
        }
        if entry.remaining == 0 {
            let entry = self
                .approvals_in_flight
                .remove(&v.request)
                .expect("entry exists");
            self.finish_approve(entry);
        }
    }

    fn finish_approve(&mut self, a: ApproveInFlight) {
        if let Some(i) = a.failed {
            let keyid = &a.signatures[i].0;
            log::warn!(
                "msg=\"approval refused\" audit=1 corr_id={} proposal_id={} keyid={keyid:?} reason=bad_signature",
                a.replier.corr_id,
                a.proposal_id
            );
            return a.replier.send(err(&ApiError::forbidden(format!(
                "signature by {keyid:?} does not verify over the DSSE PAE of this proposal"
            ))));
        }
        let signers = self.p.signers.load_full();
        let now = self.now();
        // Re-check: the proposal may have been committed or expired while signatures verified.
        let p = match self.live(&a.proposal_id) {
            Ok(p) => p,
            Err(e) => return a.replier.send(err(&e)),
        };
        for (keyid, public, sig) in &a.signatures {
            p.approvals.entry(keyid.clone()).or_insert(Approval {
                public: *public,
                sig: *sig,
            });
        }
        let k = counted(p, &signers, now).len();
        log::info!(
            "msg=approved audit=1 corr_id={} proposal_id={} keyids={:?} approvals={k} threshold={}",
            a.replier.corr_id,
            a.proposal_id,
            a.signatures
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
            signers.threshold
        );
        let body = serde_json::json!({
            "proposal_id": a.proposal_id,
            "approvals": k,
            "threshold": signers.threshold,
        });
        a.replier.send(json(200, &body));
    }

    /// `may_hold`: whether a commit whose base is ahead of the staged head may wait for it.
    fn commit(&mut self, id: String, replier: Replier, started: Instant, may_hold: bool) {
        // A held commit retried after a failure earlier in the same pass.
        if let Some(reason) = self.poisoned() {
            replier.send(err(&ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            ))));
            return;
        }
        match self.try_commit(&id) {
            Ok(staged_version) => {
                // The audit line `msg=committed` is written once the record is durable.
                if let Some(last) = self.waiting.back_mut() {
                    if last.version == staged_version {
                        last.waiter = Some((replier, started));
                    }
                }
                if !self.p.journal.needs_sync() {
                    let position = self.waiting.back().map_or(0, |s| s.position);
                    self.on_durable(position);
                }
                self.retry_held();
            }
            Err(e) => {
                if may_hold && e.code == Code::Conflict {
                    if let Some(base) = self.ahead_of_staged(&id) {
                        let settings = self.p.settings.load();
                        if !settings.commit_wait.is_zero() && self.held_count < settings.max_pending
                        {
                            log::debug!(
                                "msg=\"commit held\" corr_id={} proposal_id={id} base_version={base} staged={}",
                                replier.corr_id,
                                self.staged.version()
                            );
                            self.held.entry(base).or_default().push_back(Held {
                                proposal_id: id,
                                replier,
                                started,
                                deadline: Instant::now() + settings.commit_wait,
                            });
                            self.held_count += 1;
                            m().registry_commits_held.set(self.held_count as i64);
                            return;
                        }
                    }
                }
                if e.code == Code::Conflict {
                    m().registry_cas_conflicts_total.inc();
                }
                log::info!(
                    "msg=\"commit refused\" corr_id={} proposal_id={id} error={}",
                    replier.corr_id,
                    e.code.as_str()
                );
                replier.send(err(&e));
            }
        }
    }

    /// The base version of pending proposal `id` when it is above the staged head (a conflict
    /// that the staged head may still grow out of).
    fn ahead_of_staged(&self, id: &str) -> Option<u64> {
        let base = self.pending.get(id)?.proposal.base_version;
        (base > self.staged.version()).then_some(base)
    }

    /// Stage a commit: returns its version. Nothing changes on error.
    fn try_commit(&mut self, id: &str) -> Result<u64, ApiError> {
        let signers = self.p.signers.load_full();
        let now = self.now();
        let base = self.staged.clone();
        let (approvals, proposal, bytes) = {
            let p = self.live(id)?;
            (
                counted_signatures(p, &signers, now),
                p.proposal.clone(),
                p.bytes.clone(),
            )
        };
        if approvals.len() < signers.threshold {
            return Err(ApiError::new(
                Code::QuorumNotMet,
                format!(
                    "{} valid approvals, the threshold is {}",
                    approvals.len(),
                    signers.threshold
                ),
            ));
        }
        if proposal.base_version != base.version() {
            return Err(ApiError::conflict(format!(
                "base_version {} is not HEAD {}",
                proposal.base_version,
                base.version()
            )));
        }
        let version = base.version() + 1;
        let descriptors = state::apply(&base.descriptors, &proposal.ops, version)?;
        let record = Arc::new(CommitRecord {
            version,
            hash: chain::commit_hash(
                &self.p.registry_id,
                version,
                &base.head.hash,
                id,
                &approvals,
            ),
            prev_hash: base.head.hash.clone(),
            committed_at_ms: crate::clock::now_unix_ms(),
            proposal_id: id.to_string(),
            payload: bytes,
            signatures: approvals,
            descriptors: descriptors.len() as u64,
        });
        let position = match self.p.journal.append(&record.to_json()) {
            Ok(pos) => pos,
            Err(JournalError::NoSpace(msg)) => {
                log::error!("msg=\"commit refused: disk full\" error={msg:?}");
                return Err(ApiError::new(
                    Code::StorageFull,
                    format!("disk full: {msg}"),
                ));
            }
            Err(JournalError::TooLarge(msg)) => return Err(ApiError::too_large(msg)),
            Err(JournalError::Failed(msg)) => {
                self.poison(format!("log append failed: {msg}"));
                return Err(ApiError::unavailable(
                    "storage failed; the write plane is stopped",
                ));
            }
        };
        let snapshot = Arc::new(base.next(record, descriptors));
        self.pending.remove(id);
        self.remember_committed(id.to_string(), version);
        self.staged = snapshot.clone();
        self.waiting.push_back(Staged {
            version,
            position,
            snapshot,
            waiter: None,
        });
        if let Some(tx) = &self.p.sync_tx {
            if self.p.journal.needs_sync() && tx.send(position).is_err() {
                self.poison("the fsync thread is gone".to_string());
                return Err(ApiError::unavailable(
                    "storage failed; the write plane is stopped",
                ));
            }
        }
        Ok(version)
    }

    /// Handle one verifier result or durability notice (see [`Writer::on_request`]).
    pub fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Verified(v) => self.on_verified(v),
            Internal::Durable(position) => self.on_durable(position),
            Internal::SyncFailed(reason) => self.poison(format!("log sync failed: {reason}")),
        }
    }

    /// Publish the newest staged version at or before `position` and answer its commits.
    fn on_durable(&mut self, position: u64) {
        let mut made_visible = Vec::new();
        let mut newest = None;
        let mut answers = Vec::new();
        while self.waiting.front().is_some_and(|s| s.position <= position) {
            let s = self.waiting.pop_front().expect("front exists");
            made_visible.push(s.snapshot.head.clone());
            if let Some(w) = s.waiter {
                answers.push((w, s.snapshot.head.clone()));
            }
            newest = Some(s.snapshot);
        }
        let Some(snapshot) = newest else { return };
        self.p.snapshot.store(snapshot.clone());
        m().registry_head_version.set(snapshot.version() as i64);
        m().registry_commits_total.inc_by(made_visible.len() as u64);
        self.p.publisher.published(&snapshot, &made_visible);
        for ((replier, started), record) in answers {
            m().commit_latency_seconds
                .observe(started.elapsed().as_secs_f64());
            log::info!(
                "msg=committed audit=1 corr_id={} proposal_id={} version={} hash={}",
                replier.corr_id,
                record.proposal_id,
                record.version,
                record.hash
            );
            let body = serde_json::json!({"version": record.version, "hash": record.hash});
            replier.send(json(200, &body));
        }
        self.expire();
    }
}

/// Keyids of approvals that count now: configured with the same public key, valid now.
fn counted(p: &Pending, signers: &SignerSet, now: i64) -> Vec<String> {
    counted_signatures(p, signers, now)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// (keyid, stored signature) of approvals that count now, sorted by keyid.
fn counted_signatures(p: &Pending, signers: &SignerSet, now: i64) -> Vec<(String, String)> {
    p.approvals
        .iter()
        .filter(|(keyid, a)| {
            signers.slot(keyid).is_some_and(|slot| {
                let key = &signers.keys[slot];
                key.public.to_bytes() == a.public && key.valid_at(now)
            })
        })
        .map(|(keyid, a)| (keyid.clone(), dsse::encode_sig(&a.sig)))
        .collect()
}

fn accepted(id: &str, expires_unix: i64) -> Response {
    json(
        202,
        &serde_json::json!({"proposal_id": id, "expires_at": crate::clock::rfc3339(expires_unix)}),
    )
}

fn json(status: u16, value: &serde_json::Value) -> Response {
    Response::json(
        status,
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

pub fn err(e: &ApiError) -> Response {
    Response::error(e.code.status(), e.code.as_str(), &e.message)
}
