//! The signer set: threshold M and N configured keys (ed25519, ML-DSA-65 or the hybrid of the
//! two, `super::algs`) with optional validity windows
//! (docs/FORMATS.md), its canonical bytes `SS` and digest (docs/FORMATS.md), and its JSON form (genesis record,
//! `GET /registry/signers`, the `set_signers` op).
//!
//! Invariant: a `SignerSet` built by `SignerSet::new` (every path goes through it) has
//! 1 ≤ threshold ≤ N, distinct non-empty keyids, distinct canonically encoded public keys (and
//! no ed25519 or ML-DSA-65 key shared between two keys, as one key or as a hybrid's half), no
//! weak (small-order) ed25519 key, and validity times that `SS` can spell (whole seconds, years
//! 0000–9999 in UTC). Approvals are counted by configured slot, never by client-supplied bytes.

pub use super::algs::{KeyAlg, PublicKey, SecretKey, Sig};
use super::dsse;
use crate::error::ApiError;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// First line of the canonical signer-set bytes (docs/FORMATS.md).
pub const SS_HEADER: &str = "svc-registry/signers/v1";

/// Why one key (as text, from the config or JSON) is refused. The Display texts of the first
/// variants are the config's historical messages, kept word for word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyError {
    PublicKeyNotHex,
    PublicKeyNotAPoint,
    /// `field` is `not_before` or `not_after`.
    TimeNotRfc3339 {
        field: &'static str,
        text: String,
    },
    TimeNotWholeSeconds {
        field: &'static str,
        text: String,
    },
    TimeOutOfRange {
        field: &'static str,
        text: String,
    },
    UnknownAlg(String),
    /// An ML-DSA-65 key (alone or as a hybrid's second half) that is not 3,904 lower-case hex
    /// digits.
    MlDsaPublicKeyNotHex,
    /// 1,952 bytes that FIPS 204 `pkDecode` refuses.
    MlDsaPublicKeyInvalid,
    /// A hybrid key that is not two halves joined by `:`.
    HybridNotTwoHalves,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::PublicKeyNotHex => {
                write!(f, "public_key must be 64 lower-case hex digits (32 bytes)")
            }
            KeyError::PublicKeyNotAPoint => write!(f, "public_key is not a valid ed25519 point"),
            KeyError::TimeNotRfc3339 { field, text } => {
                write!(f, "{field} {text:?} is not RFC 3339")
            }
            KeyError::TimeNotWholeSeconds { field, text } => write!(
                f,
                "{field} {text:?} has a fraction of a second; the signer set records whole seconds"
            ),
            KeyError::TimeOutOfRange { field, text } => write!(
                f,
                "{field} {text:?} is outside the years 0000-9999 in UTC"
            ),
            KeyError::UnknownAlg(alg) => write!(
                f,
                "alg {alg:?} is unknown (expected \"ed25519\", \"ml-dsa-65\" or \"ed25519+ml-dsa-65\")"
            ),
            KeyError::MlDsaPublicKeyNotHex => write!(
                f,
                "an ML-DSA-65 public_key must be 3904 lower-case hex digits (1952 bytes)"
            ),
            KeyError::MlDsaPublicKeyInvalid => {
                write!(f, "public_key is not a valid ML-DSA-65 key")
            }
            KeyError::HybridNotTwoHalves => write!(
                f,
                "an ed25519+ml-dsa-65 public_key is the ed25519 hex, \":\", then the ML-DSA-65 hex"
            ),
        }
    }
}

/// Parse an RFC 3339 validity time into Unix seconds. Any offset is accepted (it is normalised
/// to UTC in `SS`), but not a fraction of a second: `SS` spells whole seconds, and truncating
/// would silently move the window.
pub fn parse_time(field: &'static str, text: &str) -> Result<i64, KeyError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| KeyError::TimeNotRfc3339 {
        field,
        text: text.to_string(),
    })?;
    if t.nanosecond() != 0 {
        return Err(KeyError::TimeNotWholeSeconds {
            field,
            text: text.to_string(),
        });
    }
    let unix = t.unix_timestamp();
    if time_text(unix).is_none() {
        return Err(KeyError::TimeOutOfRange {
            field,
            text: text.to_string(),
        });
    }
    Ok(unix)
}

