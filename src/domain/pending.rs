//! Pending frames (docs/FORMATS.md, durable pending proposals and approvals): the log records a
//! `/propose` and each `/approve` as a frame of their own kind, beside the commit records, so
//! that a `202` / `200` is answered only once they are durable and they survive a restart.
//!
//! A pending frame's payload is a JSON object whose first member is `"pending"` (commit records
//! start with `"version"`), so recovery and restore tell the two kinds apart from the first
//! bytes, and both go through the same framing, checksum and torn-tail rules.
//!
//! Invariant: pending frames never change the chain, the state or the signer history; they only
//! feed the writer's pending proposals at start-up. A proposal's frames are ignored once a
//! commit record carries its id, and a proposal past its `expires_at` is not restored.
//!
//! A checkpoint carries the frames gathered up to its `log_end`, compacted ([`PendingFrames::
//! to_frames`], docs/FORMATS.md), minus proposals that can no longer come back
//! ([`PendingFrames::retain_live`]), so start-up replays only the frames after `log_end`: the
//! compaction is itself a sequence of frames, and replaying it and then the later frames gives
//! what replaying every frame would (see `retain_live` for why the dropped ones change nothing).

use super::dsse;
use super::signers::Sig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The first bytes of every pending frame's payload.
pub const PENDING_PREFIX: &[u8] = b"{\"pending\":";

/// Is this log payload a pending frame (rather than a commit record)?
pub fn is_pending_frame(payload: &[u8]) -> bool {
    payload.starts_with(PENDING_PREFIX)
}

/// One pending frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "pending", rename_all = "snake_case", deny_unknown_fields)]
pub enum PendingFrame {
    /// A `202` to `/propose`: the exact proposal bytes and when the proposal expires.
    Proposal {
        proposal_id: String,
        /// Standard base64 of the exact proposal bytes.
        payload: String,
        /// Unix seconds (absolute: the TTL clock survives a restart).
        expires_at: i64,
    },
    /// A `200` to `/approve`: the approvals it recorded.
    Approvals {
        proposal_id: String,
        approvals: Vec<PendingApproval>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingApproval {
    pub keyid: String,
    /// The public key the signature verified under, in its text form (lower-case hex; a
    /// hybrid's two halves joined by `:`).
    pub public_key: String,
    /// The signature in its stored form (standard base64; a hybrid's halves joined by `:`).
    pub sig: String,
}

impl PendingFrame {
    /// The frame's JSON, byte for byte what `serde_json::to_vec` gives (the unit tests and,
    /// in debug builds, every call hold it to that), written by hand: every proposal and
    /// approval of the three-step flow writes one on the writer thread, and serde_json's
    /// escaping scan of the base64 payload was most of its cost.
    pub fn to_bytes(&self) -> Vec<u8> {
        use super::{write_i64, write_json_str};
        let mut out = Vec::new();
        match self {
            PendingFrame::Proposal {
                proposal_id,
                payload,
                expires_at,
            } => {
                out.reserve(80 + proposal_id.len() + payload.len());
                out.extend_from_slice(b"{\"pending\":\"proposal\",\"proposal_id\":");
                write_json_str(&mut out, proposal_id);
                out.extend_from_slice(b",\"payload\":");
                write_json_str(&mut out, payload);
                out.extend_from_slice(b",\"expires_at\":");
                write_i64(&mut out, *expires_at);
            }
            PendingFrame::Approvals {
                proposal_id,
                approvals,
            } => {
                out.extend_from_slice(b"{\"pending\":\"approvals\",\"proposal_id\":");
                write_json_str(&mut out, proposal_id);
                out.extend_from_slice(b",\"approvals\":[");
                for (i, a) in approvals.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(b"{\"keyid\":");
                    write_json_str(&mut out, &a.keyid);
                    out.extend_from_slice(b",\"public_key\":");
                    write_json_str(&mut out, &a.public_key);
                    out.extend_from_slice(b",\"sig\":");
                    write_json_str(&mut out, &a.sig);
                    out.push(b'}');
                }
                out.push(b']');
            }
        }
        out.push(b'}');
        debug_assert_eq!(
            out,
            serde_json::to_vec(self).expect("a pending frame serializes")
        );
        debug_assert!(is_pending_frame(&out));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<PendingFrame, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("pending frame is not valid: {e}"))
    }
}

