//! Verification of a chain (docs/FORMATS.md): offline, of a downloaded log (`ronctl registry
//! verify`), and record by record as a follower receives them ([`Tip`], src/roles/follower.rs),
//! with the same checks: every link of the hash chain and every quorum, each version judged
//! against the signer set in force at its base version (the genesis set, then each committed
//! `set_signers`), never against today's set.
//!
//! Invariant: trust starts at one anchor only — a pinned genesis hash, or a pinned genesis
//! signer set, or (unpinned) the genesis record as downloaded, whose hash is reported so the
//! caller can compare it out of band. Everything after genesis follows from the anchor: a
//! signer-set change counts only if the set in force and the new set both signed it.

use super::algs::PublicKey;
use super::dsse;
use super::proposal;
use super::quorum::{self, Approval, SignerHistory};
use super::record::CommitRecord;
use super::signers::{Sig, SignerSet};
use std::sync::Arc;

/// The first problem found, and at which version.
#[derive(Debug, PartialEq, Eq)]
pub struct Break {
    pub version: u64,
    pub reason: String,
}

/// What the audit anchors its trust in.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// The genesis hash, known out of band (`--genesis-hash`).
    GenesisHash(&'a str),
    /// The genesis signer set, known out of band (`--signers FILE`).
    GenesisSet(&'a SignerSet),
    /// Nothing: the downloaded genesis is taken as it is (report its hash).
    Unpinned,
}

/// A chain that verified.
#[derive(Debug, PartialEq, Eq)]
pub struct Audited {
    /// Versions checked (genesis included).
    pub versions: u64,
    /// The genesis hash everything was anchored to.
    pub genesis_hash: String,
    /// The signer set history the log established.
    pub signer_sets: usize,
}

/// Check `records` (from version 0, in order) against a pinned genesis signer set. Returns the
/// number of versions checked.
pub fn verify_chain(
    registry_id: &str,
    records: &[CommitRecord],
    genesis_signers: &SignerSet,
) -> Result<u64, Break> {
    verify_chain_trusting(registry_id, records, Trust::GenesisSet(genesis_signers))
        .map(|a| a.versions)
}

/// Check `records` (from version 0, in order), anchored as `trust` says.
pub fn verify_chain_trusting(
    registry_id: &str,
    records: &[CommitRecord],
    trust: Trust<'_>,
) -> Result<Audited, Break> {
    let Some(genesis) = records.first() else {
        return Err(Break {
            version: 0,
            reason: "the log holds no genesis record".to_string(),
        });
    };
    let mut tip = Tip::from_genesis(registry_id, genesis, trust)?;
    for (i, rec) in records.iter().enumerate().skip(1) {
        let expect = i as u64;
        if rec.version != expect {
            return Err(Break {
                version: expect,
                reason: format!("expected version {expect}, found {}", rec.version),
            });
        }
        tip.check(registry_id, rec)?;
    }
    Ok(Audited {
        versions: records.len() as u64,
        genesis_hash: genesis.hash.clone(),
        signer_sets: tip.signers.entries().len(),
    })
}

/// The verified end of a chain: what the next record must follow from. The offline audit walks
/// it record by record ([`Tip::check`]); a follower (src/roles/follower.rs) splits each step in
/// two ([`Tip::prepare`], then [`Prepared::conclude`]) so that the signatures of many records
/// verify on the verifier pool at once while the chain itself is walked in order.
#[derive(Clone, Debug)]
pub struct Tip {
    pub version: u64,
    pub hash: String,
    /// Which signer set judges which base version, up to this tip.
    pub signers: SignerHistory,
}

/// One signature check a record needs: `sig` (the record's `signature`-th) over the record's
/// PAE under `key`.
#[derive(Clone, Debug)]
pub struct SigCheck {
    pub signature: usize,
    pub key: PublicKey,
    pub sig: Sig,
}

/// A record whose chain link, proposal id, payload and base version were checked against the
/// tip; what is left is its signatures ([`Prepared::checks`]) and its quorum.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub version: u64,
    pub proposal: Arc<proposal::Proposal>,
    pub pae: Arc<[u8]>,
    /// Every (signature, candidate key) to verify; a signature must verify under one of its
    /// candidates.
    pub checks: Vec<SigCheck>,
    in_force: Arc<SignerSet>,
    new: Option<Arc<SignerSet>>,
    /// The version that put `in_force` in force (for messages).
    since: u64,
    /// Commit time, Unix seconds: validity windows are judged at it.
    at: i64,
}