/// A validity time in the form `SS` and the JSON form use: RFC 3339, UTC, `Z`, whole seconds
/// (`2026-01-01T00:00:00Z`). `None` when the year is outside 0000–9999 (RFC 3339 cannot spell it).
pub fn time_text(unix_secs: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp(unix_secs).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    t.format(&Rfc3339).ok()
}

/// Parse one key given as text (config TOML or JSON form): `alg`, lower-case hex `public_key`,
/// optional RFC 3339 times. Set-level checks (weak keys, duplicates, windows) are
/// `SignerSet::new`'s.
pub fn parse_key(
    keyid: &str,
    alg: &str,
    public_key: &str,
    not_before: Option<&str>,
    not_after: Option<&str>,
) -> Result<SignerKey, KeyError> {
    let public = PublicKey::parse(KeyAlg::parse(alg)?, public_key)?;
    Ok(SignerKey {
        keyid: keyid.to_string(),
        public,
        not_before: not_before
            .map(|t| parse_time("not_before", t))
            .transpose()?,
        not_after: not_after.map(|t| parse_time("not_after", t)).transpose()?,
    })
}

/// The JSON form of a signer set (docs/FORMATS.md): the genesis record's `"signers"`,
/// `GET /registry/signers`, and (with `"op"`) the `set_signers` op. Absent times are `null`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerSetJson {
    pub threshold: usize,
    pub keys: Vec<SignerKeyJson>,
}

/// One key of `SignerSetJson`. `alg` is required; the times may be absent or `null`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerKeyJson {
    pub keyid: String,
    pub alg: String,
    pub public_key: String,
    #[serde(default)]
    pub not_before: Option<String>,
    #[serde(default)]
    pub not_after: Option<String>,
}

/// One configured key. Parsed once at load: decoding a key (a point decompression, an ML-DSA
/// expansion) is not free.
#[derive(Clone, Debug)]
pub struct SignerKey {
    pub keyid: String,
    /// Carries its algorithm (`PublicKey::alg`), so no separate field can disagree with it.
    pub public: PublicKey,
    /// Unix seconds, inclusive.
    pub not_before: Option<i64>,
    /// Unix seconds, inclusive.
    pub not_after: Option<i64>,
}

