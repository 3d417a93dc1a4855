//! The commit protocol and durability: check quorum → CAS on base_version against the staged
//! head → apply ops → append to the journal → ask for a sync → on its notice publish and answer.
//! The sync is the fsync thread's, or — when the group-commit pipeline is idle — this thread's
//! own call of the same [`LogSync::sync`] ([`Writer::sync_due`]; the rule is
//! `Writer::may_sync_inline`).
//!
//! Invariant: a commit is answered `Committed` only after the sync that covers its record, and
//! the snapshot of version V is published only once V is durable; nothing changes on a refusal.

use super::proposals::tally;
use super::{Committed, Internal, Staged, Work, Writer, STOPPED};
use crate::domain::chain;
use crate::domain::proposal::Proposal;
use crate::domain::quorum::QuorumCount;
use crate::domain::record::CommitRecord;
use crate::domain::state;
use crate::error::{ApiError, Code};
use crate::history::Loc;
use crate::metrics::m;
use crate::roles::fsync::LogSync;
use crate::roles::reply::Reply;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many applies in a row share one deferred sync (about a log page).
const APPLY_GROUP_MAX: usize = 1024;

/// The writer's own path to durability (see [`Writer::sync_inline_when_idle`]).
pub(super) struct InlineSync {
    /// The sync the fsync thread runs too.
    sync: Arc<LogSync>,
    /// `fsync = "always"`: one sync per commit, so an inline sync covers one position only.
    always: bool,
    /// `storage.fsync_batch_max_delay_ms`: non-zero means the operator wants batching, and
    /// every sync stays the fsync thread's.
    batch_max_delay: Duration,
}

impl Writer {
    /// Let this thread run the log sync itself when the group-commit pipeline is idle (see
    /// `may_sync_inline`): a lone client (C = 1) then pays no hand-off to the fsync thread
    /// and back (two thread wake-ups per write); under load the fsync thread batches as before.
    /// `sync` must be the one the fsync thread runs. Off by default: simulations and step tests
    /// play the fsync thread themselves.
    pub fn sync_inline_when_idle(
        &mut self,
        sync: Arc<LogSync>,
        always: bool,
        batch_max_delay: Duration,
    ) {
        self.inline_sync = Some(InlineSync {
            sync,
            always,
            batch_max_delay,
        });
    }

    /// Ask for the sync of everything appended up to `position`. Without the inline path the
    /// position goes to the fsync thread now; with it, it waits for the end of the message
    /// being handled ([`Writer::sync_due`]), where the choice between the two paths is made
    /// once for everything the message appended (the commits a release of held commits staged
    /// too). An `Err` means the write plane is poisoned.
    pub(super) fn ask_sync(&mut self, position: u64) -> Result<(), ApiError> {
        if !self.p.journal.needs_sync() || self.p.sync_tx.is_none() {
            return Ok(());
        }
        if self.inline_sync.is_some() {
            self.due.push(position);
            return Ok(());
        }
        self.send_sync(position)
    }

    /// Hand `position` to the fsync thread.
    fn send_sync(&mut self, position: u64) -> Result<(), ApiError> {
        let Some(tx) = &self.p.sync_tx else {
            return Ok(());
        };
        if tx.send(position).is_err() {
            self.poison("the fsync thread is gone".to_string());
            return Err(ApiError::unavailable(STOPPED));
        }
        self.sent = self.sent.max(position);
        Ok(())
    }

