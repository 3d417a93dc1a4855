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
    hex_lower(&sha2::Sha256::digest(bytes))
}

/// Lower-case hex of `bytes`: the same text as `hex::encode`, which collects a `char`
/// iterator and cost the writer thousands of instructions per proposal id, commit hash and
/// approving key; `hex::encode_to_slice` fills a stack buffer per 32 bytes instead (no
/// zero-filled heap buffer, no capacity check per digit).
pub fn hex_lower(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for chunk in bytes.chunks(32) {
        let mut buf = [0u8; 64];
        let hex = &mut buf[..chunk.len() * 2];
        hex::encode_to_slice(chunk, hex).expect("the buffer holds two digits per byte");
        out.extend_from_slice(hex);
    }
    String::from_utf8(out).expect("hex digits are ASCII")
}

/// Append `s` to `out` as a JSON string, byte for byte as `serde_json` writes it. Most strings
/// on the commit path (hashes, ids, base64, timestamps) hold nothing to escape: those are
/// copied whole after one branch-free scan; any other goes through serde_json itself.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly the control bytes, `"` and `\` (not DEL, not `/`, nothing
    // non-ASCII). A fold without an early exit, so the scan vectorises.
    let needs_escape = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        serde_json::to_writer(&mut *out, s).expect("a string serializes");
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Append the decimal digits of `n` to `out`, as `write!(out, "{n}")` does, through `itoa`
/// (the formatter serde_json itself uses) rather than `core::fmt`.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Append the decimal digits of `n` (with its sign) to `out`, as `write!(out, "{n}")` does.
pub fn write_i64(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Is `s` 64 lower-case hex digits (a SHA-256 in the form the formats use)?
pub fn is_hash_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_lower_is_hex_encode() {
        for seed in [0u8, 1, 0x5a, 0xff] {
            let bytes: [u8; 71] = std::array::from_fn(|i| seed.wrapping_mul(i as u8 + 7));
            for len in [0, 1, 31, 32, 33, 64, 71] {
                assert_eq!(hex_lower(&bytes[..len]), hex::encode(&bytes[..len]));
            }
        }
        assert_eq!(
            sha256_hex(b"abc"),
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"abc"))
        );
    }

    #[test]
    fn write_json_str_is_serde_json_for_every_byte() {
        let mut cases: Vec<String> = (0u8..0x80).map(|b| format!("a{}z", b as char)).collect();
        cases.extend(
            [
                "",
                "plain",
                "\u{7f}",
                "é/ü\u{2028}😀",
                "two \"quotes\" and \\ a backslash",
                "tab\tnew\nline",
                "2026-12-01T03:00:00.000Z",
            ]
            .map(String::from),
        );
        for s in cases {
            let mut out = b"prefix".to_vec();
            write_json_str(&mut out, &s);
            let mut want = b"prefix".to_vec();
            want.extend(serde_json::to_vec(&s).unwrap());
            assert_eq!(out, want, "{s:?}");
        }
    }

    #[test]
    fn write_u64_is_display() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ] {
            let mut out = vec![b'x'];
            write_u64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
        for n in [0, 1, -1, 10, -10, 1_767_225_600, i64::MAX, i64::MIN] {
            let mut out = vec![b'x'];
            write_i64(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