impl SignerKey {
    /// The key's algorithm, read from the key itself.
    pub fn alg(&self) -> KeyAlg {
        self.public.alg()
    }

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

/// Two sets are equal when their canonical bytes are: the same threshold and keys, whatever
/// order the keys were configured in (that order is not part of the set).
impl PartialEq for SignerSet {
    fn eq(&self, other: &SignerSet) -> bool {
        self.canonical_bytes() == other.canonical_bytes()
    }
}

impl Eq for SignerSet {}

/// Why a signer set is refused at load.
#[derive(Debug, PartialEq, Eq)]
pub enum SignerSetError {
    ThresholdOutOfRange {
        threshold: usize,
        keys: usize,
    },
    DuplicateKeyid(String),
    DuplicatePublicKey {
        first: String,
        second: String,
    },
    WeakKey(String),
    EmptyKeyid,
    /// A keyid with whitespace or a control character: the canonical bytes (one
    /// space-separated line per key) and the §4 string S (`keyid + " " + sig + "\n"`) could
    /// not tell where it ends.
    KeyidSeparator(String),
    InvertedWindow(String),
    /// A key given as text is refused; `index` is its position in the list as given.
    Key {
        index: usize,
        keyid: String,
        error: KeyError,
    },
    /// The public key is not in canonical encoding (a second spelling of some point): two
    /// spellings of one key would count as two keys.
    NonCanonicalKey(String),
    /// A validity time `SS` cannot spell (outside the years 0000–9999).
    TimeOutOfRange(String),
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
            SignerSetError::KeyidSeparator(k) => write!(
                f,
                "signers.keys: keyid {k:?} contains whitespace or a control character (the \
                 signer set's canonical lines and the commit hash separate fields with spaces \
                 and newlines)"
            ),
            SignerSetError::InvertedWindow(k) => {
                write!(f, "signers.keys: {k:?} has not_after before not_before")
            }
            SignerSetError::Key {
                index,
                keyid,
                error,
            } => write!(f, "signers.keys[{index}] ({keyid:?}): {error}"),
            SignerSetError::NonCanonicalKey(k) => write!(
                f,
                "signers.keys: public_key of {k:?} is not canonically encoded"
            ),
            SignerSetError::TimeOutOfRange(k) => write!(
                f,
                "signers.keys: {k:?} has a validity time outside the years 0000-9999"
            ),
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
            if key
                .keyid
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(SignerSetError::KeyidSeparator(key.keyid.clone()));
            }
            if let Some(ed) = key.public.ed25519_part() {
                if ed.is_weak() {
                    return Err(SignerSetError::WeakKey(key.keyid.clone()));
                }
                // Distinctness is checked on the bytes, so they must be the one spelling of
                // the point.
                if ed.to_edwards().compress().as_bytes() != ed.as_bytes() {
                    return Err(SignerSetError::NonCanonicalKey(key.keyid.clone()));
                }
            }
            if [key.not_before, key.not_after]
                .iter()
                .flatten()
                .any(|t| time_text(*t).is_none())
            {
                return Err(SignerSetError::TimeOutOfRange(key.keyid.clone()));
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
                // By part, not only by whole key: an ed25519 key that is also a hybrid's half
                // (or one ML-DSA key in two hybrids) is one holder who would count twice.
                let same_ed = matches!(
                    (other.public.ed25519_part(), key.public.ed25519_part()),
                    (Some(a), Some(b)) if a == b
                );
                let same_ml = matches!(
                    (other.public.ml_dsa_part(), key.public.ml_dsa_part()),
                    (Some(a), Some(b)) if a == b
                );
                if same_ed || same_ml {
                    return Err(SignerSetError::DuplicatePublicKey {
                        first: other.keyid.clone(),
                        second: key.keyid.clone(),
                    });
                }
            }
        }
        Ok(SignerSet { threshold, keys })
    }

    /// Build and validate a set from its JSON form (the genesis record, `set_signers`).
    pub fn from_json_form(form: &SignerSetJson) -> Result<SignerSet, SignerSetError> {
        let keys = form
            .keys
            .iter()
            .enumerate()
            .map(|(index, k)| {
                parse_key(
                    &k.keyid,
                    &k.alg,
                    &k.public_key,
                    k.not_before.as_deref(),
                    k.not_after.as_deref(),
                )
                .map_err(|error| SignerSetError::Key {
                    index,
                    keyid: k.keyid.clone(),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        SignerSet::new(form.threshold, keys)
    }

    /// Parse JSON bytes in the form of `SignerSetJson` and validate the set. The message names
    /// the problem (an unknown field, a bad key, the threshold …).
    pub fn parse_json(bytes: &[u8]) -> Result<SignerSet, String> {
        let form: SignerSetJson =
            serde_json::from_slice(bytes).map_err(|e| format!("signer set is not valid: {e}"))?;
        SignerSet::from_json_form(&form).map_err(|e| e.to_string())
    }

    /// The JSON form (docs/FORMATS.md), keys sorted by keyid like `SS`, so that equal sets have equal
    /// forms whatever order they were configured in.
    pub fn to_json_form(&self) -> SignerSetJson {
        SignerSetJson {
            threshold: self.threshold,
            keys: self
                .sorted_keys()
                .into_iter()
                .map(|k| SignerKeyJson {
                    keyid: k.keyid.clone(),
                    alg: k.alg().as_str().to_string(),
                    public_key: k.public.to_text(),
                    not_before: k.not_before.map(spell_time),
                    not_after: k.not_after.map(spell_time),
                })
                .collect(),
        }
    }

    /// The JSON form with the keys in the set's own order (as configured, or as a
    /// `set_signers` listed them): what the genesis record stores and `/registry/signers`
    /// serves, so an operator sees the set as written. Equal sets may differ here; compare
    /// sets (or their digests), not these forms.
    pub fn to_json_form_as_listed(&self) -> SignerSetJson {
        let mut form = self.to_json_form();
        form.keys.sort_by_key(|k| self.slot(&k.keyid));
        form
    }

    /// The canonical signer-set bytes `SS` (docs/FORMATS.md): `svc-registry/signers/v1`, `threshold M`,
    /// then `key KEYID ALG PUBLIC_KEY NOT_BEFORE NOT_AFTER` per key sorted by keyid (byte order),
    /// each line ending in `\n`; absent times are `-`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = format!("{SS_HEADER}\nthreshold {}\n", self.threshold);
        for k in self.sorted_keys() {
            let time = |t: Option<i64>| t.map_or_else(|| "-".to_string(), spell_time);
            out.push_str(&format!(
                "key {} {} {} {} {}\n",
                k.keyid,
                k.alg().as_str(),
                k.public.to_text(),
                time(k.not_before),
                time(k.not_after)
            ));
        }
        out.into_bytes()
    }

    /// `signers_digest = SHA256hex(SS)`.
    pub fn digest(&self) -> String {
        super::sha256_hex(&self.canonical_bytes())
    }

    /// Keys in keyid byte order (`String`'s `Ord` is byte order).
    fn sorted_keys(&self) -> Vec<&SignerKey> {
        let mut keys: Vec<&SignerKey> = self.keys.iter().collect();
        keys.sort_by(|a, b| a.keyid.cmp(&b.keyid));
        keys
    }

    /// The configured slot of a keyid.
    pub fn slot(&self, keyid: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.keyid == keyid)
    }

    /// Check one approval: the keyid is configured, valid at `now`, and `sig` verifies (strictly,
    /// both halves of a hybrid) over the PAE of `payload`. Returns the configured slot.
    pub fn check(
        &self,
        keyid: &str,
        sig: &Sig,
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
        if !key.public.verify(sig, pae) {
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
                public_key: k.public.to_text(),
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

/// `signers_digest` of a set (docs/FORMATS.md).
pub fn signers_digest(set: &SignerSet) -> String {
    set.digest()
}

/// A validated time in `SS` form. `SignerSet::new` refused every time this cannot spell, so a
/// failure here is a set mutated after validation: a programmer error.
fn spell_time(unix_secs: i64) -> String {
    time_text(unix_secs).expect("SignerSet::new admits only times SS can spell")
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

/// What a `set_signers` changes (docs/FORMATS.md), as a signer reviews it: keys added and removed,
/// keys kept under the same keyid but changed (public key or validity window), and the
/// threshold old → new. Keys are compared by keyid; each side is in the JSON form.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SetChange {
    pub threshold: ThresholdChange,
    pub added: Vec<SignerKeyJson>,
    pub removed: Vec<SignerKeyJson>,
    pub changed: Vec<KeyChange>,
    /// Keyids present in both sets, unchanged.
    pub unchanged: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ThresholdChange {
    pub old: usize,
    pub new: usize,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyChange {
    pub keyid: String,
    pub old: SignerKeyJson,
    pub new: SignerKeyJson,
}

/// The change from `old` to `new` (keys in keyid order).
pub fn set_change(old: &SignerSet, new: &SignerSet) -> SetChange {
    let old_keys = old.to_json_form().keys;
    let new_keys = new.to_json_form().keys;
    let find = |keys: &[SignerKeyJson], id: &str| keys.iter().find(|k| k.keyid == id).cloned();
    let mut change = SetChange {
        threshold: ThresholdChange {
            old: old.threshold,
            new: new.threshold,
        },
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
        unchanged: Vec::new(),
    };
    for k in &new_keys {
        match find(&old_keys, &k.keyid) {
            None => change.added.push(k.clone()),
            Some(o) if o == *k => change.unchanged.push(k.keyid.clone()),
            Some(o) => change.changed.push(KeyChange {
                keyid: k.keyid.clone(),
                old: o,
                new: k.clone(),
            }),
        }
    }
    for k in &old_keys {
        if find(&new_keys, &k.keyid).is_none() {
            change.removed.push(k.clone());
        }
    }
    change
}

/// A set of `n` keys with seeds 1..=n (keyids `k1`…), for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_set(n: u8, threshold: usize) -> std::sync::Arc<SignerSet> {
    let keys = (1..=n)
        .map(|seed| SignerKey {
            keyid: format!("k{seed}"),
            public: ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .into(),
            not_before: None,
            not_after: None,
        })
        .collect();
    std::sync::Arc::new(SignerSet::new(threshold, keys).expect("a valid test set"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn key(seed: u8, keyid: &str) -> (SigningKey, SignerKey) {
        let sk = SigningKey::from_bytes(&[seed; 32]);
        let pk = SignerKey {
            keyid: keyid.to_string(),
            public: sk.verifying_key().into(),
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
            public: VerifyingKey::from_bytes(&weak).unwrap().into(),
            not_before: None,
            not_after: None,
        };
        assert_eq!(
            SignerSet::new(1, vec![a, weak]).unwrap_err(),
            SignerSetError::WeakKey("w".into())
        );
    }

    #[test]
    fn a_key_shared_as_a_hybrid_half_is_a_duplicate() {
        let pk = |alg: KeyAlg, seeds: &[[u8; 32]]| {
            SecretKey::from_seeds(alg, seeds).unwrap().public_key()
        };
        let slot = |keyid: &str, public: PublicKey| SignerKey {
            keyid: keyid.into(),
            public,
            not_before: None,
            not_after: None,
        };
        let hybrid = slot("h", pk(KeyAlg::Ed25519MlDsa65, &[[1; 32], [2; 32]]));
        let cases = [
            // The hybrid's ed25519 half alone, its ML-DSA half alone, another hybrid sharing
            // one half: each is one holder who would count twice.
            slot("e", pk(KeyAlg::Ed25519, &[[1; 32]])),
            slot("m", pk(KeyAlg::MlDsa65, &[[2; 32]])),
            slot("h2", pk(KeyAlg::Ed25519MlDsa65, &[[3; 32], [2; 32]])),
        ];
        for other in cases {
            let keyid = other.keyid.clone();
            assert_eq!(
                SignerSet::new(1, vec![hybrid.clone(), other]).unwrap_err(),
                SignerSetError::DuplicatePublicKey {
                    first: "h".into(),
                    second: keyid
                }
            );
        }
        let fresh = slot("f", pk(KeyAlg::Ed25519MlDsa65, &[[4; 32], [5; 32]]));
        assert!(SignerSet::new(2, vec![hybrid, fresh]).is_ok());
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
        assert_eq!(set.check("a", &sig.into(), &pae, 150), Ok(0));
        assert!(set.check("a", &sig.into(), &pae, 99).is_err());
        assert!(set.check("a", &sig.into(), &pae, 201).is_err());
        assert!(set.check("b", &sig.into(), &pae, 150).is_err());
        // A signature over the raw payload, not the PAE, does not count.
        use ed25519_dalek::Signer;
        let raw = ska.sign(payload).to_bytes();
        assert!(set.check("a", &raw.into(), &pae, 150).is_err());
    }

    #[test]
    fn keyids_with_separators_are_refused() {
        for bad in ["a b", "a\nb", "a\tb", "a\u{7f}", " a", "a\u{a0}b"] {
            let (_, k) = key(1, bad);
            let e = SignerSet::new(1, vec![k]).unwrap_err();
            assert_eq!(
                e,
                SignerSetError::KeyidSeparator(bad.to_string()),
                "{bad:?}"
            );
        }
        for good in ["alice", "dev-a", "k0", "alice-pq", "ops:2026/key.1", "ключ"] {
            let (_, k) = key(1, good);
            assert!(SignerSet::new(1, vec![k]).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn canonical_bytes_sort_by_keyid_bytes_and_spell_times_in_utc() {
        let (_, mut b) = key(2, "b");
        let (_, mut big) = key(3, "B");
        let (_, a) = key(1, "a");
        b.not_before = Some(1_767_225_600);
        big.not_after = Some(0);
        let set = SignerSet::new(2, vec![b, a, big]).unwrap();
        let hexof = |seed: u8| {
            hex::encode(
                SigningKey::from_bytes(&[seed; 32])
                    .verifying_key()
                    .as_bytes(),
            )
        };
        let want = format!(
            "svc-registry/signers/v1\nthreshold 2\nkey B ed25519 {} - 1970-01-01T00:00:00Z\nkey a ed25519 {} - -\nkey b ed25519 {} 2026-01-01T00:00:00Z -\n",
            hexof(3),
            hexof(1),
            hexof(2)
        );
        assert_eq!(String::from_utf8(set.canonical_bytes()).unwrap(), want);
        assert_eq!(set.digest(), crate::domain::sha256_hex(want.as_bytes()));
        let form = set.to_json_form();
        assert_eq!(form.keys[0].keyid, "B");
        assert_eq!(form.keys[1].not_before, None);
        assert_eq!(
            form.keys[2].not_before.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
    }

    #[test]
    fn times_ss_cannot_spell_are_refused() {
        assert_eq!(
            parse_time("not_after", "2026-01-01T01:00:00+01:00"),
            Ok(1_767_225_600)
        );
        assert!(matches!(
            parse_time("not_after", "0000-01-01T00:00:00+01:00"),
            Err(KeyError::TimeOutOfRange { .. })
        ));
        let (_, mut a) = key(1, "a");
        a.not_after = Some(i64::from(i32::MAX) * 1000);
        assert_eq!(
            SignerSet::new(1, vec![a]).unwrap_err(),
            SignerSetError::TimeOutOfRange("a".into())
        );
    }

    #[test]
    fn a_non_canonical_public_key_is_refused() {
        // y = 2^255 - 19 + 3 spells the same point as y = 3 (a point of large order): a second
        // spelling of one key would count as a second key.
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xed + 3;
        bytes[31] = 0x7f;
        let public = VerifyingKey::from_bytes(&bytes).expect("decompresses");
        assert!(!public.is_weak());
        let k = SignerKey {
            keyid: "n".into(),
            public: public.into(),
            not_before: None,
            not_after: None,
        };
        assert_eq!(
            SignerSet::new(1, vec![k]).unwrap_err(),
            SignerSetError::NonCanonicalKey("n".into())
        );
    }

    #[test]
    fn set_change_names_added_removed_changed_and_the_threshold() {
        let (_, a) = key(1, "a");
        let (_, b) = key(2, "b");
        let (_, c) = key(3, "c");
        let (_, d) = key(4, "d");
        let mut b2 = b.clone();
        b2.not_after = Some(1_900_000_000);
        let old = SignerSet::new(2, vec![a.clone(), b, c]).unwrap();
        let new = SignerSet::new(3, vec![d, b2, a]).unwrap();
        let ch = set_change(&old, &new);
        assert_eq!(ch.threshold, ThresholdChange { old: 2, new: 3 });
        assert_eq!(
            ch.added.iter().map(|k| &k.keyid[..]).collect::<Vec<_>>(),
            ["d"]
        );
        assert_eq!(
            ch.removed.iter().map(|k| &k.keyid[..]).collect::<Vec<_>>(),
            ["c"]
        );
        assert_eq!(ch.changed.len(), 1);
        assert_eq!(ch.changed[0].keyid, "b");
        assert_eq!(
            ch.changed[0].new.not_after.as_deref(),
            Some("2030-03-17T17:46:40Z")
        );
        assert_eq!(ch.unchanged, ["a"]);
    }
}
