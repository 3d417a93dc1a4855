//! The writer: the single owner of pending proposals and HEAD.
//!
//! Thread: `writer`. Input: `requests` (bounded; HTTP workers `try_send` and answer `429 busy`
//! when it is full) and `internal` (verifier results and durability notices). Output: replies
//! through each request's typed [`Reply`], verify jobs to the verifier pool, sync requests to the
//! fsync thread, and published snapshots (`ArcSwap`) plus commit events; each pending frame it
//! appends also goes to the checkpoint thread (`try_send`, never waits; [`Writer::feed_pending`]).
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
//! write plane: every later write answers 503, reads keep working. When the group-commit
//! pipeline is idle (nothing queued for the writer, no sync in flight) the writer runs that sync
//! itself, the same [`LogSync`](crate::roles::fsync::LogSync) call, and handles its outcome as it
//! would the fsync thread's notice (`commit.rs`, [`Writer::sync_due`]).
//!
//! Shutdown: on [`WriteRequest::Shutdown`] the writer stops taking requests, waits for
//! durability of everything appended, answers, and exits.

//! The writer speaks domain, not HTTP: every answer is a `Result` of a typed value
//! ([`Accepted`], [`Approved`], [`Committed`], [`ProposalView`]) or an [`ApiError`]; src/api
//! turns those into responses.
//!
//! Files: this one holds the requests, the owned state and the loop; `proposals.rs` propose,
//! approve and get; `commit.rs` the commit protocol and durability; `held.rs` held commits;
//! `journal.rs` the journal seam; `pending.rs` durable pending proposals and approvals (their
//! frames, their deferred answers, their restore); `submit.rs` one-request writes (`POST
//! /submit`: propose, approve and commit as one step that never leaves anything pending).

mod commit;
mod held;
mod journal;
mod pending;
mod proposals;
mod submit;

pub use journal::{Journal, JournalError, MemoryJournal};
// The publisher seam lives beside the snapshot; re-exported for the writer's users.
pub use crate::snapshot::{Publisher, Publishers};

use crate::domain::descriptor::Kind;
use crate::domain::proposal::{Proposal, ProposalLimits};
use crate::domain::signers::{PublicKey, Sig};
use crate::error::ApiError;
use crate::metrics::m;
use crate::ops::WritePlane;
use crate::roles::reply::Reply;
use crate::roles::verifier::{Verified, VerifyJob};
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;
use crossbeam_channel::{select, Receiver, Sender};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `POST /propose` accepted (or already pending): the proposal and when it expires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub proposal_id: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// `POST /approve` recorded: approvals that count now against the threshold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approved {
    pub proposal_id: String,
    /// Distinct keys of the set in force (at the proposal's base) whose approvals count now.
    pub approvals: usize,
    pub threshold: usize,
    /// For a `set_signers` proposal: the new set's quorum, (counted, threshold).
    pub new_quorum: Option<(usize, usize)>,
}

/// `POST /commit` durable: the new head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub version: u64,
    pub hash: String,
}

/// `POST /submit` durable: the new head and the proposal it committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitCommitted {
    pub version: u64,
    pub hash: String,
    pub proposal_id: String,
}

/// Where a proposal stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposalState {
    Pending { base_version: u64, expires_at: i64 },
    Expired { base_version: u64, expires_at: i64 },
    Committed { version: u64 },
}

/// One op of a proposal against the published state.
#[derive(Clone, Debug)]
pub struct DiffEntry {
    /// `put` or `delete`.
    pub op: &'static str,
    pub kind: Kind,
    pub id: Arc<str>,
    pub current: Option<Arc<RawValue>>,
    pub proposed: Option<Arc<RawValue>>,
}

/// `GET /proposals/{id}`.
#[derive(Clone, Debug)]
pub struct ProposalView {
    pub proposal_id: String,
    pub payload: Arc<[u8]>,
    /// Keyids whose approvals count (committed: those in the record).
    pub approvals: Vec<String>,
    pub threshold: usize,
    pub state: ProposalState,
    /// Empty once committed.
    pub diff: Vec<DiffEntry>,
    /// For a `set_signers` proposal: the new set's quorum, (counted, threshold).
    pub new_quorum: Option<(usize, usize)>,
    /// For a pending `set_signers` proposal: what it changes against the set in force at its
    /// base.
    pub signers_change: Option<crate::domain::signers::SetChange>,
}

