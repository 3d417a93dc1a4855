//! Macaroons in the libmacaroons V2 binary format, HMAC-SHA256: mint, attenuate, serialize,
//! parse and check the signature chain. No I/O, no clock, no caveat semantics (`caveats.rs`).
//!
//! Wire format (libmacaroons `doc/format.txt`; pymacaroons `serializers/binary_serializer.py`):
//!
//! ```text
//! macaroon: 0x02 [LOCATION] IDENTIFIER EOS { caveat } EOS SIGNATURE
//! caveat:        [LOCATION] IDENTIFIER [VID] EOS
//! field:    type:varint len:varint bytes[len]        EOS is the single byte 0
//! types:    LOCATION=1 IDENTIFIER=2 VID=4 SIGNATURE=6
//! ```
//!
//! Signature chain: `k = HMAC(key = "macaroons-key-generator", msg = secret)`,
//! `sig0 = HMAC(k, identifier)`, `sig_{i+1} = HMAC(sig_i, caveat_i)`. This is the derivation
//! of libmacaroons and of pymacaroons (`utils.generate_derived_key`, `create_initial_signature`,
//! `sign_first_party_caveat`), so a secret shared with either mints interchangeable tokens.
//!
//! Invariant: [`Macaroon::from_bytes`] accepts only what [`Macaroon::to_bytes`] of some
//! first-party macaroon within the bounds below could produce, up to an optional header location:
//! minimal varints, fields in grammar order, no unknown field types, no third-party caveat, a
//! 32-byte signature, nothing after it. Anything else is an error, never a best-effort parse.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The key of the HMAC that turns a root secret into the key of the first signature.
pub const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";
/// The V2 format's version byte.
pub const VERSION_V2: u8 = 2;
/// Longest token accepted, in base64 characters: a bearer token travels in an HTTP header.
pub const TOKEN_CHARS_MAX: usize = 4096;
/// Most caveats a token may carry; attenuation beyond this is refused, not truncated.
pub const CAVEATS_MAX: usize = 32;
/// Longest location, identifier or caveat, in bytes.
pub const FIELD_BYTES_MAX: usize = 1024;
/// Length of an HMAC-SHA256 signature.
pub const SIGNATURE_BYTES: usize = 32;

const FIELD_EOS: u64 = 0;
const FIELD_LOCATION: u64 = 1;
const FIELD_IDENTIFIER: u64 = 2;
const FIELD_VID: u64 = 4;
const FIELD_SIGNATURE: u64 = 6;

/// Why bytes or text are not a token we accept. The message names the structural fault only:
/// it never echoes token bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    TooLong,
    Base64,
    Empty,
    Version(u8),
    Truncated,
    Varint,
    UnknownField(u64),
    UnexpectedField { expected: &'static str, found: u64 },
    FieldTooLong,
    TooManyCaveats,
    ThirdPartyCaveat,
    SignatureLength(usize),
    TrailingBytes(usize),
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FormatError::TooLong => write!(f, "token longer than {TOKEN_CHARS_MAX} characters"),
            FormatError::Base64 => write!(f, "token is not base64url (or base64)"),
            FormatError::Empty => write!(f, "token is empty"),
            FormatError::Version(v) => write!(f, "not a V2 macaroon (first byte {v:#04x})"),
            FormatError::Truncated => write!(f, "token ends inside a field"),
            FormatError::Varint => write!(f, "bad varint in token"),
            FormatError::UnknownField(t) => write!(f, "unknown field type {t} in token"),
            FormatError::UnexpectedField { expected, found } => {
                write!(f, "expected {expected}, found field type {found}")
            }
            FormatError::FieldTooLong => write!(f, "field longer than {FIELD_BYTES_MAX} bytes"),
            FormatError::TooManyCaveats => write!(f, "more than {CAVEATS_MAX} caveats"),
            FormatError::ThirdPartyCaveat => write!(f, "third-party caveats are refused"),
            FormatError::SignatureLength(n) => {
                write!(f, "signature is {n} bytes, not {SIGNATURE_BYTES}")
            }
            FormatError::TrailingBytes(n) => write!(f, "{n} bytes after the signature"),
        }
    }
}

impl std::error::Error for FormatError {}

/// A first-party macaroon. `signature` is whatever the token claims until
/// [`Macaroon::verify_signature`] says it matches a root secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Macaroon {
    /// Optional hint of where the token is used; not signed, never trusted.
    pub location: Option<Vec<u8>>,
    pub identifier: Vec<u8>,
    pub caveats: Vec<Vec<u8>>,
    pub signature: [u8; SIGNATURE_BYTES],
}

