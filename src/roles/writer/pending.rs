//! Durable pending proposals and approvals (docs/FORMATS.md): each `/propose` and `/approve` appends a
//! pending frame to the journal and is answered only once the journal is durable past it —
//! through the same group-commit path as commits (one sync covers every frame and record
//! appended before it; no sync of its own). At start-up the restored frames become pending
//! proposals again, with their absolute expiry.
//!
//! Invariant: a 202 or 200 is sent only when `durable` (the fsync thread's notices, or the
//! writer's own sync when idle) has reached the position of the frame that recorded it, or at once when the journal needs no sync
//! (`--amnesia`, `fsync = "never"`); a failed append changes nothing and answers the error.

use super::{Ack, Approval, JournalError, Pending, Writer, STOPPED};
use crate::domain::dsse;
use crate::domain::pending::{PendingFrame, RestoredPending};
use crate::domain::proposal;
use crate::error::{ApiError, Code};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Writer {
    /// Append a pending frame and ask for its sync; returns the journal position past it. The
    /// frame then goes to the checkpoint thread's feed, if any (`base_version`: a proposal's).
    pub(super) fn append_pending(
        &mut self,
        frame: PendingFrame,
        base_version: Option<u64>,
    ) -> Result<u64, ApiError> {
        let position = self.append_frame(&frame.to_bytes(), "pending frame")?;
        self.ask_sync(position)?;
        if let Some(feed) = &self.pending_feed {
            // The frame is dropped here anyway: moving it costs the writer a `try_send`.
            feed.send(position, frame, base_version);
        }
        Ok(position)
    }

    /// Hand every pending frame appended from now on to the checkpoint thread (`app` does, with
    /// durable storage), which then need not read them back from the log.
    pub fn feed_pending(&mut self, feed: Option<crate::roles::checkpoint::PendingFeed>) {
        self.pending_feed = feed;
    }

    /// Append one frame (a commit record or a pending frame) to the journal, mapping its
    /// refusals: a full disk is 507 and a record too large for a segment 413, both with nothing
    /// written; any other failure poisons the write plane (503).
    pub(super) fn append_frame(&mut self, bytes: &[u8], what: &str) -> Result<u64, ApiError> {
        match self.p.journal.append(bytes) {
            Ok(pos) => Ok(pos),
            Err(JournalError::NoSpace(msg)) => {
                log::error!("msg=\"{what} refused: disk full\" error={msg:?}");
                Err(ApiError::new(
                    Code::StorageFull,
                    format!("disk full: {msg}"),
                ))
            }
            Err(JournalError::TooLarge(msg)) => Err(ApiError::too_large(msg)),
            Err(JournalError::Failed(msg)) => {
                self.poison(format!("log append failed: {msg}"));
                Err(ApiError::unavailable(STOPPED))
            }
        }
    }

    /// Answer `ack` once the journal is durable at `position` (at once if it already is, or if
    /// the journal needs no sync).
    pub(super) fn ack_after(&mut self, position: u64, ack: Ack) {
        if !self.p.journal.needs_sync() || position <= self.durable {
            ack.send();
        } else {
            self.acks.push_back((position, ack));
        }
    }

    /// The journal is durable up to `position`: answer the acks it covers.
    pub(super) fn acks_durable(&mut self, position: u64) {
        self.durable = self.durable.max(position);
        while self.acks.front().is_some_and(|(p, _)| *p <= self.durable) {
            let (_, ack) = self.acks.pop_front().expect("front exists");
            ack.send();
        }
    }

    /// Take back the pending proposals restored from the log: those not expired now and still
    /// able to commit (based at or after the staged head). Returns how many came back.
    pub fn restore_pending(&mut self, restored: Vec<RestoredPending>) -> usize {
        let now = self.now();
        let head = self.staged.version();
        let limits = self.p.settings.load().limits;
        let mut back = 0;
        for r in restored {
            if now >= r.expires_at {
                continue;
            }
            let parsed = match proposal::parse(&r.payload, &self.p.registry_id, &limits) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!(
                        "msg=\"pending proposal not restored\" proposal_id={} error={:?}",
                        r.proposal_id,
                        e.message
                    );
                    continue;
                }
            };
            if parsed.base_version < head {
                // It lost its compare-and-swap before the restart: nothing can commit it.
                continue;
            }
            let approvals: BTreeMap<(String, Vec<u8>), Approval> = r
                .approvals
                .into_iter()
                .map(|(keyid, public, sig)| ((keyid, public), Approval { sig }))
                .collect();
            let bytes: Arc<[u8]> = r.payload.into();
            let parsed = Arc::new(parsed);
            self.pending_ops
                .insert(r.proposal_id.clone(), parsed.clone());
            self.pending.insert(
                r.proposal_id,
                Pending {
                    pae: dsse::pae(&bytes).into(),
                    bytes,
                    proposal: parsed,
                    expires_unix: r.expires_at,
                    approvals,
                    expired: false,
                    last_frame: 0,
                },
            );
            back += 1;
        }
        self.expire();
        back
    }
}
