//! The signer set: threshold M and N configured ed25519 keys with optional validity windows
//! (SPEC §3). Approvals are counted by configured slot, never by client-supplied bytes.

use super::dsse;
use crate::error::ApiError;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::Serialize;

/// One configured key. Parsed once at load: `VerifyingKey::from_bytes` is not free.
#[derive(Clone, Debug)]
pub struct SignerKey {
    pub keyid: String,
    pub public: VerifyingKey,
    /// Unix seconds, inclusive.
    pub not_before: Option<i64>,
    /// Unix seconds, inclusive.
    pub not_after: Option<i64>,
}

impl SignerKey {
    pub fn valid_at(&self, unix_secs: i64) -> bool {
        self.not_before.is_none_or(|t| unix_secs >= t)
            && self.not_after.is_none_or(|t| unix_secs <= t)
    }
}

#[derive(Clone, Debug)]
pub struct SignerSet {
    pub threshold: usize,
    pub keys: Vec<SignerKey>,
}

/// Why a signer set is refused at load.
#[derive(Debug, PartialEq, Eq)]
pub enum SignerSetError {
    ThresholdOutOfRange { threshold: usize, keys: usize },
    DuplicateKeyid(String),
    DuplicatePublicKey { first: String, second: String },
    WeakKey(String),
    EmptyKeyid,
    InvertedWindow(String),
}

impl std::fmt::Display for SignerSetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignerSetError::ThresholdOutOfRange { threshold, keys } => write!(
                f,
                "signers.threshold = {threshold} must be between 1 and the number of keys ({keys})"
            ),
            SignerSetError::DuplicateKeyid(k) => {
                write!(f, "signers.keys: keyid {k:?} appears twice")
            }
            SignerSetError::DuplicatePublicKey { first, second } => write!(
                f,
                "signers.keys: {first:?} and {second:?} have the same public_key"
            ),
            SignerSetError::WeakKey(k) => write!(
                f,
                "signers.keys: public_key of {k:?} is a weak (small-order) key"
            ),
            SignerSetError::EmptyKeyid => write!(f, "signers.keys: keyid must not be empty"),
            SignerSetError::InvertedWindow(k) => {
                write!(f, "signers.keys: {k:?} has not_after before not_before")
            }
        }
    }
}

impl SignerSet {
    /// Validate a set: threshold 1..=N, distinct keyids, distinct public keys, no weak keys.
    pub fn new(threshold: usize, keys: Vec<SignerKey>) -> Result<SignerSet, SignerSetError> {
        if threshold == 0 || threshold > keys.len() {
            return Err(SignerSetError::ThresholdOutOfRange {
                threshold,
                keys: keys.len(),
            });
        }
        for (i, key) in keys.iter().enumerate() {
            if key.keyid.is_empty() {
                return Err(SignerSetError::EmptyKeyid);
            }
            if key.public.is_weak() {
                return Err(SignerSetError::WeakKey(key.keyid.clone()));
            }
            if let (Some(a), Some(b)) = (key.not_before, key.not_after) {
                if b < a {
                    return Err(SignerSetError::InvertedWindow(key.keyid.clone()));
                }
            }
            for other in &keys[..i] {
                if other.keyid == key.keyid {
                    return Err(SignerSetError::DuplicateKeyid(key.keyid.clone()));
                }
                if other.public == key.public {
                    return Err(SignerSetError::DuplicatePublicKey {
                        first: other.keyid.clone(),
                        second: key.keyid.clone(),
                    });
                }
            }
        }
        Ok(SignerSet { threshold, keys })
    }