    /// Get the positions the last message appended synced: on this thread if
    /// `may_sync_inline` allows it, handled exactly like the fsync thread's notice (a success
    /// as [`Internal::Durable`], a failure as [`Internal::SyncFailed`]: the same handlers);
    /// else sent to the fsync thread. The thread body calls it after every message; step tests
    /// call it where the loop would.
    pub fn sync_due(&mut self) {
        // An inline sync's `on_durable` may append again (it answers and expires, and whatever
        // that stages asks for its own sync): loop until nothing is left, so no position waits
        // for the next message while the loop blocks.
        while !self.due.is_empty() {
            let mut due = std::mem::take(&mut self.due);
            if self.may_sync_inline(&due) {
                m().registry_fsync_inline_total.inc();
                let result = self
                    .inline_sync
                    .as_ref()
                    .expect("may_sync_inline checked it")
                    .sync
                    .sync(&due);
                match result {
                    Ok(durable) => self.on_internal(Internal::Durable(durable)),
                    Err(reason) => self.on_internal(Internal::SyncFailed(reason)),
                }
            } else {
                for &position in &due {
                    if self.send_sync(position).is_err() {
                        break;
                    }
                }
            }
            // Keep the allocation for the next message.
            due.clear();
            if self.due.is_empty() {
                self.due = due;
                return;
            }
        }
    }

    /// Whether the positions `due` may be synced on this thread now. All of:
    /// (a) the inline path is on (`fsync` is `batch` or `always`), and in `always` mode `due`
    ///     is one position (one sync per commit);
    /// (b) `fsync_batch_max_delay_ms` is 0 (a configured delay means the operator wants
    ///     batching);
    /// (c) nothing is queued for this thread right now (no request, verifier result or
    ///     notice): whatever arrives next would otherwise wait for the sync;
    /// (d) no sync is in flight: every position sent to the fsync thread has come back durable
    ///     (`sent <= durable`; only this thread sends there, so it knows exactly).
    ///
    /// Why durability is unchanged: the call is the same [`LogSync::sync`] the fsync thread
    /// makes, over the same positions, and this thread publishes and answers only once it has
    /// returned, through the same `on_durable`; a failure poisons the write plane through the
    /// same handler as the fsync thread's notice, and `LogSync` never syncs again after it
    /// (nor is anything sent to the fsync thread: a poisoned writer appends nothing). By (d)
    /// the fsync thread has nothing queued, so the two never sync the same positions; were they
    /// ever to overlap, the log's `sync_lock` serializes them and `LogSync`'s durable position
    /// only grows. Under load (c) or (d) fails, and group commit batches as before.
    fn may_sync_inline(&self, due: &[u64]) -> bool {
        let Some(inline) = &self.inline_sync else {
            return false;
        };
        (!inline.always || due.len() == 1)
            && inline.batch_max_delay.is_zero()
            && self.p.requests.is_empty()
            && self.p.internal_rx.is_empty()
            && self.sent <= self.durable
    }

