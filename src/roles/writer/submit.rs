//! One-request writes (`POST /submit`, docs/API.md): the proposal and signatures of a DSSE
//! envelope are proposed, approved and committed as one step of the writer.
//!
//! Order of the checks — each answers what the first failing step of propose → approve →
//! commit would answer: the proposal parses and fits its limits (400/413), it is not already
//! committed (409 naming the version) and its base is not behind the staged head (409); every
//! keyid names a key of the set in force at the base (or of a `set_signers`' new set), valid now
//! (403); every signature verifies on the verifier pool (403); then the commit step shared with
//! `/commit` ([`Writer::stage`]): not expired (410), quorum by distinct public key — both
//! quorums for a `set_signers` (412) —, CAS on the staged head (409, or held like a commit while
//! its base is still on its way), apply (409), append (507/413/503), answered after the sync.
//!
//! Invariant: a submit never enters the pending map and never appends a pending frame, so a
//! refusal at any step leaves nothing behind (no proposal, no approvals), and a crash before its
//! sync loses only what was never acknowledged. Because its commit record goes through the same
//! staging queue as `/commit`, one sync covers submits and commits alike (group commit).

use super::proposals::{candidate_keys, record_verified, tally};
use super::{Approval, Committed, Pending, SubmitCommitted, Submitted, Work, Writer, CANDIDATES};
use crate::domain::algs::Sig;
use crate::domain::dsse;
use crate::domain::proposal;
use crate::error::{ApiError, Code};
use crate::metrics::m;
use crate::roles::reply::Reply;
use crate::roles::verifier::{Verified, VerifyJob};
use crossbeam_channel::TrySendError;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// A submit whose signatures are on the verifier pool.
pub(super) struct SubmitInFlight {
    /// The proposal as a pending entry that is never inserted: its approvals are filled in
    /// from the verified signatures and counted by the same `tally` as `/commit`'s.
    submission: Box<Pending>,
    proposal_id: String,
    signatures: Vec<Submitted>,
    remaining: usize,
    reply: Reply<SubmitCommitted>,
    started: Instant,
}

impl Writer {
    /// Handle a `/submit`: admit it (the propose and approve steps' checks), then verify its
    /// signatures on the pool; [`Writer::on_submit_verified`] carries on.
    pub(super) fn submit(
        &mut self,
        bytes: Vec<u8>,
        signatures: Vec<(String, Sig)>,
        reply: Reply<SubmitCommitted>,
    ) {
        let started = Instant::now();
        let (submission, proposal_id, signatures) = match self.admit_submit(bytes, signatures) {
            Ok(admitted) => admitted,
            Err(e) => {
                log::info!(
                    "msg=\"submit refused\" corr_id={} error={} reason={:?}",
                    reply.corr_id,
                    e.code.as_str(),
                    e.message
                );
                return reply.send(Err(e));
            }
        };
        let request = self.next_request;
        self.next_request += 1;
        // Sized exactly: a job is a few hundred bytes, and a grown vector of them is an
        // allocation past malloc's per-thread cache.
        let mut jobs = Vec::with_capacity(signatures.iter().map(|s| s.candidates.len()).sum());
        for (i, s) in signatures.iter().enumerate() {
            for (c, (public, _)) in s.candidates.iter().enumerate() {
                // The signer set's parsed key: no point decompression on the writer thread.
                jobs.push(VerifyJob {
                    key: public.clone(),
                    sig: s.sig.clone(),
                    pae: submission.pae.clone(),
                    request,
                    index: i * CANDIDATES + c,
                });
            }
        }
        // Every signature has at least one candidate key (admit_submit refused it otherwise),
        // so at least one job is queued and its result finishes the submit.
        debug_assert!(!jobs.is_empty());
        let remaining = jobs.len();
        let in_flight = SubmitInFlight {
            submission,
            proposal_id,
            signatures,
            remaining,
            reply,
            started,
        };
        match self.start_verifying(jobs) {
            Err(msg) => in_flight
                .reply
                .send(Err(ApiError::busy(msg).retry_after(1))),
            Ok(inline) => {
                self.submits_in_flight.insert(request, in_flight);
                if let Some(verified) = inline {
                    self.on_submit_verified(verified);
                }
            }
        }
    }

