//! The registry's domain: descriptors, proposals, DSSE signatures, the signer set, the hash
//! chain and state application.
//!
//! Architecture invariant: nothing here does I/O, reads a clock or knows about HTTP, threads or
//! files. Every function is deterministic in its arguments, which is what lets the test vectors,
//! property tests and the simulation check it exactly.

pub mod algs;
pub mod audit;
pub mod chain;
pub mod descriptor;
pub mod dsse;
pub mod pending;
pub mod proposal;
pub mod quorum;
pub mod record;
pub mod signers;
pub mod state;

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Is `s` 64 lower-case hex digits (a SHA-256 in the form the formats use)?
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
