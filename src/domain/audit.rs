//! Offline verification of a downloaded log (`ronctl registry verify`): every link of the hash
//! chain and every quorum, checked against pinned keys valid at each record's commit time.

use super::dsse;
use super::proposal;
use super::record::CommitRecord;
use super::signers::SignerSet;
use std::collections::HashSet;

/// The first problem found, and at which version.
#[derive(Debug, PartialEq, Eq)]
pub struct Break {
    pub version: u64,
    pub reason: String,
}

/// Check `records` (from version 0, in order). Returns the number of versions checked.
pub fn verify_chain(
    registry_id: &str,
    records: &[CommitRecord],
    signers: &SignerSet,
) -> Result<u64, Break> {
    let fail = |version: u64, reason: String| Err(Break { version, reason });
    let mut prev_hash = String::new();
    for (i, rec) in records.iter().enumerate() {
        let expect = i as u64;
        if rec.version != expect {
            return fail(
                expect,
                format!("expected version {expect}, found {}", rec.version),
            );
        }
        if !rec.verify_link(registry_id, &prev_hash) {
            let why = if rec.version > 0 && rec.prev_hash != prev_hash {
                "prev_hash does not match the previous record's hash"
            } else if rec.version > 0 && super::sha256_hex(&rec.payload) != rec.proposal_id {
                "proposal_id is not the SHA-256 of the payload"
            } else {
                "hash does not match the record's contents"
            };
            return fail(rec.version, why.to_string());
        }
        if rec.version > 0 {
            // The payload must be a proposal of this registry based on the previous version.
            let limits = proposal::ProposalLimits {
                max_ops: usize::MAX,
                max_descriptor_bytes: usize::MAX,
            };
            match proposal::parse(&rec.payload, registry_id, &limits) {
                // This audit judges every version against one fixed set; a signer-set change
                // needs the double quorum and the history (SPEC §8), which it does not walk yet.
                Ok(p) if p.new_signers().is_some() => {
                    return fail(
                        rec.version,
                        "is a set_signers, which this audit does not support yet".to_string(),
                    )
                }
                Ok(p) if p.base_version + 1 == rec.version => {}
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
            }
            let at = rec.committed_at_ms.div_euclid(1000);
            let pae = dsse::pae(&rec.payload);
            let mut good = HashSet::new();
            for (keyid, sig) in &rec.signatures {
                let Some(bytes) = dsse::decode_sig(sig) else {
                    return fail(rec.version, format!("signature by {keyid:?} is not base64"));
                };
                if signers.check(keyid, &bytes, &pae, at).is_ok() {
                    good.insert(keyid.clone());
                } else {
                    return fail(
                        rec.version,
                        format!("signature by {keyid:?} does not verify against the pinned keys valid at commit time"),
                    );
                }
            }
            if good.len() < signers.threshold {
                return fail(
                    rec.version,
                    format!(
                        "{} valid signatures, the threshold is {}",
                        good.len(),
                        signers.threshold
                    ),
                );
            }
        }
        prev_hash = rec.hash.clone();
    }
    Ok(records.len() as u64)
}