/// What HTTP workers ask of the writer.
pub enum WriteRequest {
    Propose {
        bytes: Vec<u8>,
        reply: Reply<Accepted>,
    },
    GetProposal {
        id: String,
        reply: Reply<ProposalView>,
    },
    Approve {
        proposal_id: String,
        /// (keyid, decoded signature of any algorithm)
        signatures: Vec<(String, Sig)>,
        reply: Reply<Approved>,
    },
    Commit {
        proposal_id: String,
        reply: Reply<Committed>,
    },
    /// Propose, approve and commit in one step (a DSSE envelope's payload and signatures):
    /// nothing is left pending whatever the answer.
    Submit {
        /// The exact proposal bytes (the envelope's decoded payload).
        bytes: Vec<u8>,
        /// (keyid, decoded signature)
        signatures: Vec<(String, Sig)>,
        reply: Reply<SubmitCommitted>,
    },
    /// A follower's next record (src/roles/follower.rs), already verified against the chain
    /// from the pinned genesis: append it exactly as it is and publish it like a commit. The
    /// writer re-checks version and prev_hash against its staged head and re-applies the ops
    /// (the last guard: nothing that does not extend the staged chain is stored).
    Apply {
        record: Arc<crate::domain::record::CommitRecord>,
        proposal: Arc<Proposal>,
        reply: Reply<Committed>,
    },
    /// Stop: finish what is staged, then exit.
    Shutdown,
}

impl WriteRequest {
    /// Answer this request with `e` without handling it (a full or closed queue).
    pub fn refuse(self, e: ApiError) {
        match self {
            WriteRequest::Propose { reply, .. } => reply.send(Err(e)),
            WriteRequest::GetProposal { reply, .. } => reply.send(Err(e)),
            WriteRequest::Approve { reply, .. } => reply.send(Err(e)),
            WriteRequest::Commit { reply, .. } => reply.send(Err(e)),
            WriteRequest::Submit { reply, .. } => reply.send(Err(e)),
            WriteRequest::Apply { reply, .. } => reply.send(Err(e)),
            WriteRequest::Shutdown => {}
        }
    }
}

/// What the verifier pool and the fsync thread tell the writer.
pub enum Internal {
    Verified(Verified),
    /// Everything appended up to this journal position is durable.
    Durable(u64),
    /// A sync failed: nothing past the last durable position may be acknowledged, ever.
    SyncFailed(String),
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
    /// The published snapshot; it carries the signer history that judges every approval
    /// (docs/FORMATS.md), so there is no signer set beside it.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub settings: Arc<ArcSwap<WriterSettings>>,
    pub requests: Receiver<WriteRequest>,
    pub internal_rx: Receiver<Internal>,
    pub verify_tx: Sender<VerifyJob>,
    /// Sync requests (journal positions) to the fsync thread; `None` when no sync is needed.
    pub sync_tx: Option<Sender<u64>>,
    pub journal: Box<dyn Journal>,
    pub publisher: Box<dyn Publisher>,
    /// The write plane's state: the writer poisons it on a storage failure (for /readyz and
    /// every later write).
    pub plane: Arc<WritePlane>,
    /// Milliseconds since the Unix epoch: proposal expiry (whole seconds of it) and each
    /// record's `committed_at`. Injected so simulations run on a simulated clock.
    pub clock_ms: fn() -> i64,
}

#[derive(Clone)]
struct Approval {
    sig: Sig,
}

struct Pending {
    bytes: Arc<[u8]>,
    pae: Arc<[u8]>,
    proposal: Arc<Proposal>,
    expires_unix: i64,
    /// By (keyid, public key): a keyid that names different keys in the set in force and in a
    /// `set_signers`' new set can approve under each.
    /// The public key is its raw bytes (`PublicKey::as_bytes`).
    approvals: BTreeMap<(String, Vec<u8>), Approval>,
    expired: bool,
    /// Journal position just past this proposal's latest pending frame: its 202 / 200 answers
    /// wait until the journal is durable there (0: restored, durable already).
    last_frame: u64,
}

/// An answer to `/propose` or `/approve` waiting for the sync that covers its pending frame.
enum Ack {
    Propose(Reply<Accepted>, Accepted),
    Approve(Reply<Approved>, Approved),
}

impl Ack {
    fn send(self) {
        match self {
            Ack::Propose(reply, a) => reply.send(Ok(a)),
            Ack::Approve(reply, a) => reply.send(Ok(a)),
        }
    }

    fn refuse(self, e: ApiError) {
        match self {
            Ack::Propose(reply, _) => reply.send(Err(e)),
            Ack::Approve(reply, _) => reply.send(Err(e)),
        }
    }
}

/// One submitted signature of an approve request, and the keys it may be verified under.
struct Submitted {
    keyid: String,
    sig: Sig,
    /// The distinct public keys this keyid names in the sets that judge the proposal (the
    /// set in force at its base and, for a `set_signers`, the new set), valid now; with whether
    /// the signature verified under each.
    candidates: Vec<(PublicKey, bool)>,
}