/// A pending proposal rebuilt from its frames.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredPending {
    pub proposal_id: String,
    pub payload: Vec<u8>,
    pub expires_at: i64,
    /// (keyid, raw public key bytes (`PublicKey::as_bytes`), signature), each once.
    pub approvals: Vec<(String, Vec<u8>, Sig)>,
}

/// Gathers pending frames in log order.
#[derive(Clone, Default)]
pub struct PendingFrames {
    /// Per proposal id: what start-up hands the writer, and the approvals in their frame form
    /// (the raw public key of a hybrid cannot be split back into its text halves), so the
    /// gathered state can be written out again as frames.
    proposals: BTreeMap<String, (RestoredPending, Vec<PendingApproval>)>,
}

impl PendingFrames {
    /// Take one frame. Approvals for a proposal whose frame was not seen are dropped (its
    /// proposal frame is always written first, so this is only a proposal evicted by TTL).
    pub fn add(&mut self, frame: PendingFrame) -> Result<(), String> {
        match frame {
            PendingFrame::Proposal {
                proposal_id,
                payload,
                expires_at,
            } => {
                let bytes =
                    dsse::unb64(&payload).ok_or("pending proposal payload is not base64")?;
                if super::sha256_hex(&bytes) != proposal_id {
                    return Err(format!(
                        "pending proposal {proposal_id}: payload does not hash to its id"
                    ));
                }
                // A proposal frame for an id already seen is a re-proposal after expiry: the
                // writer started it afresh (new expiry, no approvals), and so does this.
                self.proposals.insert(
                    proposal_id.clone(),
                    (
                        RestoredPending {
                            proposal_id,
                            payload: bytes,
                            expires_at,
                            approvals: Vec::new(),
                        },
                        Vec::new(),
                    ),
                );
            }
            PendingFrame::Approvals {
                proposal_id,
                approvals,
            } => {
                let Some((p, texts)) = self.proposals.get_mut(&proposal_id) else {
                    return Ok(());
                };
                for a in approvals {
                    // The text form's halves concatenated are the raw bytes (ed25519 first).
                    let public: Vec<u8> = a
                        .public_key
                        .split(':')
                        .map(hex::decode)
                        .collect::<Result<Vec<_>, _>>()
                        .map(|halves| halves.concat())
                        .ok()
                        .filter(|b| !b.is_empty())
                        .ok_or("pending approval public_key is not hex")?;
                    let sig = Sig::decode(&a.sig).ok_or("pending approval sig is not base64")?;
                    if !p
                        .approvals
                        .iter()
                        .any(|(k, pk, _)| *k == a.keyid && *pk == public)
                    {
                        p.approvals.push((a.keyid.clone(), public, sig));
                        texts.push(a);
                    }
                }
            }
        }
        Ok(())
    }

    /// Forget proposal `id` (and the approvals that follow it in the log) if `committed` says
    /// so of it.
    pub fn forget_if(&mut self, id: &str, committed: impl FnOnce(&RestoredPending) -> bool) {
        if self.proposals.get(id).is_some_and(|(p, _)| committed(p)) {
            self.proposals.remove(id);
        }
    }

    /// The proposals still pending: not committed (per `committed`), not expired at `now`.
    pub fn live(self, committed: &dyn Fn(&str) -> bool, now_unix: i64) -> Vec<RestoredPending> {
        self.proposals
            .into_values()
            .map(|(p, _)| p)
            .filter(|p| !committed(&p.proposal_id) && now_unix < p.expires_at)
            .collect()
    }

    /// Every proposal gathered, before filtering.
    pub fn all(self) -> Vec<RestoredPending> {
        self.proposals.into_values().map(|(p, _)| p).collect()
    }

    /// How many proposals are gathered.
    pub fn len(&self) -> usize {
        self.proposals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.proposals.is_empty()
    }

    /// Keep only `keep`'s proposals (committed ones are forgotten this way at start-up).
    pub fn retain(&mut self, mut keep: impl FnMut(&RestoredPending) -> bool) {
        self.proposals.retain(|_, (p, _)| keep(p));
    }

    /// Forget the proposals that can never be pending again once the head is at `head`: built
    /// on a base below it (committed there, or lost their compare-and-swap; a restart's head
    /// is never lower, and the writer drops such a proposal when it restores), or expired at
    /// `now_unix` (the writer drops those too; a clock does not run back past a checkpoint in
    /// ordinary operation). A later proposal frame for the same id starts it afresh either way,
    /// and a later approvals frame for it is dropped with it, as the writer would drop the
    /// proposal it joins: so these proposals change nothing in what a replay restores.
    pub fn retain_live(&mut self, head: u64, now_unix: i64) {
        #[derive(Deserialize)]
        struct Base {
            base_version: u64,
        }
        self.proposals.retain(|_, (p, _)| {
            // A payload without a base version is left for the writer to refuse, as a replay
            // would; it goes at its expiry.
            let built_below =
                serde_json::from_slice::<Base>(&p.payload).is_ok_and(|b| b.base_version < head);
            !built_below && now_unix < p.expires_at
        });
    }