impl Tip {
    /// The tip of a chain that starts with `genesis`, checked against `registry_id` and the
    /// anchor `trust`.
    pub fn from_genesis(
        registry_id: &str,
        genesis: &CommitRecord,
        trust: Trust<'_>,
    ) -> Result<Tip, Break> {
        let fail = |reason: String| Err(Break { version: 0, reason });
        if genesis.version != 0 {
            return fail(format!("expected version 0, found {}", genesis.version));
        }
        let Some(genesis_set) = genesis.genesis_signers.clone() else {
            return fail(
                "the genesis record carries no signer set (genesis v1, before the signer set was on the log)".to_string(),
            );
        };
        if !genesis.verify_link(registry_id, "") {
            return fail("genesis hash does not match its registry_id and signer set".to_string());
        }
        match trust {
            Trust::GenesisHash(h) if genesis.hash != h => {
                return fail(format!(
                    "genesis hash is {}, the pinned genesis hash is {h}",
                    genesis.hash
                ))
            }
            Trust::GenesisSet(pinned) if *pinned != *genesis_set => {
                return fail(format!(
                    "the genesis signer set (digest {}) is not the pinned one (digest {})",
                    genesis_set.digest(),
                    pinned.digest()
                ))
            }
            _ => {}
        }
        Ok(Tip {
            version: 0,
            hash: genesis.hash.clone(),
            signers: SignerHistory::genesis(genesis_set),
        })
    }

    /// Check `rec` completely (signatures inline, on this thread) and advance past it.
    pub fn check(&mut self, registry_id: &str, rec: &CommitRecord) -> Result<(), Break> {
        let saved = self.clone();
        let prepared = self.prepare(registry_id, rec)?;
        let ok: Vec<bool> = prepared
            .checks
            .iter()
            .map(|c| c.key.verify(&c.sig, &prepared.pae))
            .collect();
        prepared.conclude(rec, &ok).inspect_err(|_| *self = saved)
    }

    /// Check everything about `rec` but its signatures, and advance the tip past it **as if
    /// they verify** (so the next record can be prepared before they do). A caller that
    /// verifies later keeps the tip it had before and goes back to it if
    /// [`Prepared::conclude`] refuses. On an error the tip is unchanged.
    pub fn prepare(&mut self, registry_id: &str, rec: &CommitRecord) -> Result<Prepared, Break> {
        let fail = |reason: String| {
            Err(Break {
                version: rec.version,
                reason,
            })
        };
        let expect = self.version + 1;
        if rec.version != expect {
            return Err(Break {
                version: expect,
                reason: format!("expected version {expect}, found {}", rec.version),
            });
        }
        if !rec.verify_link(registry_id, &self.hash) {
            let why = if rec.prev_hash != self.hash {
                "prev_hash does not match the previous record's hash"
            } else if super::sha256_hex(&rec.payload) != rec.proposal_id {
                "proposal_id is not the SHA-256 of the payload"
            } else {
                "hash does not match the record's contents"
            };
            return fail(why.to_string());
        }
        let limits = proposal::ProposalLimits {
            max_ops: usize::MAX,
            max_descriptor_bytes: usize::MAX,
        };
        // The payload must be a proposal of this registry based on the previous version.
        let p = match proposal::parse(&rec.payload, registry_id, &limits) {
            Ok(p) if p.base_version + 1 == rec.version => p,
            Ok(p) => {
                return fail(format!(
                    "payload base_version {} does not precede it",
                    p.base_version
                ))
            }
            Err(e) => return fail(format!("payload: {}", e.message)),
        };
        let (since, in_force) = self.signers.in_force_at(p.base_version);
        let in_force = in_force.clone();
        let new = p.new_signers().cloned();
        let at = rec.committed_at_ms.div_euclid(1000);
        let mut checks = Vec::new();
        for (i, (keyid, sig)) in rec.signatures.iter().enumerate() {
            let Some(bytes) = Sig::decode(sig) else {
                return fail(format!(
                    "signature by {keyid:?} is not a signature in any key algorithm's form"
                ));
            };
            // The keys this keyid names in the sets that judge this version, valid at commit
            // time; the signature must verify under at least one of them.
            for set in std::iter::once(&in_force).chain(new.as_ref()) {
                if let Some(slot) = set.slot(keyid) {
                    let key = &set.keys[slot];
                    if key.valid_at(at) {
                        checks.push(SigCheck {
                            signature: i,
                            key: key.public.clone(),
                            sig: bytes.clone(),
                        });
                    }
                }
            }
        }
        let mut signers = self.signers.clone();
        if let Some(set) = &new {
            signers
                .record(rec.version, set.clone())
                .map_err(|e| Break {
                    version: rec.version,
                    reason: e.to_string(),
                })?;
        }
        self.version = rec.version;
        self.hash = rec.hash.clone();
        self.signers = signers;
        Ok(Prepared {
            version: rec.version,
            proposal: Arc::new(p),
            pae: dsse::pae(&rec.payload).into(),
            checks,
            in_force,
            new,
            since,
            at,
        })
    }
}