struct ApproveInFlight {
    proposal_id: String,
    signatures: Vec<Submitted>,
    remaining: usize,
    reply: Reply<Approved>,
}

/// Verify-job indices carry (signature, candidate): at most two candidates per signature.
const CANDIDATES: usize = 2;

/// What a commit step stages: a pending proposal (`/commit`) or a verified submission
/// (`/submit`, which never enters the pending map).
enum Work {
    Commit(String),
    Submit(Box<Pending>, String),
}

impl Work {
    fn proposal_id(&self) -> &str {
        match self {
            Work::Commit(id) | Work::Submit(_, id) => id,
        }
    }
}

/// A commit held until the staged head reaches its proposal's base version.
struct Held {
    work: Work,
    reply: Reply<Committed>,
    started: Instant,
    deadline: Instant,
}

struct Staged {
    version: u64,
    position: u64,
    snapshot: Arc<Snapshot>,
    waiter: Option<(Reply<Committed>, Instant)>,
}

/// How many committed proposal ids are remembered for `GET /proposals/{id}` and the
/// "already committed" answer; older ones are refused by the CAS check anyway.
const COMMITTED_REMEMBERED: usize = 16_384;

/// The answer every write gets once storage failed.
const STOPPED: &str = "storage failed; the write plane is stopped";

