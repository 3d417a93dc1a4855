//! DSSE (Dead Simple Signing Envelope) pre-authentication encoding and signature text forms
//! (docs/FORMATS.md).
//!
//! The signed message is `"DSSEv1" SP LEN(type) SP type SP LEN(payload) SP payload` over the exact
//! proposal bytes, so any DSSE or ed25519 tool can produce and check approvals, and a signature
//! for one payload type can never be replayed as a signature over another.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

/// The DSSE payloadType of a registry proposal.
pub const PAYLOAD_TYPE: &str = "application/vnd.svc-registry.proposal.v1+json";

/// The PAE bytes that a signer signs for `payload`.
pub fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + PAYLOAD_TYPE.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(PAYLOAD_TYPE.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(PAYLOAD_TYPE.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Decode a signature given as base64 in the standard or URL-safe alphabet, padded or not.
/// Returns `None` unless it decodes to exactly 64 bytes.
pub fn decode_sig(text: &str) -> Option<[u8; 64]> {
    let bytes = [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())?;
    bytes.try_into().ok()
}

/// The stored form of a signature: standard base64 with padding (docs/FORMATS.md).
pub fn encode_sig(sig: &[u8; 64]) -> String {
    STANDARD.encode(sig)
}

/// Standard base64 (with padding) of arbitrary bytes, as used for envelope payloads.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Decode standard or URL-safe base64, padded or not.
pub fn unb64(text: &str) -> Option<Vec<u8>> {
    [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_definition() {
        let got = pae(b"{}");
        let want = format!("DSSEv1 {} {} 2 {{}}", PAYLOAD_TYPE.len(), PAYLOAD_TYPE);
        assert_eq!(got, want.as_bytes());
        assert_eq!(PAYLOAD_TYPE.len(), 45);
    }

    #[test]
    fn pae_counts_bytes_not_chars() {
        let payload = "é".as_bytes();
        assert!(pae(payload).ends_with(b" 2 \xc3\xa9"));
    }

    #[test]
    fn signatures_decode_from_both_alphabets_and_reencode_standard() {
        let sig = [0xfbu8; 64];
        let std = STANDARD.encode(sig);
        let url = URL_SAFE.encode(sig);
        assert_ne!(std, url);
        assert_eq!(decode_sig(&std), Some(sig));
        assert_eq!(decode_sig(&url), Some(sig));
        assert_eq!(decode_sig(url.trim_end_matches('=')), Some(sig));
        assert_eq!(encode_sig(&decode_sig(&url).unwrap()), std);
    }

    #[test]
    fn signatures_of_the_wrong_length_are_refused() {
        assert_eq!(decode_sig(&STANDARD.encode([1u8; 63])), None);
        assert_eq!(decode_sig(&STANDARD.encode([1u8; 65])), None);
        assert_eq!(decode_sig("not base64!"), None);
    }
}