    /// The gathered state as frames: per proposal its proposal frame, then one approvals frame
    /// with every approval recorded for it (none if it has none). Replaying them into an empty
    /// [`PendingFrames`] gathers this state again.
    pub fn to_frames(&self) -> Vec<PendingFrame> {
        let mut out = Vec::with_capacity(self.proposals.len() * 2);
        for (id, (p, texts)) in &self.proposals {
            out.push(PendingFrame::Proposal {
                proposal_id: id.clone(),
                payload: dsse::b64(&p.payload),
                expires_at: p.expires_at,
            });
            if !texts.is_empty() {
                out.push(PendingFrame::Approvals {
                    proposal_id: id.clone(),
                    approvals: texts.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_written_as_serde_json_writes_them() {
        let approval = |keyid: &str, sig: &str| PendingApproval {
            keyid: keyid.into(),
            public_key: format!("{}:{}", hex::encode([3u8; 32]), hex::encode([4u8; 8])),
            sig: sig.into(),
        };
        let frames = [
            PendingFrame::Proposal {
                proposal_id: crate::domain::sha256_hex(b"p"),
                payload: dsse::b64(b"{\"registry_id\":\"r\"}"),
                expires_at: 1_767_225_600,
            },
            PendingFrame::Proposal {
                proposal_id: "odd \"id\"\n\\".into(),
                payload: String::new(),
                expires_at: -5,
            },
            PendingFrame::Proposal {
                proposal_id: String::new(),
                payload: "é\u{1}".into(),
                expires_at: i64::MIN,
            },
            PendingFrame::Approvals {
                proposal_id: "p".into(),
                approvals: vec![],
            },
            PendingFrame::Approvals {
                proposal_id: "p".into(),
                approvals: vec![
                    approval("k1", &dsse::encode_sig(&[9u8; 64])),
                    approval("k \"2\"\t", "a:b"),
                ],
            },
        ];
        for frame in frames {
            let want = serde_json::to_vec(&frame).unwrap();
            assert_eq!(
                String::from_utf8(frame.to_bytes()).unwrap(),
                String::from_utf8(want).unwrap()
            );
            assert_eq!(PendingFrame::from_bytes(&frame.to_bytes()), Ok(frame));
        }
    }

    /// Start-up forgets a committed proposal as soon as its frame is read; the approvals that
    /// follow it in the log then find no proposal and are dropped with it.
    #[test]
    fn a_forgotten_proposal_takes_its_later_approvals_with_it() {
        let frame = |n: u8| {
            let payload = format!("{{\"p\":{n}}}");
            let id = crate::domain::sha256_hex(payload.as_bytes());
            let p = PendingFrame::Proposal {
                proposal_id: id.clone(),
                payload: dsse::b64(payload.as_bytes()),
                expires_at: 100,
            };
            let a = PendingFrame::Approvals {
                proposal_id: id.clone(),
                approvals: vec![PendingApproval {
                    keyid: "k".into(),
                    public_key: hex::encode([7u8; 32]),
                    sig: dsse::encode_sig(&[9u8; 64]),
                }],
            };
            (id, p, a)
        };
        let (kept, p1, a1) = frame(1);
        let (gone, p2, a2) = frame(2);
        let mut frames = PendingFrames::default();
        frames.add(p1).unwrap();
        frames.forget_if(&kept, |p| p.payload != b"{\"p\":1}");
        frames.add(p2).unwrap();
        frames.forget_if(&gone, |p| p.payload == b"{\"p\":2}");
        frames.add(a1).unwrap();
        frames.add(a2).unwrap();
        let all = frames.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].proposal_id, kept);
        assert_eq!(all[0].approvals.len(), 1);
    }

    #[test]
    fn frames_round_trip_and_are_told_from_commit_records() {
        let payload = b"{\"p\":1}";
        let id = crate::domain::sha256_hex(payload);
        let p = PendingFrame::Proposal {
            proposal_id: id.clone(),
            payload: dsse::b64(payload),
            expires_at: 100,
        };
        let bytes = p.to_bytes();
        assert!(is_pending_frame(&bytes));
        assert_eq!(PendingFrame::from_bytes(&bytes).unwrap(), p);
        let genesis = crate::domain::record::CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        );
        assert!(!is_pending_frame(&genesis.to_json()));

        let a = PendingFrame::Approvals {
            proposal_id: id.clone(),
            approvals: vec![PendingApproval {
                keyid: "k".into(),
                public_key: hex::encode([7u8; 32]),
                sig: dsse::encode_sig(&[9u8; 64]),
            }],
        };
        let mut frames = PendingFrames::default();
        frames.add(p.clone()).unwrap();
        frames.add(a.clone()).unwrap();
        frames.add(a).unwrap();
        let all = frames.all();
        assert_eq!(all.len(), 1);
        assert_eq!(
            all[0].approvals,
            vec![("k".to_string(), [7u8; 32].to_vec(), Sig::Ed25519([9u8; 64]))]
        );
        assert_eq!(all[0].payload, payload);

        // Committed or expired proposals do not come back.
        for (committed, now, n) in [(false, 99, 1), (true, 99, 0), (false, 100, 0)] {
            let mut frames = PendingFrames::default();
            frames.add(p.clone()).unwrap();
            assert_eq!(frames.live(&|_| committed, now).len(), n);
        }
        // A payload that does not hash to its id is refused.
        let mut frames = PendingFrames::default();
        let bad = PendingFrame::Proposal {
            proposal_id: "0".repeat(64),
            payload: dsse::b64(payload),
            expires_at: 1,
        };
        assert!(frames.add(bad).is_err());
    }

    /// issue 14: the gathered state written out as frames gathers the same state again (what a
    /// checkpoint carries), a later proposal frame for an id starts it afresh, and
    /// `retain_live` forgets exactly the proposals built below the head or expired.
    #[test]
    fn gathered_frames_round_trip_and_forget_what_cannot_come_back() {
        let proposal = |base: u64, expires_at: i64| {
            let payload = format!("{{\"base_version\":{base}}}");
            let id = crate::domain::sha256_hex(payload.as_bytes());
            let p = PendingFrame::Proposal {
                proposal_id: id.clone(),
                payload: dsse::b64(payload.as_bytes()),
                expires_at,
            };
            let a = |seed: u8| PendingFrame::Approvals {
                proposal_id: id.clone(),
                approvals: vec![PendingApproval {
                    keyid: format!("k{seed}"),
                    public_key: format!("{}:{}", hex::encode([seed; 32]), hex::encode([seed; 8])),
                    sig: dsse::encode_sig(&[seed; 64]),
                }],
            };
            let (a1, a2) = (a(1), a(2));
            (id, p, a1, a2)
        };
        let (below, p_below, a_below, _) = proposal(3, 100);
        let (live, p_live, a1, a2) = proposal(5, 100);
        let (old, p_old, _, _) = proposal(9, 50);
        let mut frames = PendingFrames::default();
        for f in [
            p_below,
            a_below,
            p_live.clone(),
            a1.clone(),
            a2.clone(),
            a1,
            p_old,
        ] {
            frames.add(f).unwrap();
        }
        let mut again = PendingFrames::default();
        for f in frames.to_frames() {
            again.add(f).unwrap();
        }
        assert_eq!(again.clone().all(), frames.clone().all());
        assert_eq!(again.to_frames(), frames.to_frames());
        let held = frames.clone().all();
        assert_eq!(
            held.iter()
                .find(|p| p.proposal_id == live)
                .unwrap()
                .approvals
                .len(),
            2
        );

        // Re-proposed after expiry: afresh, its earlier approvals gone.
        let mut fresh = frames.clone();
        fresh.add(p_live).unwrap();
        let all = fresh.all();
        assert!(all
            .iter()
            .find(|p| p.proposal_id == live)
            .unwrap()
            .approvals
            .is_empty());

        frames.retain_live(4, 50);
        let ids: Vec<String> = frames
            .clone()
            .all()
            .into_iter()
            .map(|p| p.proposal_id)
            .collect();
        assert_eq!(
            ids,
            vec![live.clone()],
            "{below} is built below 4, {old} expired at 50"
        );
        frames.retain_live(4, 99);
        assert_eq!(frames.len(), 1);
        frames.retain_live(6, 0);
        assert!(frames.is_empty());
        // Approvals after a forgotten proposal are dropped with it, as the writer drops them.
        frames.add(a2).unwrap();
        assert!(frames.is_empty());
    }
}
