//! Signature algorithms of signer keys (docs/FORMATS.md, "Key algorithms"): `ed25519`,
//! `ml-dsa-65` (FIPS 204 ML-DSA-65, pure mode, empty context) and the hybrid
//! `ed25519+ml-dsa-65`; their public keys, signatures, text forms, verification and signing.
//! Every algorithm signs the same DSSE PAE (`dsse::pae`).
//!
//! Invariants:
//! - `PublicKey::verify` is the one decision of whether a signature verifies, for every path
//!   (the verifier pool, recovery, `ronctl registry verify`, followers). A signature verifies
//!   only under a key of its own algorithm; ed25519 (alone or as a hybrid half) uses
//!   `verify_strict`; a hybrid signature verifies only if **both** halves do.
//! - A `PublicKey` holds exactly the parts its algorithm names (ed25519 and/or ML-DSA-65), and
//!   `as_bytes` is their raw concatenation (ed25519 first): 32, 1,952 or 1,984 bytes, so the
//!   length alone tells the algorithm and two keys are the same key exactly when the bytes are.
//! - Nothing here reads a clock or a random source: signing takes its randomness as an argument.

use super::signers::KeyError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use fips204::ml_dsa_65;
use fips204::traits::{KeyGen, SerDes, Signer as _, Verifier as _};
use std::sync::Arc;

/// Bytes of an ed25519 public key.
pub const ED25519_PK_LEN: usize = 32;
/// Bytes of an ed25519 signature.
pub const ED25519_SIG_LEN: usize = 64;
/// Bytes of an ML-DSA-65 public key (FIPS 204, Table 2).
pub const ML_DSA_65_PK_LEN: usize = ml_dsa_65::PK_LEN;
/// Bytes of an ML-DSA-65 signature (FIPS 204, Table 2).
pub const ML_DSA_65_SIG_LEN: usize = ml_dsa_65::SIG_LEN;

/// The ML-DSA context string: empty, as §11 fixes (pure mode; the PAE already binds the
/// payload type, which is what a context would otherwise do).
const ML_DSA_CONTEXT: &[u8] = b"";

/// The signature algorithm of a key (docs/FORMATS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyAlg {
    Ed25519,
    MlDsa65,
    Ed25519MlDsa65,
}

impl KeyAlg {
    pub const ALL: [KeyAlg; 3] = [KeyAlg::Ed25519, KeyAlg::MlDsa65, KeyAlg::Ed25519MlDsa65];

    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::MlDsa65 => "ml-dsa-65",
            KeyAlg::Ed25519MlDsa65 => "ed25519+ml-dsa-65",
        }
    }

    /// Parse an `alg` name.
    pub fn parse(text: &str) -> Result<KeyAlg, KeyError> {
        KeyAlg::ALL
            .into_iter()
            .find(|a| a.as_str() == text)
            .ok_or_else(|| KeyError::UnknownAlg(text.to_string()))
    }

    fn has_ed25519(self) -> bool {
        self != KeyAlg::MlDsa65
    }

    fn has_ml_dsa(self) -> bool {
        self != KeyAlg::Ed25519
    }
}

/// A signer's public key of any algorithm. Cheap to clone (the expanded ML-DSA key is shared).
#[derive(Clone)]
pub struct PublicKey {
    alg: KeyAlg,
    /// ed25519 bytes then ML-DSA-65 bytes, as the algorithm has them.
    bytes: Vec<u8>,
    ed25519: Option<VerifyingKey>,
    /// Expanded once at parse: `try_from_bytes` does the NTT work a verify would otherwise repeat.
    ml_dsa: Option<Arc<ml_dsa_65::PublicKey>>,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.to_text();
        let short = if text.len() > 24 { &text[..24] } else { &text };
        write!(f, "PublicKey({} {short}…)", self.alg.as_str())
    }
}

/// Two keys are equal when they are the same algorithm's same bytes.
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.alg == other.alg && self.bytes == other.bytes
    }
}

impl Eq for PublicKey {}

impl From<VerifyingKey> for PublicKey {
    fn from(key: VerifyingKey) -> PublicKey {
        PublicKey::ed25519(key)
    }
}

impl PublicKey {
    pub fn ed25519(key: VerifyingKey) -> PublicKey {
        PublicKey {
            alg: KeyAlg::Ed25519,
            bytes: key.as_bytes().to_vec(),
            ed25519: Some(key),
            ml_dsa: None,
        }
    }