// The signature is a bearer credential (anyone holding it with the identifier and caveats can
// use or attenuate the token), so it never goes to a log through `{:?}`.
impl std::fmt::Debug for Macaroon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Macaroon")
            .field("identifier", &String::from_utf8_lossy(&self.identifier))
            .field("caveats", &self.caveats.len())
            .finish_non_exhaustive()
    }
}

/// `HMAC-SHA256(key, msg)`.
fn hmac(key: &[u8], msg: &[u8]) -> [u8; SIGNATURE_BYTES] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The key of the first signature, derived from a root secret as libmacaroons does.
pub fn derive_key(secret: &[u8]) -> [u8; SIGNATURE_BYTES] {
    hmac(KEY_GENERATOR, secret)
}

impl Macaroon {
    /// A new macaroon without caveats, signed with `secret`.
    pub fn mint(secret: &[u8], identifier: &[u8]) -> Macaroon {
        assert!(
            identifier.len() <= FIELD_BYTES_MAX,
            "identifier within bounds"
        );
        Macaroon {
            location: None,
            identifier: identifier.to_vec(),
            caveats: Vec::new(),
            signature: hmac(&derive_key(secret), identifier),
        }
    }

    /// Attenuate: append a first-party caveat and chain the signature. Needs no root secret.
    pub fn add_first_party_caveat(&mut self, caveat: &[u8]) -> Result<(), FormatError> {
        if self.caveats.len() >= CAVEATS_MAX {
            return Err(FormatError::TooManyCaveats);
        }
        if caveat.len() > FIELD_BYTES_MAX {
            return Err(FormatError::FieldTooLong);
        }
        self.signature = hmac(&self.signature, caveat);
        self.caveats.push(caveat.to_vec());
        Ok(())
    }

    /// Whether the signature chain is the one `secret` gives, compared in constant time.
    pub fn verify_signature(&self, secret: &[u8]) -> bool {
        let mut sig = derive_key(secret);
        let mut chain = &self.identifier[..];
        // Run the chain up to its last link, then let hmac's `verify_slice` (constant time,
        // through `subtle`) compare the last link with the claimed signature.
        for caveat in &self.caveats {
            sig = hmac(&sig, chain);
            chain = caveat;
        }
        let mut mac = HmacSha256::new_from_slice(&sig).expect("HMAC takes a key of any length");
        mac.update(chain);
        mac.verify_slice(&self.signature).is_ok()
    }

