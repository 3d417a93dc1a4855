//! Proposals: propose, get, approve (with signatures verified on the verifier pool).
//!
//! Invariant: a proposal is pending until committed or expired; an approval is recorded only
//! after every signature of its request verified, and only for a proposal still live then.

use super::{
    Accepted, Approval, ApproveInFlight, Approved, DiffEntry, Pending, ProposalState, ProposalView,
    Writer,
};
use crate::domain::dsse;
use crate::domain::proposal::{self, Op};
use crate::domain::signers::SignerSet;
use crate::error::{ApiError, Code};
use crate::metrics::m;
use crate::roles::reply::Reply;
use crate::roles::verifier::{Verified, VerifyJob};
use crossbeam_channel::TrySendError;
use std::collections::BTreeMap;
use std::sync::Arc;

impl Writer {
    pub(super) fn propose(&mut self, bytes: Vec<u8>, corr_id: &str) -> Result<Accepted, ApiError> {
        let settings = self.p.settings.load();
        let parsed = proposal::parse(&bytes, &self.p.registry_id, &settings.limits)?;
        // The domain parses set_signers, but the writer does not count its double quorum or
        // keep the signer history yet: refuse it rather than commit it as a no-op.
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
                return Ok(Accepted {
                    proposal_id: id,
                    expires_at: p.expires_unix,
                });
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
        Ok(Accepted {
            proposal_id: id,
            expires_at: expires_unix,
        })
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
        let signers = self.p.signers.load_full();
        let now = self.now();
        if let Some(&version) = self.committed.get(id) {
            let rec = self
                .staged
                .record(version)
                .map_err(|e| crate::api::history_unreadable(version, &e))?
                .ok_or_else(|| ApiError::not_found(format!("no proposal {id}")))?;
            return Ok(ProposalView {
                proposal_id: id.to_string(),
                payload: rec.payload.clone(),
                approvals: rec.signatures.iter().map(|(k, _)| k.clone()).collect(),
                threshold: signers.threshold,
                state: ProposalState::Committed { version },
                diff: Vec::new(),
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
        let current = self.p.snapshot.load();
        let diff = p
            .proposal
            .ops
            .iter()
            .map(|op| {
                let (kind, oid) = op.target();
                let cur = current
                    .descriptors
                    .get(&(kind, oid.clone()))
                    .map(|d| d.body.clone());
                let (name, proposed) = match op {
                    Op::Put { body, .. } => ("put", Some(body.clone())),
                    Op::Delete { .. } => ("delete", None),
                    // Unreachable: propose refuses set_signers proposals.
                    Op::SetSigners { .. } => ("set_signers", None),
                };
                DiffEntry {
                    op: name,
                    kind,
                    id: oid.clone(),
                    current: cur,
                    proposed,
                }
            })
            .collect();
        Ok(ProposalView {
            proposal_id: id.to_string(),
            payload: p.bytes.clone(),
            approvals: counted(p, &signers, now),
            threshold: signers.threshold,
            state,
            diff,
        })
    }

    pub(super) fn approve(
        &mut self,
        id: String,
        signatures: Vec<(String, [u8; 64])>,
        reply: Reply<Approved>,
    ) {
        let signers = self.p.signers.load_full();
        let now = self.now();
        let p = match self.live(&id) {
            Ok(p) => p,
            Err(e) => return reply.send(Err(e)),
        };
        if signatures.is_empty() {
            return reply.send(Err(ApiError::bad_request("signatures is empty")));
        }
        // Look every keyid up first: an unknown or out-of-window key refuses the whole request.
        let mut checks = Vec::with_capacity(signatures.len());
        for (keyid, sig) in signatures {
            let Some(slot) = signers.slot(&keyid) else {
                return reply.send(Err(ApiError::forbidden(format!(
                    "keyid {keyid:?} is not a configured signer"
                ))));
            };
            let key = &signers.keys[slot];
            if !key.valid_at(now) {
                return reply.send(Err(ApiError::forbidden(format!(
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
            reply,
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
                return inflight.reply.send(Err(ApiError::busy(msg)));
            }
        }
        if to_verify.is_empty() {
            self.finish_approve(inflight);
        } else {
            self.approvals_in_flight.insert(request, inflight);
        }
    }

    pub(super) fn on_verified(&mut self, v: Verified) {
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
                a.reply.corr_id,
                a.proposal_id
            );
            let e = ApiError::forbidden(format!(
                "signature by {keyid:?} does not verify over the DSSE PAE of this proposal"
            ));
            return a.reply.send(Err(e));
        }
        let signers = self.p.signers.load_full();
        let now = self.now();
        // Re-check: the proposal may have been committed or expired while signatures verified.
        let p = match self.live(&a.proposal_id) {
            Ok(p) => p,
            Err(e) => return a.reply.send(Err(e)),
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
            a.reply.corr_id,
            a.proposal_id,
            a.signatures
                .iter()
                .map(|s| s.0.as_str())
                .collect::<Vec<_>>()
                .join(","),
            signers.threshold
        );
        let approved = Approved {
            proposal_id: a.proposal_id,
            approvals: k,
            threshold: signers.threshold,
        };
        a.reply.send(Ok(approved));
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
pub(super) fn counted_signatures(
    p: &Pending,
    signers: &SignerSet,
    now: i64,
) -> Vec<(String, String)> {
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