impl Prepared {
    /// Given whether each of [`Prepared::checks`] verified (`ok[i]` for `checks[i]`): does every
    /// signature verify under a key of a set that judges it, and are the quorums met?
    pub fn conclude(&self, rec: &CommitRecord, ok: &[bool]) -> Result<(), Break> {
        assert_eq!(ok.len(), self.checks.len(), "one result per check");
        let fail = |reason: String| {
            Err(Break {
                version: self.version,
                reason,
            })
        };
        let mut approvals = Vec::new();
        for (i, (keyid, sig)) in rec.signatures.iter().enumerate() {
            let mut verified = false;
            for (check, _) in self
                .checks
                .iter()
                .zip(ok)
                .filter(|(c, ok)| c.signature == i && **ok)
            {
                verified = true;
                approvals.push(Approval {
                    keyid: keyid.clone(),
                    public_key: check.key.to_bytes(),
                    sig: sig.clone(),
                    verified: true,
                    at_unix: self.at,
                });
            }
            if !verified {
                return fail(format!(
                    "signature by {keyid:?} does not verify against the signer set in force \
                     (since version {}){} with keys valid at commit time",
                    self.since,
                    if self.new.is_some() {
                        " or the new set"
                    } else {
                        ""
                    }
                ));
            }
        }
        let counted = quorum::count(&self.in_force, self.new.as_deref(), &approvals);
        if let Some(why) = counted.shortfall_message() {
            return fail(why);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::chain;
    use crate::domain::signers::{sign_payload, test_set};

    /// Genesis of a 2-of-2 set (`k1`, `k2`) and version 1, signed by the given seeds.
    fn chain_of_two(seeds: &[u8]) -> (CommitRecord, CommitRecord) {
        let genesis = CommitRecord::genesis("r", test_set(2, 2));
        let payload = br#"{"registry_id":"r","base_version":0,"ops":[{"op":"put","kind":"node","id":"a","body":{}}]}"#;
        let sigs: Vec<(String, String)> = seeds
            .iter()
            .map(|&s| {
                let key = ed25519_dalek::SigningKey::from_bytes(&[s; 32]);
                (
                    format!("k{s}"),
                    dsse::encode_sig(&sign_payload(&key, payload)),
                )
            })
            .collect();
        let id = super::super::sha256_hex(payload);
        let rec = CommitRecord {
            version: 1,
            hash: chain::commit_hash("r", 1, &genesis.hash, &id, &sigs),
            prev_hash: genesis.hash.clone(),
            committed_at_ms: 1_000,
            proposal_id: id,
            payload: Arc::from(&payload[..]),
            signatures: sigs,
            descriptors: 1,
            genesis_signers: None,
        };
        (genesis, rec)
    }

    #[test]
    fn a_tip_is_anchored_in_the_pinned_genesis_hash() {
        let (genesis, _) = chain_of_two(&[1, 2]);
        assert!(Tip::from_genesis("r", &genesis, Trust::GenesisHash(&genesis.hash)).is_ok());
        let e = Tip::from_genesis("r", &genesis, Trust::GenesisHash(&"0".repeat(64))).unwrap_err();
        assert_eq!(e.version, 0);
        assert!(e.reason.contains("pinned genesis hash"), "{}", e.reason);
        assert!(Tip::from_genesis("other", &genesis, Trust::Unpinned).is_err());
    }

    #[test]
    fn prepare_advances_provisionally_and_conclude_judges_the_signatures() {
        let (genesis, rec) = chain_of_two(&[1, 2]);
        let mut tip = Tip::from_genesis("r", &genesis, Trust::Unpinned).unwrap();
        let prepared = tip.prepare("r", &rec).unwrap();
        // The next record can be prepared before these signatures are verified.
        assert_eq!((tip.version, tip.hash.as_str()), (1, rec.hash.as_str()));
        assert_eq!(prepared.checks.len(), 2);
        let e = prepared.conclude(&rec, &[true, false]).unwrap_err();
        assert_eq!(e.version, 1);
        assert!(e.reason.contains("does not verify"), "{}", e.reason);
        assert!(prepared.conclude(&rec, &[true, true]).is_ok());
        // Out of order: refused, and the tip does not move.
        let e = tip.prepare("r", &rec).unwrap_err();
        assert_eq!(e.reason, "expected version 2, found 1");
        assert_eq!(tip.version, 1);
    }

    #[test]
    fn check_refuses_a_short_quorum_and_leaves_the_tip_where_it_was() {
        let (genesis, short) = chain_of_two(&[1]);
        let mut tip = Tip::from_genesis("r", &genesis, Trust::Unpinned).unwrap();
        let e = tip.check("r", &short).unwrap_err();
        assert_eq!(e.version, 1);
        assert!(e.reason.contains("quorum not met"), "{}", e.reason);
        assert_eq!((tip.version, tip.hash.clone()), (0, genesis.hash.clone()));
        let (_, full) = chain_of_two(&[1, 2]);
        tip.check("r", &full).unwrap();
        assert_eq!(tip.version, 1);
    }
}