    /// The V2 binary form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION_V2];
        if let Some(location) = &self.location {
            put_field(&mut out, FIELD_LOCATION, location);
        }
        put_field(&mut out, FIELD_IDENTIFIER, &self.identifier);
        out.push(FIELD_EOS as u8);
        for caveat in &self.caveats {
            put_field(&mut out, FIELD_IDENTIFIER, caveat);
            out.push(FIELD_EOS as u8);
        }
        out.push(FIELD_EOS as u8);
        put_field(&mut out, FIELD_SIGNATURE, &self.signature);
        out
    }

    /// The bearer form: unpadded base64url of the V2 bytes, as pymacaroons writes it.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.to_bytes())
    }

    /// Parse the bearer form: base64url or standard base64, padding optional (libmacaroons'
    /// format note asks readers to take both alphabets; pymacaroons writes base64url without
    /// padding).
    pub fn from_base64(text: &str) -> Result<Macaroon, FormatError> {
        if text.len() > TOKEN_CHARS_MAX {
            return Err(FormatError::TooLong);
        }
        let unpadded = text.trim_end_matches('=');
        if text.len() - unpadded.len() > 2 {
            return Err(FormatError::Base64);
        }
        // Mapping the standard alphabet onto the URL-safe one lets one strict decoder (which
        // also refuses non-zero trailing bits) read both.
        let url: String = unpadded
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                c => c,
            })
            .collect();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(url)
            .map_err(|_| FormatError::Base64)?;
        Macaroon::from_bytes(&bytes)
    }

    /// Parse the V2 binary form strictly (see the module invariant).
    pub fn from_bytes(bytes: &[u8]) -> Result<Macaroon, FormatError> {
        let (&version, rest) = bytes.split_first().ok_or(FormatError::Empty)?;
        if version != VERSION_V2 {
            return Err(FormatError::Version(version));
        }
        let mut r = Reader { rest };

        // Header: [LOCATION] IDENTIFIER EOS.
        let mut location = None;
        let mut t = r.field_type()?;
        if t == FIELD_LOCATION {
            location = Some(r.payload()?.to_vec());
            t = r.field_type()?;
        }
        expect(t, FIELD_IDENTIFIER, "identifier")?;
        let identifier = r.payload()?.to_vec();
        expect(r.field_type()?, FIELD_EOS, "end of header")?;

        // Caveats until an empty section; a caveat with a location or a vid is third-party.
        let mut caveats = Vec::new();
        loop {
            match r.field_type()? {
                FIELD_EOS => break,
                FIELD_LOCATION | FIELD_VID => return Err(FormatError::ThirdPartyCaveat),
                FIELD_IDENTIFIER => {}
                other => return Err(unexpected(other, "caveat identifier")),
            }
            if caveats.len() == CAVEATS_MAX {
                return Err(FormatError::TooManyCaveats);
            }
            caveats.push(r.payload()?.to_vec());
            match r.field_type()? {
                FIELD_EOS => {}
                FIELD_VID => return Err(FormatError::ThirdPartyCaveat),
                other => return Err(unexpected(other, "end of caveat")),
            }
        }

        expect(r.field_type()?, FIELD_SIGNATURE, "signature")?;
        let sig = r.payload()?;
        let signature: [u8; SIGNATURE_BYTES] = sig
            .try_into()
            .map_err(|_| FormatError::SignatureLength(sig.len()))?;
        if !r.rest.is_empty() {
            return Err(FormatError::TrailingBytes(r.rest.len()));
        }
        Ok(Macaroon {
            location,
            identifier,
            caveats,
            signature,
        })
    }

    /// The signature as lower-case hex (what pymacaroons' `signature` shows).
    pub fn signature_hex(&self) -> String {
        hex::encode(self.signature)
    }

    /// Whether this macaroon was minted by `secret` with exactly these contents: a test helper
    /// that goes through the non-constant-time path on purpose, to cross-check
    /// [`Macaroon::verify_signature`].
    #[cfg(test)]
    fn signature_matches_slowly(&self, secret: &[u8]) -> bool {
        let mut sig = hmac(&derive_key(secret), &self.identifier);
        for caveat in &self.caveats {
            sig = hmac(&sig, caveat);
        }
        sig == self.signature
    }
}

fn unexpected(found: u64, expected: &'static str) -> FormatError {
    match found {
        FIELD_EOS | FIELD_LOCATION | FIELD_IDENTIFIER | FIELD_VID | FIELD_SIGNATURE => {
            FormatError::UnexpectedField { expected, found }
        }
        other => FormatError::UnknownField(other),
    }
}

fn expect(found: u64, want: u64, expected: &'static str) -> Result<(), FormatError> {
    if found == want {
        Ok(())
    } else {
        Err(unexpected(found, expected))
    }
}

