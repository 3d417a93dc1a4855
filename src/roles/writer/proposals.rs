//! Proposals: propose, get, approve (with signatures verified on the verifier pool).
//!
//! Invariant: a proposal is pending until committed or expired; an approval is recorded only
//! after every signature of its request verified, and only for a proposal still live then.
//! Approvals are judged against the signer set in force at the proposal's base version (the
//! staged snapshot's history) and, for a `set_signers`, also the set it puts in force.

use super::{
    Accepted, Ack, Approval, ApproveInFlight, Approved, DiffEntry, Pending, ProposalState,
    ProposalView, Submitted, Writer, CANDIDATES,
};
use crate::domain::dsse;
use crate::domain::pending::{PendingApproval, PendingFrame};
use crate::domain::proposal::{self, Op};
use crate::domain::quorum::{self, QuorumCount};
use crate::domain::signers::{set_change, PublicKey, Sig, SignerSet};
use crate::error::{ApiError, Code};
use crate::metrics::m;
use crate::roles::reply::Reply;
use crate::roles::verifier::{Verified, VerifyJob};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Writer {
    /// Accept a proposal: returns the answer and the journal position its pending frame must be
    /// durable at before the answer is sent.
    pub(super) fn propose(
        &mut self,
        bytes: Vec<u8>,
        corr_id: &str,
    ) -> Result<(Accepted, u64), ApiError> {
        let settings = self.p.settings.load();
        // A set_signers proposal is validated like the config by the parser (docs/FORMATS.md); its
        // double quorum is counted at approve and commit time.
        let parsed = proposal::parse(&bytes, &self.p.registry_id, &settings.limits)?;
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
                // Idempotent; answered once its first frame is durable, like the first time.
                return Ok((
                    Accepted {
                        proposal_id: id,
                        expires_at: p.expires_unix,
                    },
                    p.last_frame,
                ));
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
                // Evicted even if the append below fails: it could never commit anyway.
                Some(old) => {
                    self.pending.remove(&old);
                    self.pending_ops.remove(&old);
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
        // Durable before the 202 (docs/FORMATS.md): the frame goes through the journal first, and a
        // failed append changes nothing.
        let frame = self.append_pending(
            PendingFrame::Proposal {
                proposal_id: id.clone(),
                payload: dsse::b64(&bytes),
                expires_at: expires_unix,
            },
            Some(parsed.base_version),
        )?;
        let bytes: Arc<[u8]> = bytes.into();
        let parsed = Arc::new(parsed);
        self.pending_ops.insert(id.clone(), parsed.clone());
        self.pending.insert(
            id.clone(),
            Pending {
                pae: dsse::pae(&bytes).into(),
                bytes,
                proposal: parsed,
                expires_unix,
                approvals: BTreeMap::new(),
                expired: false,
                last_frame: frame,
            },
        );
        self.expire();
        log::info!(
            "msg=proposed corr_id={corr_id} proposal_id={id} base_version={}",
            { self.pending[&id].proposal.base_version }
        );
        Ok((
            Accepted {
                proposal_id: id,
                expires_at: expires_unix,
            },
            frame,
        ))
    }

    /// The pending proposal `id`, or the error a client should see for it.
    pub(super) fn live(&mut self, id: &str) -> Result<&mut Pending, ApiError> {
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

    pub(super) fn get_proposal(&mut self, id: &str) -> Result<ProposalView, ApiError> {
        let now = self.now();
        let history = self.staged.signers.clone();
        if let Some(&version) = self.committed.get(id) {
            let rec = self
                .staged
                .record(version)
                .map_err(|e| match self.staged.history.oldest_version() {
                    // Its record left the retention window (SPEC §14).
                    oldest if version < oldest => ApiError::new(
                        crate::error::Code::Expired,
                        crate::history::expired_message(version, oldest),
                    ),
                    _ => crate::api::history_unreadable(version, &e),
                })?
                .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
            let mut keyids: Vec<String> = rec.signatures.iter().map(|(k, _)| k.clone()).collect();
            keyids.dedup();
            return Ok(ProposalView {
                proposal_id: id.to_string(),
                payload: rec.payload.clone(),
                approvals: keyids,
                threshold: history.set_at(version - 1).threshold,
                state: ProposalState::Committed { version },
                diff: Vec::new(),
                new_quorum: None,
                signers_change: None,
            });
        }
        let p = self
            .pending
            .get_mut(id)
            .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
        if now >= p.expires_unix {
            p.expired = true;
        }
        let p = &*p;
        let (base_version, expires_at) = (p.proposal.base_version, p.expires_unix);
        let state = if p.expired {
            ProposalState::Expired {
                base_version,
                expires_at,
            }
        } else {
            ProposalState::Pending {
                base_version,
                expires_at,
            }
        };
        let in_force = history.set_at(base_version);
        let current = self.p.snapshot.load();
        let diff = p
            .proposal
            .ops
            .iter()
            .filter_map(|op| {
                let (kind, oid) = op.descriptor_target()?;
                let cur = current
                    .descriptors
                    .get(kind, oid)
                    .and_then(|d| RawValue::from_string(d.body().to_string()).ok())
                    .map(Arc::from);
                let (name, proposed) = match op {
                    Op::Put { body, .. } => ("put", Some(body.clone())),
                    Op::Delete { .. } => ("delete", None),
                    // Filtered out above: a set_signers targets no descriptor.
                    Op::SetSigners { .. } => return None,
                };
                Some(DiffEntry {
                    op: name,
                    kind,
                    id: oid.clone(),
                    current: cur,
                    proposed,
                })
            })
            .collect();
        let count = tally(p, in_force, now);
        Ok(ProposalView {
            proposal_id: id.to_string(),
            payload: p.bytes.clone(),
            approvals: counted_keyids(&count),
            threshold: in_force.threshold,
            state,
            diff,
            new_quorum: count.new.map(|t| (t.counted, t.threshold)),
            signers_change: p
                .proposal
                .new_signers()
                .map(|new| set_change(in_force, new)),
        })
    }

    pub(super) fn approve(
        &mut self,
        id: String,
        signatures: Vec<(String, Sig)>,
        reply: Reply<Approved>,
    ) {
        let history = self.staged.signers.clone();
        let now = self.now();
        let p = match self.live(&id) {
            Ok(p) => p,
            Err(e) => return reply.send(Err(e)),
        };
        if signatures.is_empty() {
            return reply.send(Err(ApiError::bad_request("signatures is empty")));
        }
        // Approvals are judged against the set in force at the proposal's base (docs/FORMATS.md) and,
        // for a set_signers, also against the set it puts in force: a key only in the new set
        // may approve it (it must, for the new quorum).
        let base = p.proposal.base_version;
        let (since, in_force) = history.in_force_at(base);
        let new = p.proposal.new_signers().cloned();
        // Look every keyid up first: an unknown or out-of-window key refuses the whole request.
        let mut submitted = Vec::with_capacity(signatures.len());
        for (keyid, sig) in signatures {
            let mut candidates =
                match candidate_keys(&keyid, in_force, new.as_deref(), base, since, now) {
                    Ok(c) => c,
                    Err(e) => return reply.send(Err(e)),
                };
            // A signature already recorded for the same key is idempotent: nothing to verify.
            for c in &mut candidates {
                c.1 = p
                    .approvals
                    .get(&(keyid.clone(), c.0.to_bytes()))
                    .is_some_and(|a| a.sig == sig);
            }
            submitted.push(Submitted {
                keyid,
                sig,
                candidates,
            });
        }
        let pae = p.pae.clone();
        let request = self.next_request;
        self.next_request += 1;
        let mut jobs = Vec::new();
        for (i, s) in submitted.iter().enumerate() {
            if s.candidates.iter().any(|c| c.1) {
                continue;
            }
            for (c, (public, _)) in s.candidates.iter().enumerate() {
                jobs.push(VerifyJob {
                    key: public.clone(),
                    sig: s.sig.clone(),
                    pae: pae.clone(),
                    request,
                    index: i * CANDIDATES + c,
                });
            }
        }
        let inflight = ApproveInFlight {
            proposal_id: id,
            signatures: submitted,
            remaining: jobs.len(),
            reply,
        };
        let none = jobs.is_empty();
        match self.start_verifying(jobs) {
            Err(msg) => inflight.reply.send(Err(ApiError::busy(msg))),
            Ok(_) if none => self.finish_approve(inflight),
            Ok(inline) => {
                self.approvals_in_flight.insert(request, inflight);
                if let Some(verified) = inline {
                    self.on_verified(verified);
                }
            }
        }
    }

    pub(super) fn on_verified(&mut self, v: Verified) {
        let Some(entry) = self.approvals_in_flight.get_mut(&v.request) else {
            return;
        };
        if record_verified(&mut entry.signatures, &mut entry.remaining, &v) {
            let entry = self
                .approvals_in_flight
                .remove(&v.request)
                .expect("entry exists");
            self.finish_approve(entry);
        }
    }

    fn finish_approve(&mut self, a: ApproveInFlight) {
        if let Some(bad) = a
            .signatures
            .iter()
            .find(|s| !s.candidates.iter().any(|c| c.1))
        {
            let keyid = &bad.keyid;
            log::warn!(
                "msg=\"approval refused\" audit=1 corr_id={} proposal_id={} keyid={keyid:?} reason=bad_signature",
                a.reply.corr_id,
                a.proposal_id
            );
            let e = ApiError::forbidden(format!(
                "signature by {keyid:?} does not verify over the DSSE PAE of this proposal"
            ));
            return a.reply.send(Err(e));
        }
        // Storage failed while the signatures verified: nothing can be made durable any more.
        if let Some(reason) = self.poisoned() {
            return a.reply.send(Err(ApiError::unavailable(format!(
                "write plane stopped: {reason}"
            ))));
        }
        let history = self.staged.signers.clone();
        let now = self.now();
        // Re-check: the proposal may have been committed or expired while signatures verified.
        let p = match self.live(&a.proposal_id) {
            Ok(p) => p,
            Err(e) => return a.reply.send(Err(e)),
        };
        // The approvals this request adds; they are recorded only once their frame is
        // appended (a failed append changes nothing), and answered once it is durable.
        let mut new = Vec::new();
        for s in &a.signatures {
            for (public, ok) in &s.candidates {
                let key = (s.keyid.clone(), public.to_bytes());
                if *ok && !p.approvals.contains_key(&key) && !new.iter().any(|(k, _, _)| *k == key)
                {
                    new.push((key, public.to_text(), s.sig.clone()));
                }
            }
        }
        if !new.is_empty() {
            let frame = PendingFrame::Approvals {
                proposal_id: a.proposal_id.clone(),
                approvals: new
                    .iter()
                    .map(|((keyid, _), public_text, sig)| PendingApproval {
                        keyid: keyid.clone(),
                        public_key: public_text.clone(),
                        sig: sig.encode(),
                    })
                    .collect(),
            };
            let position = match self.append_pending(frame, None) {
                Ok(position) => position,
                Err(e) => return a.reply.send(Err(e)),
            };
            let p = self.pending.get_mut(&a.proposal_id).expect("live above");
            p.last_frame = position;
            for (key, _, sig) in new {
                p.approvals.insert(key, Approval { sig });
            }
        }
        let p = self.pending.get(&a.proposal_id).expect("live above");
        let in_force = history.set_at(p.proposal.base_version);
        let count = tally(p, in_force, now);
        let k = count.in_force.counted;
        log::info!(
            "msg=approved audit=1 corr_id={} proposal_id={} keyids={:?} approvals={k} threshold={}{}",
            a.reply.corr_id,
            a.proposal_id,
            a.signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect::<Vec<_>>()
                .join(","),
            in_force.threshold,
            count
                .new
                .map(|t| format!(" new_approvals={} new_threshold={}", t.counted, t.threshold))
                .unwrap_or_default()
        );
        let approved = Approved {
            proposal_id: a.proposal_id,
            approvals: k,
            threshold: in_force.threshold,
            new_quorum: count.new.map(|t| (t.counted, t.threshold)),
        };
        let frame = p.last_frame;
        self.ack_after(frame, Ack::Approve(a.reply, approved));
    }
}

/// Count `p`'s approvals against `in_force` (the set at its base) and, for a set_signers, the
/// new set: by distinct public key, each valid `now` (docs/FORMATS.md; `quorum::count` decides).
pub(super) fn tally(p: &Pending, in_force: &SignerSet, now: i64) -> QuorumCount {
    let approvals: Vec<quorum::Approval> = p
        .approvals
        .iter()
        .map(|((keyid, public), a)| quorum::Approval {
            keyid: keyid.clone(),
            public_key: public.clone(),
            sig: a.sig.encode(),
            verified: true,
            at_unix: now,
        })
        .collect();
    quorum::count(in_force, p.proposal.new_signers().map(|s| &**s), &approvals)
}

/// Keyids whose approvals count for either quorum, sorted, each once.
fn counted_keyids(count: &QuorumCount) -> Vec<String> {
    let mut keyids: Vec<String> = count.signatures.iter().map(|(k, _)| k.clone()).collect();
    keyids.dedup();
    keyids
}

/// Record verifier result `v` on the signatures of its request (`/approve` or `/submit`):
/// `v.index` is `signature * CANDIDATES + candidate`. Returns whether it was the request's last
/// outstanding result.
pub(super) fn record_verified(
    signatures: &mut [Submitted],
    remaining: &mut usize,
    v: &Verified,
) -> bool {
    *remaining -= 1;
    if v.ok {
        let (i, c) = (v.index / CANDIDATES, v.index % CANDIDATES);
        if let Some(cand) = signatures.get_mut(i).and_then(|s| s.candidates.get_mut(c)) {
            cand.1 = true;
        }
    }
    *remaining == 0
}

/// The distinct public keys `keyid` names in the sets that judge a proposal on `base` — the
/// set in force (`in_force`, since version `since`) and, for a `set_signers`, the `new` one —
/// valid at `now`, each not yet verified. Refused (403) when no set names the keyid or none of
/// its keys is valid now: `/approve` and `/submit` look every keyid up before verifying any.
pub(super) fn candidate_keys(
    keyid: &str,
    in_force: &SignerSet,
    new: Option<&SignerSet>,
    base: u64,
    since: u64,
    now: i64,
) -> Result<Vec<(PublicKey, bool)>, ApiError> {
    let mut named = false;
    let mut candidates: Vec<(PublicKey, bool)> = Vec::new();
    for set in std::iter::once(in_force).chain(new) {
        if let Some(slot) = set.slot(keyid) {
            named = true;
            let key = &set.keys[slot];
            if key.valid_at(now) && !candidates.iter().any(|c| c.0 == key.public) {
                candidates.push((key.public.clone(), false));
            }
        }
    }
    if !named {
        let also = if new.is_some() {
            " nor of the new set"
        } else {
            ""
        };
        return Err(ApiError::forbidden(format!(
            "keyid {keyid:?} is not a configured signer of the set in force at base version \
             {base} (since version {since}){also}"
        )));
    }
    if candidates.is_empty() {
        return Err(ApiError::forbidden(format!(
            "key {keyid:?} is outside its validity window"
        )));
    }
    Ok(candidates)
}