    /// Stage `work` (a `/commit` of a pending proposal or a verified `/submit`) and answer
    /// `reply` once it is durable. `may_hold`: whether work whose base is ahead of the staged
    /// head may wait for it.
    pub(super) fn commit(
        &mut self,
        work: Work,
        reply: Reply<Committed>,
        started: Instant,
        may_hold: bool,
    ) {
        // A held commit retried after a failure earlier in the same pass.
        if let Some(reason) = self.poisoned() {
            reply.send(Err(ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            ))));
            return;
        }
        let tried = match &work {
            Work::Commit(id) => self.try_commit(id),
            Work::Submit(submission, id) => self.try_submit(submission, id),
        };
        match tried {
            Ok(staged_version) => {
                // The audit line `msg=committed` is written once the record is durable.
                if let Some(last) = self.waiting.back_mut() {
                    if last.version == staged_version {
                        last.waiter = Some((reply, started));
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
                    if let Some(base) = self.ahead_of_staged(&work) {
                        let settings = self.p.settings.load();
                        if !settings.commit_wait.is_zero() && self.held_count < settings.max_pending
                        {
                            log::debug!(
                                "msg=\"commit held\" corr_id={} proposal_id={} base_version={base} staged={}",
                                reply.corr_id,
                                work.proposal_id(),
                                self.staged.version()
                            );
                            self.held.entry(base).or_default().push_back(super::Held {
                                work,
                                reply,
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
                    "msg=\"commit refused\" corr_id={} proposal_id={} error={}",
                    reply.corr_id,
                    work.proposal_id(),
                    e.code.as_str()
                );
                reply.send(Err(e));
            }
        }
    }

    /// Stage the commit of pending proposal `id`: returns its version. Nothing changes on error.
    fn try_commit(&mut self, id: &str) -> Result<u64, ApiError> {
        let now = self.now();
        let base = self.staged.clone();
        let (count, proposal, bytes) = {
            let p = self.live(id)?;
            // The set in force at the proposal's base (docs/FORMATS.md), and for a set_signers the new
            // set too: both quorums must be met.
            let in_force = base.signers.set_at(p.proposal.base_version);
            (tally(p, in_force, now), p.proposal.clone(), p.bytes.clone())
        };
        self.stage(id, count, proposal, bytes)
    }

    /// The commit step shared by `/commit` and `/submit`, once the approvals are counted:
    /// quorum → CAS on the staged head → apply → append → queue for the sync. Returns the
    /// staged version. Nothing changes on error.
    pub(super) fn stage(
        &mut self,
        id: &str,
        count: QuorumCount,
        proposal: Arc<Proposal>,
        bytes: Arc<[u8]>,
    ) -> Result<u64, ApiError> {
        let base = self.staged.clone();
        if let Some(why) = count.shortfall_message() {
            return Err(ApiError::new(Code::QuorumNotMet, why));
        }
        // §4's S: every signature that counted for either quorum, sorted by keyid.
        let approvals = count.signatures;
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
            // The injected clock, so a simulated run stamps simulated time (not hashed).
            committed_at_ms: (self.p.clock_ms)(),
            proposal_id: id.to_string(),
            payload: bytes,
            signatures: approvals,
            descriptors: descriptors.len() as u64,
            genesis_signers: None,
        });
        let new_signers = proposal.new_signers().cloned();
        self.stage_record(&base, record, descriptors, new_signers, false)?;
        // `pending_ops` mirrors `pending` (filled and emptied together), so only a proposal
        // that was pending has ops to drop; a `/submit` (usually nothing pending at all) skips
        // both look-ups and the shared map's lock.
        if !self.pending.is_empty() && self.pending.remove(id).is_some() {
            self.pending_ops.remove(id);
        }
        self.remember_committed(id.to_string(), version);
        Ok(version)
    }

    /// A follower's verified record (see [`super::WriteRequest::Apply`]): stage it exactly as
    /// it is, answered like a commit once durable.
    pub(super) fn apply(
        &mut self,
        record: Arc<CommitRecord>,
        proposal: Arc<Proposal>,
        reply: Reply<Committed>,
    ) {
        if let Some(reason) = self.poisoned() {
            reply.send(Err(ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            ))));
            return;
        }
        let base = self.staged.clone();
        let version = base.version() + 1;
        // The follower verified the chain; this is the last guard that what is stored extends
        // the staged head (a second follower loop, a bug) and that its unhashed descriptor
        // count is the one its ops give.
        if record.version != version || record.prev_hash != base.head.hash {
            reply.send(Err(ApiError::conflict(format!(
                "record {} does not extend the staged head {} ({})",
                record.version,
                base.version(),
                base.head.hash
            ))));
            return;
        }
        let descriptors = match state::apply(&base.descriptors, &proposal.ops, version) {
            Ok(d) => d,
            Err(e) => return reply.send(Err(e)),
        };
        if descriptors.len() as u64 != record.descriptors {
            reply.send(Err(ApiError::conflict(format!(
                "record {version} says {} descriptors, its ops give {}",
                record.descriptors,
                descriptors.len()
            ))));
            return;
        }
        let new_signers = proposal.new_signers().cloned();
        // More requests queued (a follower hands over a page of applies at once): their sync
        // (or, without one, their publication) waits for the last of them, so one group
        // commit covers the page instead of each version asking on its own.
        let defer = !self.p.requests.is_empty() && self.unsynced_count < APPLY_GROUP_MAX;
        match self.stage_record(&base, record, descriptors, new_signers, defer) {
            Ok(staged_version) => {
                if let Some(last) = self.waiting.back_mut() {
                    if last.version == staged_version {
                        last.waiter = Some((reply, Instant::now()));
                    }
                }
                if !defer && !self.p.journal.needs_sync() {
                    let position = self.waiting.back().map_or(0, |s| s.position);
                    self.on_durable(position);
                }
            }
            Err(e) => reply.send(Err(e)),
        }
    }

    /// Ask for the sync (or, for a journal that needs none, publish) of what applies staged
    /// without asking. Called before the writer's loop blocks, so nothing deferred waits for
    /// a request that may never come (simulations driving the writer step by step call it
    /// where the loop would).
    pub fn sync_deferred(&mut self) {
        let Some(position) = self.unsynced.take() else {
            return;
        };
        self.unsynced_count = 0;
        if !self.p.journal.needs_sync() {
            self.on_durable(position);
            return;
        }
        // A failure poisoned the write plane, which answered every waiting apply.
        let _ = self.ask_sync(position);
    }

    /// Append `record` (version `base + 1`, state `descriptors`) to the journal, stage its
    /// snapshot and ask for its sync (with `defer`, leave that to [`Writer::sync_deferred`]).
    /// Commits and a follower's applies share it, so both store and publish alike. Nothing is
    /// staged on error.
    fn stage_record(
        &mut self,
        base: &Arc<crate::snapshot::Snapshot>,
        record: Arc<CommitRecord>,
        descriptors: crate::domain::state::Descriptors,
        new_signers: Option<Arc<crate::domain::signers::SignerSet>>,
        defer: bool,
    ) -> Result<u64, ApiError> {
        let version = record.version;
        // Encoded once: the log frame's payload and the published head body.
        let (json, head_json) = record.encode();
        let position = self.append_frame(&json, "commit")?;
        if let Some(set) = &new_signers {
            log::info!(
                "msg=\"set_signers staged\" audit=1 version={version} threshold={} keys={} signers_digest={}",
                set.threshold,
                set.keys.len(),
                set.digest()
            );
        }
        // The journal refuses payloads past a segment (< 4 GiB), so the length fits.
        let loc = Loc {
            end: position,
            len: json.len() as u32,
        };
        let snapshot =
            Arc::new(base.next_encoded(record, head_json, descriptors, loc, new_signers));
        self.staged = snapshot.clone();
        self.waiting.push_back(Staged {
            version,
            position,
            snapshot,
            waiter: None,
        });
        if defer {
            self.unsynced = Some(position);
            self.unsynced_count += 1;
            return Ok(version);
        }
        // A later position covers the deferred ones.
        self.unsynced = None;
        self.unsynced_count = 0;
        self.ask_sync(position)?;
        Ok(version)
    }

    /// Publish the newest staged version at or before `position` and answer its commits.
    pub(super) fn on_durable(&mut self, position: u64) {
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
        let Some(snapshot) = newest else {
            self.acks_durable(position);
            return;
        };
        self.p.snapshot.store(snapshot.clone());
        m().registry_head_version.set(snapshot.version() as i64);
        m().registry_commits_total.inc_by(made_visible.len() as u64);
        // Every audit line first, then the answers (the pending acks this sync covers, then the
        // commits): the first answer writes all the batched lines in one write(2), still before
        // any 2xx leaves.
        for ((reply, started), record) in &answers {
            m().commit_latency_seconds
                .observe(started.elapsed().as_secs_f64());
            log::info!(
                "msg=committed audit=1 corr_id={} proposal_id={} version={} hash={}",
                reply.corr_id,
                record.proposal_id,
                record.version,
                record.hash
            );
        }
        self.acks_durable(position);
        for ((reply, _), record) in answers {
            reply.send(Ok(Committed {
                version: record.version,
                hash: record.hash.clone(),
            }));
        }
        // What a client may read right after its answer is set first (the snapshot above, the
        // pending gauge here); then the answered workers are woken, and only then do the
        // publishers (tlog feed, stream, bus, checkpoint nudge, log gauges) wake their threads:
        // at one client their wake-ups and the threads they start sat between sync and 2xx.
        self.expire();
        crate::wake::flush();
        self.p.publisher.published(&snapshot, &made_visible);
    }
}