fn put_field(out: &mut Vec<u8>, field_type: u64, payload: &[u8]) {
    put_varint(out, field_type);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// Append `n` as an unsigned LEB128 varint (protobuf's encoding, as the format names).
pub fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Read an unsigned LEB128 varint from the front of `bytes`: its value and its length. Refuses
/// an encoding that runs off the end, overflows u64, or is longer than needed (a trailing
/// `0x80 … 0x00`), so each value has exactly one encoding.
pub fn get_varint(bytes: &[u8]) -> Result<(u64, usize), FormatError> {
    let mut n: u64 = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let shift = 7 * i as u32;
        if shift > 63 || (shift == 63 && b > 1) {
            return Err(FormatError::Varint);
        }
        n |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            if i > 0 && b == 0 {
                return Err(FormatError::Varint);
            }
            return Ok((n, i + 1));
        }
    }
    Err(FormatError::Truncated)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn field_type(&mut self) -> Result<u64, FormatError> {
        let (t, len) = get_varint(self.rest)?;
        self.rest = &self.rest[len..];
        Ok(t)
    }

    /// The length-prefixed payload after a field type other than EOS.
    fn payload(&mut self) -> Result<&'a [u8], FormatError> {
        let (n, len) = get_varint(self.rest)?;
        self.rest = &self.rest[len..];
        if n > FIELD_BYTES_MAX as u64 {
            return Err(FormatError::FieldTooLong);
        }
        let n = n as usize;
        if n > self.rest.len() {
            return Err(FormatError::Truncated);
        }
        let (payload, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(n: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_varint(&mut v, n);
        v
    }

    #[test]
    fn varint_round_trips_at_every_byte_boundary() {
        for n in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            300,
            u32::MAX as u64,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let enc = varint(n);
            assert_eq!(get_varint(&enc), Ok((n, enc.len())), "{n}");
        }
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(0x7f), [0x7f]);
        assert_eq!(varint(0x80), [0x80, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
    }

    #[test]
    fn varint_refuses_truncated_overlong_and_overflowing_encodings() {
        assert_eq!(get_varint(&[]), Err(FormatError::Truncated));
        assert_eq!(get_varint(&[0x80]), Err(FormatError::Truncated));
        assert_eq!(get_varint(&[0xff, 0xff]), Err(FormatError::Truncated));
        // Non-minimal: 0 and 1 written in two bytes.
        assert_eq!(get_varint(&[0x80, 0x00]), Err(FormatError::Varint));
        assert_eq!(get_varint(&[0x81, 0x00]), Err(FormatError::Varint));
        // 2^64 (one past u64::MAX) and an 11-byte encoding.
        let mut past = vec![0x80; 9];
        past.push(0x02);
        assert_eq!(get_varint(&past), Err(FormatError::Varint));
        let mut eleven = vec![0xff; 10];
        eleven.push(0x01);
        assert_eq!(get_varint(&eleven), Err(FormatError::Varint));
        // Bytes after the varint are left alone.
        assert_eq!(get_varint(&[0x05, 0xff]), Ok((5, 1)));
    }

    /// pymacaroons' README example, also in libmacaroons' tests: the same secret, identifier
    /// and caveat give the same signatures in both.
    #[test]
    fn signatures_match_the_libmacaroons_examples() {
        let secret = b"this is our super secret key; only we should know it";
        let mut m = Macaroon::mint(secret, b"we used our secret key");
        assert_eq!(
            m.signature_hex(),
            "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
        );
        m.add_first_party_caveat(b"test = caveat").unwrap();
        assert_eq!(
            m.signature_hex(),
            "197bac7a044af33332865b9266e26d493bdd668a660e44d88ce1a998c23dbd67"
        );
        assert!(m.verify_signature(secret));
        assert!(m.signature_matches_slowly(secret));
        assert!(!m.verify_signature(b"another secret"));
    }

    fn sample() -> Macaroon {
        let mut m = Macaroon::mint(&[7; 32], b"v1:k1:00ff");
        m.add_first_party_caveat(b"scope = read").unwrap();
        m.add_first_party_caveat(b"registry = r").unwrap();
        m
    }

    #[test]
    fn round_trips_bytes_and_base64_in_both_alphabets_with_and_without_padding() {
        let m = sample();
        assert_eq!(Macaroon::from_bytes(&m.to_bytes()), Ok(m.clone()));
        assert_eq!(Macaroon::from_base64(&m.to_base64()), Ok(m.clone()));
        let std_padded = base64::engine::general_purpose::STANDARD.encode(m.to_bytes());
        assert_eq!(Macaroon::from_base64(&std_padded), Ok(m.clone()));
        let url_padded = base64::engine::general_purpose::URL_SAFE.encode(m.to_bytes());
        assert_eq!(Macaroon::from_base64(&url_padded), Ok(m.clone()));
        assert_eq!(
            Macaroon::from_base64(&format!("{url_padded}===")),
            Err(FormatError::Base64)
        );
        assert_eq!(
            Macaroon::from_base64("not base64!"),
            Err(FormatError::Base64)
        );
        assert_eq!(Macaroon::from_base64(""), Err(FormatError::Empty));
    }

    #[test]
    fn each_attenuation_changes_the_signature_and_still_verifies() {
        let mut m = Macaroon::mint(&[1; 32], b"v1:k:n");
        let mut seen = vec![m.signature];
        for i in 0..CAVEATS_MAX {
            m.add_first_party_caveat(format!("c{i}").as_bytes())
                .unwrap();
            assert!(!seen.contains(&m.signature));
            seen.push(m.signature);
            assert!(m.verify_signature(&[1; 32]));
        }
        assert_eq!(
            m.add_first_party_caveat(b"one more"),
            Err(FormatError::TooManyCaveats)
        );
        // Dropping the last caveat (the one attack attenuation must stop) breaks the chain.
        let mut dropped = m.clone();
        dropped.caveats.pop();
        assert!(!dropped.verify_signature(&[1; 32]));
    }

    #[test]
    fn parser_refuses_every_structural_fault() {
        let good = sample().to_bytes();
        let check = |bytes: &[u8], want: FormatError| {
            assert_eq!(Macaroon::from_bytes(bytes), Err(want), "{bytes:02x?}");
        };
        check(&[], FormatError::Empty);
        check(&[1], FormatError::Version(1));
        // Every strict prefix is refused (never read as a shorter valid token).
        for cut in 1..good.len() {
            assert!(Macaroon::from_bytes(&good[..cut]).is_err(), "prefix {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        check(&trailing, FormatError::TrailingBytes(1));

        // Hand-built tokens: header, caveats, signature.
        let build = |parts: &[&[u8]]| -> Vec<u8> {
            let mut v = vec![VERSION_V2];
            for p in parts {
                v.extend_from_slice(p);
            }
            v
        };
        let field = |t: u64, p: &[u8]| {
            let mut v = Vec::new();
            put_field(&mut v, t, p);
            v
        };
        let id = field(FIELD_IDENTIFIER, b"v1:k:n");
        let sig = field(FIELD_SIGNATURE, &[0; 32]);
        let cav = field(FIELD_IDENTIFIER, b"scope = read");
        let loc = field(FIELD_LOCATION, b"https://x");
        let vid = field(FIELD_VID, b"vid");
        let eos: &[u8] = &[0];

        // Accepted shapes: no caveats; a header location (pymacaroons writes an empty one).
        assert!(Macaroon::from_bytes(&build(&[&id, eos, eos, &sig])).is_ok());
        let with_loc = Macaroon::from_bytes(&build(&[&field(1, b""), &id, eos, eos, &sig]));
        assert_eq!(with_loc.unwrap().location, Some(Vec::new()));

        check(
            &build(&[eos, eos, &sig]),
            FormatError::UnexpectedField {
                expected: "identifier",
                found: 0,
            },
        );
        check(
            &build(&[&field(3, b"x"), eos, eos, &sig]),
            FormatError::UnknownField(3),
        );
        check(
            &build(&[&id, &field(5, b"x"), eos, &sig]),
            FormatError::UnknownField(5),
        );
        check(
            &build(&[&id, eos, &cav, &field(7, b"x"), eos, eos, &sig]),
            FormatError::UnknownField(7),
        );
        check(
            &build(&[&id, eos, &cav, &vid, eos, eos, &sig]),
            FormatError::ThirdPartyCaveat,
        );
        check(
            &build(&[&id, eos, &loc, &cav, &vid, eos, eos, &sig]),
            FormatError::ThirdPartyCaveat,
        );
        check(
            &build(&[&id, eos, &vid, eos, eos, &sig]),
            FormatError::ThirdPartyCaveat,
        );
        check(
            &build(&[&id, eos, eos, &field(FIELD_SIGNATURE, &[0; 31])]),
            FormatError::SignatureLength(31),
        );
        check(
            &build(&[&id, eos, eos, &field(FIELD_IDENTIFIER, &[0; 32])]),
            FormatError::UnexpectedField {
                expected: "signature",
                found: 2,
            },
        );
        // A length that runs past the end, and one over the field bound.
        check(&build(&[&[2, 10], b"abc"]), FormatError::Truncated);
        let mut huge = vec![2];
        put_varint(&mut huge, FIELD_BYTES_MAX as u64 + 1);
        check(&build(&[&huge]), FormatError::FieldTooLong);
        let mut absurd = vec![2];
        put_varint(&mut absurd, u64::MAX);
        check(&build(&[&absurd]), FormatError::FieldTooLong);

        // One caveat past the bound.
        let mut many: Vec<&[u8]> = vec![&id, eos];
        for _ in 0..=CAVEATS_MAX {
            many.push(&cav);
            many.push(eos);
        }
        many.push(eos);
        many.push(&sig);
        check(&build(&many), FormatError::TooManyCaveats);
    }

    #[test]
    fn base64_text_over_the_bound_is_refused_before_decoding() {
        let long = "A".repeat(TOKEN_CHARS_MAX + 1);
        assert_eq!(Macaroon::from_base64(&long), Err(FormatError::TooLong));
    }

    #[test]
    fn debug_output_leaves_the_signature_out() {
        let m = sample();
        let shown = format!("{m:?}");
        assert!(!shown.contains(&m.signature_hex()), "{shown}");
        assert!(!shown.contains(&format!("{:?}", m.signature)), "{shown}");
    }
}