    /// An ML-DSA-65 key from its 1,952 bytes (FIPS 204 `pkEncode`).
    pub fn ml_dsa_65(bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let key = ml_dsa_key(bytes)?;
        Ok(PublicKey {
            alg: KeyAlg::MlDsa65,
            bytes: bytes.to_vec(),
            ed25519: None,
            ml_dsa: Some(key),
        })
    }

    /// A hybrid key from its two halves.
    pub fn hybrid(ed25519: VerifyingKey, ml_dsa: &[u8]) -> Result<PublicKey, KeyError> {
        let key = ml_dsa_key(ml_dsa)?;
        let mut bytes = ed25519.as_bytes().to_vec();
        bytes.extend_from_slice(ml_dsa);
        Ok(PublicKey {
            alg: KeyAlg::Ed25519MlDsa65,
            bytes,
            ed25519: Some(ed25519),
            ml_dsa: Some(key),
        })
    }

    /// Parse the text form of a key of `alg` (docs/FORMATS.md): lower-case hex; for the hybrid,
    /// the ed25519 hex, `:`, the ML-DSA-65 hex.
    pub fn parse(alg: KeyAlg, text: &str) -> Result<PublicKey, KeyError> {
        match alg {
            KeyAlg::Ed25519 => Ok(PublicKey::ed25519(parse_ed25519(text)?)),
            KeyAlg::MlDsa65 => PublicKey::ml_dsa_65(&parse_ml_dsa_hex(text)?),
            KeyAlg::Ed25519MlDsa65 => {
                let (ed, ml) = text.split_once(':').ok_or(KeyError::HybridNotTwoHalves)?;
                // Each half is checked for its own length, so swapped halves are refused
                // rather than reinterpreted.
                let ed = parse_ed25519(ed)?;
                PublicKey::hybrid(ed, &parse_ml_dsa_hex(ml)?)
            }
        }
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The raw key bytes: ed25519 (32) then ML-DSA-65 (1,952), as the algorithm has them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The raw key bytes, owned.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.bytes.clone()
    }

    /// The text form: lower-case hex, the hybrid's halves joined by `:`.
    pub fn to_text(&self) -> String {
        match self.alg {
            KeyAlg::Ed25519MlDsa65 => format!(
                "{}:{}",
                super::hex_lower(&self.bytes[..ED25519_PK_LEN]),
                super::hex_lower(&self.bytes[ED25519_PK_LEN..])
            ),
            _ => super::hex_lower(&self.bytes),
        }
    }

    /// The ed25519 part (the key itself, or the hybrid's first half).
    pub fn ed25519_part(&self) -> Option<&VerifyingKey> {
        self.ed25519.as_ref()
    }

    /// The ML-DSA-65 part's bytes (the key itself, or the hybrid's second half).
    pub fn ml_dsa_part(&self) -> Option<&[u8]> {
        self.alg.has_ml_dsa().then(|| {
            let start = if self.alg.has_ed25519() {
                ED25519_PK_LEN
            } else {
                0
            };
            &self.bytes[start..]
        })
    }

    /// Does `sig` verify over `msg` under this key? Only a signature of the key's own algorithm
    /// can; ed25519 uses `verify_strict`; a hybrid needs both halves.
    pub fn verify(&self, sig: &Sig, msg: &[u8]) -> bool {
        match (sig, &self.ed25519, &self.ml_dsa) {
            (Sig::Ed25519(s), Some(ed), None) => super::signers::verify_strict(ed, s, msg),
            (Sig::MlDsa65(s), None, Some(ml)) => ml.verify(msg, s, ML_DSA_CONTEXT),
            (Sig::Hybrid(e, m), Some(ed), Some(ml)) => {
                // Both are always checked (no early exit), so the time does not tell which
                // half failed; it is the same work an honest hybrid approval costs.
                let ed_ok = super::signers::verify_strict(ed, e, msg);
                let ml_ok = ml.verify(msg, m, ML_DSA_CONTEXT);
                ed_ok & ml_ok
            }
            _ => false,
        }
    }
}

fn parse_ed25519(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; ED25519_PK_LEN] = lower_hex(text)
        .and_then(|b| b.try_into().ok())
        .ok_or(KeyError::PublicKeyNotHex)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::PublicKeyNotAPoint)
}

fn parse_ml_dsa_hex(text: &str) -> Result<Vec<u8>, KeyError> {
    lower_hex(text)
        .filter(|b| b.len() == ML_DSA_65_PK_LEN)
        .ok_or(KeyError::MlDsaPublicKeyNotHex)
}

