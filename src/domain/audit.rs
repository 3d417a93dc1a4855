//! Offline verification of a downloaded log (`ronctl registry verify`, docs/FORMATS.md): every link of
//! the hash chain and every quorum, each version judged against the signer set in force at its
//! base version (the genesis set, then each committed `set_signers`), never against today's set.
//!
//! Invariant: trust starts at one anchor only — a pinned genesis hash, or a pinned genesis
//! signer set, or (unpinned) the genesis record as downloaded, whose hash is reported so the
//! caller can compare it out of band. Everything after genesis follows from the anchor: a
//! signer-set change counts only if the set in force and the new set both signed it.

use super::dsse;
use super::proposal;
use super::quorum::{self, Approval, SignerHistory};
use super::record::CommitRecord;
use super::signers::{Sig, SignerSet};

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
    let fail = |version: u64, reason: String| Err(Break { version, reason });
    let Some(genesis) = records.first() else {
        return fail(0, "the log holds no genesis record".to_string());
    };
    if genesis.version != 0 {
        return fail(0, format!("expected version 0, found {}", genesis.version));
    }
    let Some(genesis_set) = genesis.genesis_signers.clone() else {
        return fail(
            0,
            "the genesis record carries no signer set (genesis v1, before the signer set was on the log)".to_string(),
        );
    };
    if !genesis.verify_link(registry_id, "") {
        return fail(
            0,
            "genesis hash does not match its registry_id and signer set".to_string(),
        );
    }
    match trust {
        Trust::GenesisHash(h) if genesis.hash != h => {
            return fail(
                0,
                format!(
                    "genesis hash is {}, the pinned genesis hash is {h}",
                    genesis.hash
                ),
            )
        }
        Trust::GenesisSet(pinned) if *pinned != *genesis_set => {
            return fail(
                0,
                format!(
                    "the genesis signer set (digest {}) is not the pinned one (digest {})",
                    genesis_set.digest(),
                    pinned.digest()
                ),
            )
        }
        _ => {}
    }
    let mut history = SignerHistory::genesis(genesis_set);
    let mut prev_hash = genesis.hash.clone();
    let limits = proposal::ProposalLimits {
        max_ops: usize::MAX,
        max_descriptor_bytes: usize::MAX,
    };
    for (i, rec) in records.iter().enumerate().skip(1) {
        let expect = i as u64;
        if rec.version != expect {
            return fail(
                expect,
                format!("expected version {expect}, found {}", rec.version),
            );
        }
        if !rec.verify_link(registry_id, &prev_hash) {
            let why = if rec.prev_hash != prev_hash {
                "prev_hash does not match the previous record's hash"
            } else if super::sha256_hex(&rec.payload) != rec.proposal_id {
                "proposal_id is not the SHA-256 of the payload"
            } else {
                "hash does not match the record's contents"
            };
            return fail(rec.version, why.to_string());
        }
        // The payload must be a proposal of this registry based on the previous version.
        let p = match proposal::parse(&rec.payload, registry_id, &limits) {
            Ok(p) if p.base_version + 1 == rec.version => p,
            Ok(p) => {
                return fail(
                    rec.version,
                    format!(
                        "payload base_version {} does not precede it",
                        p.base_version
                    ),
                )
            }
            Err(e) => return fail(rec.version, format!("payload: {}", e.message)),
        };
        let in_force = history.set_at(p.base_version).clone();
        let new = p.new_signers().cloned();
        let at = rec.committed_at_ms.div_euclid(1000);
        let pae = dsse::pae(&rec.payload);
        let mut approvals = Vec::new();
        for (keyid, sig) in &rec.signatures {
            let Some(bytes) = Sig::decode(sig) else {
                return fail(
                    rec.version,
                    format!(
                        "signature by {keyid:?} is not a signature in any key algorithm's form"
                    ),
                );
            };
            // The keys this keyid names in the sets that judge this version, valid at commit
            // time; the signature must verify under at least one of them.
            let mut verified = false;
            for set in std::iter::once(&in_force).chain(new.as_ref()) {
                if let Some(slot) = set.slot(keyid) {
                    let key = &set.keys[slot];
                    if key.valid_at(at) && key.public.verify(&bytes, &pae) {
                        verified = true;
                        approvals.push(Approval {
                            keyid: keyid.clone(),
                            public_key: key.public.to_bytes(),
                            sig: sig.clone(),
                            verified: true,
                            at_unix: at,
                        });
                    }
                }
            }
            if !verified {
                return fail(
                    rec.version,
                    format!(
                        "signature by {keyid:?} does not verify against the signer set in force \
                         (since version {}){} with keys valid at commit time",
                        history.since_version(p.base_version),
                        if new.is_some() { " or the new set" } else { "" }
                    ),
                );
            }
        }
        let counted = quorum::count(&in_force, new.as_deref(), &approvals);
        if let Some(why) = counted.shortfall_message() {
            return fail(rec.version, why);
        }
        if let Some(set) = new {
            history.record(rec.version, set).map_err(|e| Break {
                version: rec.version,
                reason: e.to_string(),
            })?;
        }
        prev_hash = rec.hash.clone();
    }
    Ok(Audited {
        versions: records.len() as u64,
        genesis_hash: genesis.hash.clone(),
        signer_sets: history.entries().len(),
    })
}