    /// The configured slot of a keyid.
    pub fn slot(&self, keyid: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.keyid == keyid)
    }

    /// Check one approval: the keyid is configured, valid at `now`, and `sig` verifies strictly
    /// over the PAE of `payload`. Returns the configured slot.
    pub fn check(
        &self,
        keyid: &str,
        sig: &[u8; 64],
        pae: &[u8],
        now_unix: i64,
    ) -> Result<usize, ApiError> {
        let slot = self.slot(keyid).ok_or_else(|| {
            ApiError::forbidden(format!("keyid {keyid:?} is not a configured signer"))
        })?;
        let key = &self.keys[slot];
        if !key.valid_at(now_unix) {
            return Err(ApiError::forbidden(format!(
                "key {keyid:?} is outside its validity window"
            )));
        }
        if !verify_strict(&key.public, sig, pae) {
            return Err(ApiError::forbidden(format!(
                "signature by {keyid:?} does not verify"
            )));
        }
        Ok(slot)
    }

    /// The JSON served at `/registry/signers`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct KeyJson<'a> {
            keyid: &'a str,
            public_key: String,
            not_before: Option<String>,
            not_after: Option<String>,
        }
        #[derive(Serialize)]
        struct SetJson<'a> {
            threshold: usize,
            keys: Vec<KeyJson<'a>>,
        }
        let keys = self
            .keys
            .iter()
            .map(|k| KeyJson {
                keyid: &k.keyid,
                public_key: hex::encode(k.public.as_bytes()),
                not_before: k.not_before.map(crate::clock::rfc3339),
                not_after: k.not_after.map(crate::clock::rfc3339),
            })
            .collect();
        serde_json::to_vec(&SetJson {
            threshold: self.threshold,
            keys,
        })
        .expect("signer set serializes")
    }
}

/// `verify_strict` of a raw signature over `msg`: rejects malleable signatures and small-order
/// keys that plain `verify` accepts.
pub fn verify_strict(key: &VerifyingKey, sig: &[u8; 64], msg: &[u8]) -> bool {
    let sig = Signature::from_bytes(sig);
    key.verify_strict(msg, &sig).is_ok()
}

/// Sign `payload` as a DSSE approval with `key` (used by ronctl and tests).
pub fn sign_payload(key: &ed25519_dalek::SigningKey, payload: &[u8]) -> [u8; 64] {
    use ed25519_dalek::Signer;
    key.sign(&dsse::pae(payload)).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8, keyid: &str) -> (SigningKey, SignerKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = SignerKey {
            keyid: keyid.to_string(),
            public: sk.verifying_key(),
            not_before: None,
            not_after: None,
        };
        (sk, pk)
    }

    #[test]
    fn threshold_must_be_between_one_and_n() {
        let (_, a) = key(1, "a");
        let (_, b) = key(2, "b");
        assert!(SignerSet::new(0, vec![a.clone(), b.clone()]).is_err());
        assert!(SignerSet::new(3, vec![a.clone(), b.clone()]).is_err());
        assert!(SignerSet::new(2, vec![a, b]).is_ok());
    }

    #[test]
    fn duplicate_and_weak_keys_are_refused() {
        let (_, a) = key(1, "a");
        let (_, mut a2) = key(1, "a2");
        assert_eq!(
            SignerSet::new(1, vec![a.clone(), a2.clone()]).unwrap_err(),
            SignerSetError::DuplicatePublicKey {
                first: "a".into(),
                second: "a2".into()
            }
        );
        a2.public = key(2, "x").1.public;
        a2.keyid = "a".into();
        assert_eq!(
            SignerSet::new(1, vec![a.clone(), a2]).unwrap_err(),
            SignerSetError::DuplicateKeyid("a".into())
        );
        // The identity point (y = 1) has small order.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        let weak = SignerKey {
            keyid: "w".into(),
            public: VerifyingKey::from_bytes(&weak).unwrap(),
            not_before: None,
            not_after: None,
        };
        assert_eq!(
            SignerSet::new(1, vec![a, weak]).unwrap_err(),
            SignerSetError::WeakKey("w".into())
        );
    }

    #[test]
    fn check_counts_only_configured_valid_keys_over_the_pae() {
        let (ska, mut a) = key(1, "a");
        a.not_before = Some(100);
        a.not_after = Some(200);
        let set = SignerSet::new(1, vec![a]).unwrap();
        let payload = b"{\"x\":1}";
        let sig = sign_payload(&ska, payload);
        let pae = dsse::pae(payload);
        assert_eq!(set.check("a", &sig, &pae, 150), Ok(0));
        assert!(set.check("a", &sig, &pae, 99).is_err());
        assert!(set.check("a", &sig, &pae, 201).is_err());
        assert!(set.check("b", &sig, &pae, 150).is_err());
        // A signature over the raw payload, not the PAE, does not count.
        use ed25519_dalek::Signer;
        let raw = ska.sign(payload).to_bytes();
        assert!(set.check("a", &raw, &pae, 150).is_err());
    }
}