fn ml_dsa_key(bytes: &[u8]) -> Result<Arc<ml_dsa_65::PublicKey>, KeyError> {
    let array: [u8; ML_DSA_65_PK_LEN] = bytes
        .try_into()
        .map_err(|_| KeyError::MlDsaPublicKeyNotHex)?;
    ml_dsa_65::PublicKey::try_from_bytes(array)
        .map(Arc::new)
        .map_err(|_| KeyError::MlDsaPublicKeyInvalid)
}

/// Lower-case hex only: one spelling per key, so text forms compare as keys do.
fn lower_hex(text: &str) -> Option<Vec<u8>> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    hex::decode(text).ok()
}

/// Standard base64 with padding of an ed25519 signature: 64 bytes, 22 blocks of 4 characters.
const ED25519_SIG_B64_LEN: usize = ED25519_SIG_LEN.div_ceil(3) * 4;

/// A signature of any algorithm, decoded. Its algorithm is known from its shape alone (64 or
/// 3,309 bytes, or two halves joined by `:`), so it can be decoded before its key is looked up.
#[derive(Clone, PartialEq, Eq)]
pub enum Sig {
    Ed25519([u8; ED25519_SIG_LEN]),
    MlDsa65(Box<[u8; ML_DSA_65_SIG_LEN]>),
    Hybrid([u8; ED25519_SIG_LEN], Box<[u8; ML_DSA_65_SIG_LEN]>),
}

impl std::fmt::Debug for Sig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = self.encode();
        write!(f, "Sig({} {}…)", self.alg().as_str(), &text[..16])
    }
}

impl From<[u8; ED25519_SIG_LEN]> for Sig {
    fn from(sig: [u8; ED25519_SIG_LEN]) -> Sig {
        Sig::Ed25519(sig)
    }
}

impl From<&[u8; ED25519_SIG_LEN]> for Sig {
    fn from(sig: &[u8; ED25519_SIG_LEN]) -> Sig {
        Sig::Ed25519(*sig)
    }
}

impl Sig {
    /// Decode a signature as a client sends it: base64 (standard or URL-safe, padded or not) of
    /// 64 bytes (ed25519) or 3,309 bytes (ML-DSA-65), or for a hybrid the two joined by `:`
    /// (ed25519 first). Anything else (a truncated or missing half, swapped halves) is `None`.
    pub fn decode(text: &str) -> Option<Sig> {
        match text.split_once(':') {
            Some((ed, ml)) => Some(Sig::Hybrid(
                super::dsse::decode_sig(ed)?,
                decode_ml_dsa(ml)?,
            )),
            None => {
                let bytes = super::dsse::unb64(text)?;
                match bytes.len() {
                    ED25519_SIG_LEN => Some(Sig::Ed25519(bytes.try_into().ok()?)),
                    ML_DSA_65_SIG_LEN => Some(Sig::MlDsa65(Box::new(bytes.try_into().ok()?))),
                    _ => None,
                }
            }
        }
    }

    /// The stored form (docs/FORMATS.md): standard base64 with padding, the hybrid's halves
    /// joined by `:`. For ed25519 it is `dsse::encode_sig`, unchanged.
    pub fn encode(&self) -> String {
        match self {
            // Through a stack buffer: `encode` zero-fills a heap buffer first (a `calloc`),
            // which cost more than the encoding of these 64 bytes; the quorum count encodes
            // every approval of every commit.
            Sig::Ed25519(s) => {
                let mut buf = [0u8; ED25519_SIG_B64_LEN];
                let n = STANDARD
                    .encode_slice(s, &mut buf)
                    .expect("sized for a signature's base64");
                std::str::from_utf8(&buf[..n])
                    .expect("base64 is ASCII")
                    .to_owned()
            }
            Sig::MlDsa65(s) => STANDARD.encode(&s[..]),
            Sig::Hybrid(e, m) => format!("{}:{}", STANDARD.encode(e), STANDARD.encode(&m[..])),
        }
    }

    pub fn alg(&self) -> KeyAlg {
        match self {
            Sig::Ed25519(_) => KeyAlg::Ed25519,
            Sig::MlDsa65(_) => KeyAlg::MlDsa65,
            Sig::Hybrid(..) => KeyAlg::Ed25519MlDsa65,
        }
    }
}

fn decode_ml_dsa(text: &str) -> Option<Box<[u8; ML_DSA_65_SIG_LEN]>> {
    let bytes = super::dsse::unb64(text)?;
    Some(Box::new(bytes.try_into().ok()?))
}

