//! The hash chain (docs/FORMATS.md): every version commits to the one before it, so anyone holding
//! the log can check it was never rewritten; genesis v2 also commits to the initial signer set,
//! so the genesis hash alone anchors every later quorum check.

use sha2::{Digest, Sha256};

/// `prev_hash` of the genesis record.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `hash_0 = SHA256("svc-registry/genesis/v1\n" + registry_id + "\n")`.
pub fn genesis_hash(registry_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"svc-registry/genesis/v1\n");
    h.update(registry_id.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// Genesis v2 (docs/FORMATS.md): `hash_0 = SHA256("svc-registry/genesis/v2\n" + registry_id + "\n" +
/// signers_digest + "\n")`, where `signers_digest` is the lower-case hex digest of the initial
/// set's canonical bytes (`SignerSet::digest`). `genesis_hash` (v1) stays to recognise, and
/// refuse by name, data directories made before §8.
pub fn genesis_hash_v2(registry_id: &str, signers_digest: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"svc-registry/genesis/v2\n");
    h.update(registry_id.as_bytes());
    h.update(b"\n");
    h.update(signers_digest.as_bytes());
    h.update(b"\n");
    hex::encode(h.finalize())
}

/// `hash_V` for V ≥ 1. `signatures` are (keyid, stored sig) pairs of the counted signatures; they
/// are sorted by keyid here, so callers may pass them in any order.
pub fn commit_hash(
    registry_id: &str,
    version: u64,
    prev_hash: &str,
    proposal_id: &str,
    signatures: &[(String, String)],
) -> String {
    let mut sorted: Vec<&(String, String)> = signatures.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update(b"svc-registry/commit/v1\n");
    h.update(registry_id.as_bytes());
    h.update(b"\n");
    h.update(version.to_string().as_bytes());
    h.update(b"\n");
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(proposal_id.as_bytes());
    h.update(b"\n");
    for (keyid, sig) in sorted {
        h.update(keyid.as_bytes());
        h.update(b" ");
        h.update(sig.as_bytes());
        h.update(b"\n");
    }
    super::hex_lower(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn genesis_is_the_hash_of_the_spec_preimage() {
        let want = crate::domain::sha256_hex(b"svc-registry/genesis/v1\ndev-registry\n");
        assert_eq!(genesis_hash("dev-registry"), want);
        assert_ne!(genesis_hash("dev-registry"), genesis_hash("other"));
    }

    #[test]
    fn genesis_v2_commits_to_the_signer_set() {
        let d = crate::domain::sha256_hex(b"ss");
        let want = crate::domain::sha256_hex(
            format!("svc-registry/genesis/v2\ndev-registry\n{d}\n").as_bytes(),
        );
        assert_eq!(genesis_hash_v2("dev-registry", &d), want);
        assert_ne!(
            genesis_hash_v2("dev-registry", &d),
            genesis_hash("dev-registry")
        );
        let other = crate::domain::sha256_hex(b"ss2");
        assert_ne!(
            genesis_hash_v2("dev-registry", &d),
            genesis_hash_v2("dev-registry", &other)
        );
    }

    #[test]
    fn commit_hash_sorts_signatures_by_keyid() {
        let a = ("a".to_string(), "AAAA".to_string());
        let b = ("b".to_string(), "BBBB".to_string());
        let h1 = commit_hash("r", 1, ZERO_HASH, "p", &[a.clone(), b.clone()]);
        let h2 = commit_hash("r", 1, ZERO_HASH, "p", &[b, a]);
        assert_eq!(h1, h2);
        let preimage = format!("svc-registry/commit/v1\nr\n1\n{ZERO_HASH}\np\na AAAA\nb BBBB\n");
        assert_eq!(h1, crate::domain::sha256_hex(preimage.as_bytes()));
    }

    #[test]
    fn every_input_changes_the_hash() {
        let s = vec![("a".to_string(), "S".to_string())];
        let base = commit_hash("r", 2, "h", "p", &s);
        assert_ne!(base, commit_hash("x", 2, "h", "p", &s));
        assert_ne!(base, commit_hash("r", 3, "h", "p", &s));
        assert_ne!(base, commit_hash("r", 2, "g", "p", &s));
        assert_ne!(base, commit_hash("r", 2, "h", "q", &s));
        assert_ne!(base, commit_hash("r", 2, "h", "p", &[]));
    }
}