pub struct Writer {
    p: WriterParts,
    pending: HashMap<String, Pending>,
    committed: HashMap<String, u64>,
    committed_order: VecDeque<String>,
    approvals_in_flight: HashMap<u64, ApproveInFlight>,
    /// Submits whose signatures are on the verifier pool, by request id (ids shared with
    /// `approvals_in_flight`).
    submits_in_flight: HashMap<u64, submit::SubmitInFlight>,
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
    /// Journal position known durable (from the fsync thread's notices and the writer's own
    /// syncs).
    durable: u64,
    /// Answers to `/propose` and `/approve` waiting for durability, by journal position.
    acks: VecDeque<(u64, Ack)>,
    /// The ops of `pending`, shared with the capability gate (docs/ARCHITECTURE.md
    /// "Capabilities"): written only by the writer thread, in step with every insert into and
    /// removal from `pending`; HTTP workers only read it.
    pending_ops: Arc<crate::auth::PendingOps>,
    /// Journal position of the newest apply whose sync was deferred (`commit::sync_deferred`),
    /// and how many applies wait on it.
    unsynced: Option<u64>,
    unsynced_count: usize,
    /// A one-signature `/submit` or `/approve` that finds the writer and the verifier pool idle
    /// is verified here rather than on the pool (see [`Writer::verify_inline_when_idle`]).
    verify_inline: bool,
    /// The sync this thread may run itself when the pipeline is idle (see
    /// [`Writer::sync_inline_when_idle`]); `None`: every sync is the fsync thread's.
    inline_sync: Option<commit::InlineSync>,
    /// Positions appended while handling the current message whose sync is not asked for yet
    /// (only with `inline_sync`): [`Writer::sync_due`] asks at the end of the message.
    due: Vec<u64>,
    /// The highest position sent to the fsync thread. Only this thread sends there, so a sync
    /// is in flight exactly while `sent > durable`.
    sent: u64,
    /// The checkpoint thread's feed of appended pending frames ([`Writer::feed_pending`]).
    pending_feed: Option<crate::roles::checkpoint::PendingFeed>,
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
            submits_in_flight: HashMap::new(),
            next_request: 0,
            staged,
            waiting: VecDeque::new(),
            held: BTreeMap::new(),
            held_count: 0,
            releasing: false,
            shutting_down: false,
            durable: 0,
            acks: VecDeque::new(),
            pending_ops: Arc::default(),
            unsynced: None,
            unsynced_count: 0,
            verify_inline: false,
            inline_sync: None,
            due: Vec::new(),
            sent: 0,
            pending_feed: None,
        }
    }

    /// Verify a one-signature `/submit` or `/approve` on this thread when nothing else waits
    /// for the writer or the pool: a lone client (C = 1) then pays no round trip through a
    /// verifier thread (two thread wake-ups per write). Under load the pool keeps verifying, so
    /// the writer keeps sequencing. Off by default: simulations and step tests drive the pool
    /// themselves.
    pub fn verify_inline_when_idle(&mut self) {
        self.verify_inline = true;
    }

    /// The pending proposals' ops, for the capability gate of `/approve` and `/commit`.
    pub fn pending_ops(&self) -> Arc<crate::auth::PendingOps> {
        self.pending_ops.clone()
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
        // The writer's lines leave in batches (one write(2) each, not one per line): before
        // any answer (Reply::send), before the loop blocks, and when the thread ends.
        let _batch = crate::logging::batch_this_thread();
        // Wake-ups of the HTTP workers its answers go to leave once per message handled (one
        // per worker for a whole group commit), not once per answer (src/wake.rs).
        let _wakes = crate::wake::batch_this_thread();
        loop {
            // What the last message appended gets its sync now: here when the pipeline is
            // idle, else from the fsync thread.
            self.sync_due();
            if self.shutting_down
                && self.waiting.is_empty()
                && self.approvals_in_flight.is_empty()
                && self.submits_in_flight.is_empty()
                && self.acks.is_empty()
            {
                break;
            }
            // A timer only while commits are held: wakes the loop at the first one's deadline.
            let held_timer = match self.next_deadline() {
                Some(d) => crossbeam_channel::at(d),
                None => crossbeam_channel::never(),
            };
            // Nothing queued: the loop may block, so no line waits for the next message and
            // no deferred sync for the next request.
            if self.p.internal_rx.is_empty() && self.p.requests.is_empty() {
                self.sync_deferred();
                self.sync_due();
                crate::logging::flush_thread();
            }
            // The answers of the last message (and of a deferred sync just above) wake their
            // workers now, before the loop may block.
            crate::wake::flush();
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
        self.p.plane.poisoned()
    }

    fn poison(&mut self, reason: String) {
        log::error!("msg=\"write plane stopped\" reason={reason:?}");
        self.p.publisher.shed(&reason);
        self.p.plane.poison(reason);
        m().registry_write_plane_ready.set(0);
        for held in std::mem::take(&mut self.held).into_values().flatten() {
            held.reply.send(Err(ApiError::unavailable(STOPPED)));
        }
        self.held_count = 0;
        m().registry_commits_held.set(0);
        // Nothing staged past the last durable point may ever be acknowledged.
        for (_, ack) in self.acks.drain(..) {
            ack.refuse(ApiError::unavailable(STOPPED));
        }
        for staged in self.waiting.drain(..) {
            if let Some((reply, _)) = staged.waiter {
                reply.send(Err(ApiError::unavailable(STOPPED)));
            }
        }
        self.staged = self.p.snapshot.load_full();
        self.unsynced = None;
        self.unsynced_count = 0;
        // Appended, never synced: no sync is asked for after a failure, inline or not.
        self.due.clear();
    }

    /// Handle one request (the thread body calls this; simulations call it directly).
    pub fn on_request(&mut self, req: WriteRequest) {
        if let Some(reason) = self.poisoned() {
            m().rejected_total.with_label_values(&["deps"]).inc();
            if let WriteRequest::Shutdown = req {
                // Nothing is held or waiting once stopped (`poison` answered them): just exit.
                self.shutting_down = true;
                return;
            }
            req.refuse(ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            )));
            return;
        }
        match req {
            WriteRequest::Propose { bytes, reply } => match self.propose(bytes, &reply.corr_id) {
                Ok((accepted, frame)) => self.ack_after(frame, Ack::Propose(reply, accepted)),
                Err(e) => reply.send(Err(e)),
            },
            WriteRequest::GetProposal { id, reply } => reply.send(self.get_proposal(&id)),
            WriteRequest::Approve {
                proposal_id,
                signatures,
                reply,
            } => self.approve(proposal_id, signatures, reply),
            WriteRequest::Commit { proposal_id, reply } => {
                self.commit(Work::Commit(proposal_id), reply, Instant::now(), true)
            }
            WriteRequest::Submit {
                bytes,
                signatures,
                reply,
            } => self.submit(bytes, signatures, reply),
            WriteRequest::Apply {
                record,
                proposal,
                reply,
            } => self.apply(record, proposal, reply),
            WriteRequest::Shutdown => {
                // Held commits get their answer now: their predecessors will not come.
                self.shutting_down = true;
                self.release_held(None);
            }
        }
    }

    /// Handle one verifier result or durability notice (see [`Writer::on_request`]).
    pub fn on_internal(&mut self, msg: Internal) {
        match msg {
            Internal::Verified(v) if self.submits_in_flight.contains_key(&v.request) => {
                self.on_submit_verified(v)
            }
            Internal::Verified(v) => self.on_verified(v),
            Internal::Durable(position) => self.on_durable(position),
            Internal::SyncFailed(reason) => self.poison(format!("log sync failed: {reason}")),
        }
    }

    /// Now, in Unix seconds, from the injected clock.
    fn now(&self) -> i64 {
        (self.p.clock_ms)().div_euclid(1000)
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
}