/// A signer's private key of any algorithm, from its 32-byte seed(s): the ed25519 seed, and the
/// FIPS 204 key-generation seed ξ for ML-DSA-65 (`ML-DSA.KeyGen_internal(ξ)`), so a key file
/// holds 32 bytes per half whatever the algorithm.
pub struct SecretKey {
    alg: KeyAlg,
    ed25519: Option<ed25519_dalek::SigningKey>,
    ml_dsa: Option<(ml_dsa_65::PrivateKey, ml_dsa_65::PublicKey)>,
    seeds: Vec<[u8; 32]>,
}

/// Never the seeds: only what the public key shows.
impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({:?})", self.public_key())
    }
}

impl SecretKey {
    /// The key of `alg` from its seeds: one for ed25519 or ML-DSA-65, two (ed25519 first) for
    /// the hybrid.
    pub fn from_seeds(alg: KeyAlg, seeds: &[[u8; 32]]) -> Result<SecretKey, String> {
        let want = if alg == KeyAlg::Ed25519MlDsa65 { 2 } else { 1 };
        if seeds.len() != want {
            return Err(format!(
                "an {} key has {want} seed(s), not {}",
                alg.as_str(),
                seeds.len()
            ));
        }
        let mut it = seeds.iter();
        let ed25519 = alg
            .has_ed25519()
            .then(|| ed25519_dalek::SigningKey::from_bytes(it.next().expect("counted")));
        let ml_dsa = alg.has_ml_dsa().then(|| {
            let (pk, sk) = ml_dsa_65::KG::keygen_from_seed(it.next().expect("counted"));
            (sk, pk)
        });
        Ok(SecretKey {
            alg,
            ed25519,
            ml_dsa,
            seeds: seeds.to_vec(),
        })
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The seeds, ed25519 first (what a key file stores).
    pub fn seeds(&self) -> &[[u8; 32]] {
        &self.seeds
    }

    pub fn public_key(&self) -> PublicKey {
        let ml = self.ml_dsa.as_ref().map(|(_, pk)| pk.clone().into_bytes());
        match (self.ed25519.as_ref(), ml) {
            (Some(ed), None) => PublicKey::ed25519(ed.verifying_key()),
            (None, Some(ml)) => PublicKey::ml_dsa_65(&ml).expect("a generated key parses"),
            (Some(ed), Some(ml)) => {
                PublicKey::hybrid(ed.verifying_key(), &ml).expect("a generated key parses")
            }
            (None, None) => unreachable!("from_seeds sets at least one part"),
        }
    }

    /// Sign `msg` (the DSSE PAE). `rnd` is ML-DSA's per-signature randomness (FIPS 204
    /// Algorithm 2, line 5): 32 fresh random bytes for the hedged signing ronctl does, or 32
    /// zero bytes for the deterministic variant; ed25519 ignores it (it is deterministic).
    pub fn sign(&self, msg: &[u8], rnd: &[u8; 32]) -> Result<Sig, String> {
        use ed25519_dalek::Signer;
        let ed = self.ed25519.as_ref().map(|k| k.sign(msg).to_bytes());
        let ml = match &self.ml_dsa {
            Some((sk, _)) => Some(Box::new(
                sk.try_sign_with_seed(rnd, msg, ML_DSA_CONTEXT)
                    .map_err(|e| format!("ML-DSA-65 signing failed: {e}"))?,
            )),
            None => None,
        };
        Ok(match (ed, ml) {
            (Some(e), None) => Sig::Ed25519(e),
            (None, Some(m)) => Sig::MlDsa65(m),
            (Some(e), Some(m)) => Sig::Hybrid(e, m),
            (None, None) => unreachable!("from_seeds sets at least one part"),
        })
    }

    /// Sign `payload` as a DSSE approval (over its PAE).
    pub fn sign_payload(&self, payload: &[u8], rnd: &[u8; 32]) -> Result<Sig, String> {
        self.sign(&super::dsse::pae(payload), rnd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dsse;

    #[test]
    fn an_ed25519_signature_encodes_as_standard_base64() {
        for seed in [0u8, 1, 0x3f, 0xfb, 0xff] {
            let sig: [u8; ED25519_SIG_LEN] =
                std::array::from_fn(|i| seed.wrapping_mul(i as u8 + 3));
            let text = Sig::Ed25519(sig).encode();
            assert_eq!(text, STANDARD.encode(sig));
            assert_eq!(text, dsse::encode_sig(&sig));
            assert_eq!(text.len(), ED25519_SIG_B64_LEN);
        }
    }

    fn key(alg: KeyAlg, seed: u8) -> SecretKey {
        let seeds: Vec<[u8; 32]> = match alg {
            KeyAlg::Ed25519MlDsa65 => vec![[seed; 32], [seed.wrapping_add(100); 32]],
            _ => vec![[seed; 32]],
        };
        SecretKey::from_seeds(alg, &seeds).unwrap()
    }

    #[test]
    fn sizes_are_fips_204_ml_dsa_65() {
        assert_eq!(ML_DSA_65_PK_LEN, 1952);
        assert_eq!(ML_DSA_65_SIG_LEN, 3309);
        let pk = key(KeyAlg::Ed25519MlDsa65, 1).public_key();
        assert_eq!(pk.as_bytes().len(), 32 + 1952);
        assert_eq!(pk.to_text().len(), 64 + 1 + 3904);
    }

    #[test]
    fn every_alg_signs_the_pae_and_round_trips_its_text_forms() {
        for alg in KeyAlg::ALL {
            let sk = key(alg, 7);
            let pk = sk.public_key();
            assert_eq!(pk.alg(), alg);
            let back = PublicKey::parse(alg, &pk.to_text()).unwrap();
            assert_eq!(back, pk);
            let sig = sk.sign_payload(b"{}", &[1; 32]).unwrap();
            assert_eq!(sig.alg(), alg);
            let decoded = Sig::decode(&sig.encode()).unwrap();
            assert_eq!(decoded, sig);
            assert!(pk.verify(&sig, &dsse::pae(b"{}")), "{alg:?}");
            // Over the raw payload instead of the PAE: never.
            let raw = sk.sign(b"{}", &[1; 32]).unwrap();
            assert!(!pk.verify(&raw, &dsse::pae(b"{}")), "{alg:?}");
        }
    }

    #[test]
    fn a_signature_verifies_only_under_its_own_algorithm() {
        let hybrid = key(KeyAlg::Ed25519MlDsa65, 3);
        let pae = dsse::pae(b"p");
        let Sig::Hybrid(e, m) = hybrid.sign(&pae, &[0; 32]).unwrap() else {
            panic!("a hybrid key signs hybrid");
        };
        let pk = hybrid.public_key();
        assert!(pk.verify(&Sig::Hybrid(e, m.clone()), &pae));
        // Either half alone does not count under the hybrid key.
        assert!(!pk.verify(&Sig::Ed25519(e), &pae));
        assert!(!pk.verify(&Sig::MlDsa65(m.clone()), &pae));
        // One half invalid: not counted.
        let mut bad = m.clone();
        bad[100] ^= 1;
        assert!(!pk.verify(&Sig::Hybrid(e, bad), &pae));
        let mut bad_e = e;
        bad_e[0] ^= 1;
        assert!(!pk.verify(&Sig::Hybrid(bad_e, m), &pae));
    }

    #[test]
    fn malformed_signatures_and_keys_are_refused_by_shape() {
        let sk = key(KeyAlg::Ed25519MlDsa65, 5);
        let text = sk.sign(b"m", &[0; 32]).unwrap().encode();
        let (ed, ml) = text.split_once(':').unwrap();
        assert!(Sig::decode(&format!("{ed}:")).is_none(), "half missing");
        assert!(Sig::decode(&format!(":{ml}")).is_none(), "half missing");
        assert!(
            Sig::decode(&format!("{ml}:{ed}")).is_none(),
            "halves swapped"
        );
        assert!(Sig::decode(&ml[..ml.len() - 8]).is_none(), "truncated");
        let pk = sk.public_key().to_text();
        let (e, m) = pk.split_once(':').unwrap();
        assert_eq!(
            PublicKey::parse(KeyAlg::Ed25519MlDsa65, &format!("{m}:{e}")).unwrap_err(),
            KeyError::PublicKeyNotHex
        );
        assert_eq!(
            PublicKey::parse(KeyAlg::MlDsa65, &m[..m.len() - 2]).unwrap_err(),
            KeyError::MlDsaPublicKeyNotHex
        );
        assert_eq!(
            PublicKey::parse(KeyAlg::MlDsa65, &m.to_uppercase()).unwrap_err(),
            KeyError::MlDsaPublicKeyNotHex
        );
        assert_eq!(
            PublicKey::parse(KeyAlg::Ed25519MlDsa65, e).unwrap_err(),
            KeyError::HybridNotTwoHalves
        );
    }

    #[test]
    fn deterministic_signing_is_reproducible_and_hedged_is_not() {
        let sk = key(KeyAlg::MlDsa65, 9);
        let a = sk.sign(b"m", &[0; 32]).unwrap();
        assert_eq!(a, sk.sign(b"m", &[0; 32]).unwrap());
        assert_ne!(a, sk.sign(b"m", &[1; 32]).unwrap());
    }
}