    /// Start verifying a request's `jobs`: a lone one here, when the writer and the pool are
    /// idle ([`Writer::verify_inline_when_idle`]: its result is returned, to be handled as the
    /// pool's would be), or all of them queued on the pool (their results come back on the
    /// internal channel, after this message). Err: the pool's queue refused a job (counted as
    /// a busy rejection); jobs already queued come back and find no request in flight.
    pub(super) fn start_verifying(
        &mut self,
        jobs: Vec<VerifyJob>,
    ) -> Result<Option<Verified>, &'static str> {
        if jobs.len() == 1 && self.idle_for_inline_verify() {
            // A lone write: its one signature costs the same here as on the pool, without the
            // two thread hand-offs there and back.
            return Ok(Some(crate::roles::verifier::verify(&jobs[0])));
        }
        for job in jobs {
            if let Err(e) = self.p.verify_tx.try_send(job) {
                m().rejected_total.with_label_values(&["busy"]).inc();
                return Err(match e {
                    TrySendError::Full(_) => "the verifier queue is full",
                    TrySendError::Disconnected(_) => "the verifier pool is gone",
                });
            }
        }
        Ok(None)
    }

    /// Whether a verification may run on this thread: enabled, and nothing waits for the
    /// writer (no request, result or durability notice queued) or for the pool (no job queued,
    /// no approval or submit in flight). Racy by nature and harmless either way: a request
    /// arriving meanwhile waits one verification, as it would behind any other step.
    fn idle_for_inline_verify(&self) -> bool {
        self.verify_inline
            && self.p.requests.is_empty()
            && self.p.internal_rx.is_empty()
            && self.p.verify_tx.is_empty()
            && self.approvals_in_flight.is_empty()
            && self.submits_in_flight.is_empty()
    }

    /// The propose and approve steps' checks, in their order; nothing is recorded.
    fn admit_submit(
        &mut self,
        bytes: Vec<u8>,
        signatures: Vec<(String, Sig)>,
    ) -> Result<(Box<Pending>, String, Vec<Submitted>), ApiError> {
        let settings = self.p.settings.load();
        let parsed = proposal::parse(&bytes, &self.p.registry_id, &settings.limits)?;
        let id = crate::domain::sha256_hex(&bytes);
        let base = parsed.base_version;
        self.already_committed(&id, base)?;
        let head = self.staged.version();
        if base < head {
            m().registry_cas_conflicts_total.inc();
            return Err(ApiError::conflict(format!(
                "base_version {base} is behind HEAD {head}"
            )));
        }
        if signatures.is_empty() {
            return Err(ApiError::bad_request("signatures is empty"));
        }
        let now = self.now();
        let history = self.staged.signers.clone();
        let (since, in_force) = history.in_force_at(base);
        let new = parsed.new_signers().cloned();
        // Every keyid is looked up before anything is verified: an unknown or out-of-window key
        // refuses the whole envelope, as it refuses a whole `/approve`.
        let mut submitted = Vec::with_capacity(signatures.len());
        for (keyid, sig) in signatures {
            let candidates = candidate_keys(&keyid, in_force, new.as_deref(), base, since, now)?;
            submitted.push(Submitted {
                keyid,
                sig,
                candidates,
            });
        }
        let bytes: Arc<[u8]> = bytes.into();
        let submission = Box::new(Pending {
            pae: dsse::pae(&bytes).into(),
            bytes,
            proposal: Arc::new(parsed),
            // The time-to-live a proposal made now would have: a submit held or verifying past
            // it is refused 410 like a commit of an expired proposal.
            expires_unix: now + settings.ttl.as_secs() as i64,
            approvals: BTreeMap::new(),
            expired: false,
            last_frame: 0,
        });
        Ok((submission, id, submitted))
    }

    /// `409` naming the version when proposal `id` (based on `base`) is already committed: the
    /// remembered ids first, then — for an id older than that memory — the record at
    /// `base + 1`, the only version the proposal could have committed at.
    fn already_committed(&self, id: &str, base: u64) -> Result<(), ApiError> {
        let version = match self.committed.get(id) {
            Some(&v) => Some(v),
            None if base < self.staged.version() => self
                .staged
                .record(base + 1)
                .ok()
                .flatten()
                .filter(|r| r.proposal_id == id)
                .map(|r| r.version),
            None => None,
        };
        match version {
            Some(v) => Err(ApiError::conflict(format!(
                "proposal {id} is already committed at version {v}"
            ))),
            None => Ok(()),
        }
    }

    /// One verifier result for a submit in flight; the last one finishes it.
    pub(super) fn on_submit_verified(&mut self, v: Verified) {
        let Some(entry) = self.submits_in_flight.get_mut(&v.request) else {
            return;
        };
        if record_verified(&mut entry.signatures, &mut entry.remaining, &v) {
            let entry = self
                .submits_in_flight
                .remove(&v.request)
                .expect("entry exists");
            self.finish_submit(entry);
        }
    }

    /// Every signature verified (or one did not): record the approvals on the submission and
    /// hand it to the commit step.
    fn finish_submit(&mut self, s: SubmitInFlight) {
        let SubmitInFlight {
            mut submission,
            proposal_id,
            signatures,
            reply,
            started,
            ..
        } = s;
        if let Some(bad) = signatures
            .iter()
            .find(|s| !s.candidates.iter().any(|c| c.1))
        {
            let keyid = &bad.keyid;
            log::warn!(
                "msg=\"submit refused\" audit=1 corr_id={} proposal_id={proposal_id} keyid={keyid:?} reason=bad_signature",
                reply.corr_id,
            );
            return reply.send(Err(ApiError::forbidden(format!(
                "signature by {keyid:?} does not verify over the DSSE PAE of this proposal"
            ))));
        }
        for s in &signatures {
            for (public, ok) in &s.candidates {
                // The first verified signature per (keyid, key) counts, as with `/approve`.
                if *ok {
                    submission
                        .approvals
                        .entry((s.keyid.clone(), public.to_bytes()))
                        .or_insert(Approval { sig: s.sig.clone() });
                }
            }
        }
        let id = proposal_id.clone();
        let corr_id = reply.corr_id.clone();
        let answer = Reply::new(corr_id, move |r: Result<Committed, ApiError>| {
            reply.send(r.map(|c| SubmitCommitted {
                version: c.version,
                hash: c.hash,
                proposal_id,
            }))
        });
        self.commit(Work::Submit(submission, id), answer, started, true);
    }

    /// The commit step of a verified submit: returns the staged version. Nothing changes on
    /// error.
    pub(super) fn try_submit(&mut self, s: &Pending, id: &str) -> Result<u64, ApiError> {
        // Committed while its signatures verified or while it was held (a twin submit, or the
        // same proposal through `/commit`).
        self.already_committed(id, s.proposal.base_version)?;
        let now = self.now();
        if now >= s.expires_unix {
            return Err(ApiError::new(
                Code::Expired,
                format!(
                    "proposal {id} expired at {} before it could commit",
                    crate::clock::rfc3339(s.expires_unix)
                ),
            ));
        }
        let staged = self.staged.clone();
        let in_force = staged.signers.set_at(s.proposal.base_version);
        let count = tally(s, in_force, now);
        self.stage(id, count, s.proposal.clone(), s.bytes.clone())
    }
}
