//! Response serialization and correlation ids, free of sockets: the response head the transport
//! writes (status line, the handler's headers, our framing), reason phrases, which statuses carry
//! no body, and the `X-Corr-Id` rules.
//!
//! Invariant: the transport alone owns framing. A handler's `Content-Length`, `Connection`,
//! `Transfer-Encoding` and `X-Corr-Id` headers never reach the wire (`chunked` stream heads
//! get the transport's own `Transfer-Encoding: chunked`), and no header
//! value can inject a line (CR/LF are blanked).

use super::Response;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// An `X-Corr-Id` we accept from a client: 1..=64 visible ASCII characters.
pub(crate) fn valid_corr_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b))
}

/// A fresh correlation id: 16 hex characters, a random per-process prefix and a counter.
pub(crate) fn new_corr_id() -> String {
    static PREFIX: OnceLock<u32> = OnceLock::new();
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        if getrandom::getrandom(&mut b).is_ok() {
            u32::from_le_bytes(b)
        } else {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            nanos ^ std::process::id().rotate_left(16)
        }
    });
    // Written digit by digit: `format!`'s padded hex was 8 % of a whole `GET /registry/head`
    // (callgrind), and every request without its own id gets one.
    let id = (u64::from(prefix) << 32) | u64::from(COUNTER.fetch_add(1, Ordering::Relaxed));
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for shift in (0..16).rev() {
        out.push(HEX[((id >> (shift * 4)) & 0xf) as usize] as char);
    }
    out
}

/// Statuses that never carry a body (nor, here, a `Content-Length`).
pub(crate) fn bodiless(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Serialize a response head. `content_length` None omits the header (streams, bodiless
/// statuses); `chunked` announces `Transfer-Encoding: chunked` (HTTP/1.1 streams). The transport owns framing: the handler's `Content-Length`, `Connection`,
/// `Transfer-Encoding` and `X-Corr-Id` headers are replaced by ours, and CR/LF in header values
/// are blanked so a value can never inject a header.
pub(crate) fn response_head(
    response: &Response,
    corr_id: &str,
    close: bool,
    content_length: Option<usize>,
    chunked: bool,
) -> Vec<u8> {
    let status = if (100..=999).contains(&response.status) {
        response.status
    } else {
        500
    };
    let mut out = String::with_capacity(160 + response.headers.len() * 48);
    out.push_str("HTTP/1.1 ");
    push_decimal(&mut out, u64::from(status));
    out.push(' ');
    out.push_str(reason(status));
    out.push_str("\r\n");
    for (name, value) in &response.headers {
        if [
            "content-length",
            "connection",
            "transfer-encoding",
            "x-corr-id",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(name);
        out.push_str(": ");
        if value.contains(['\r', '\n']) {
            out.push_str(&value.replace(['\r', '\n'], " "));
        } else {
            out.push_str(value);
        }
        out.push_str("\r\n");
    }
    if let Some(n) = content_length {
        out.push_str("Content-Length: ");
        push_decimal(&mut out, n as u64);
        out.push_str("\r\n");
    } else if chunked {
        out.push_str("Transfer-Encoding: chunked\r\n");
    }
    out.push_str(if close {
        "Connection: close\r\n"
    } else {
        "Connection: keep-alive\r\n"
    });
    out.push_str("X-Corr-Id: ");
    out.push_str(corr_id);
    out.push_str("\r\n\r\n");
    out.into_bytes()
}

/// Append `n` in decimal. Response heads are written on every request; `core::fmt` was 6 % of
/// a `GET /registry/head` for these two numbers.
pub(crate) fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    out.push_str(std::str::from_utf8(decimal(&mut digits, n)).expect("ASCII digits"));
}

/// `n` in decimal ASCII, written at the end of `digits`: the digits written.
pub(crate) fn decimal(digits: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// The reason phrase of a status (informational only; clients ignore it).
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corr_ids() {
        assert!(valid_corr_id(b"a"));
        assert!(valid_corr_id(&[b'x'; 64]));
        assert!(!valid_corr_id(&[b'x'; 65]));
        assert!(!valid_corr_id(b""));
        assert!(!valid_corr_id(b"has space"));
        assert!(!valid_corr_id("é".as_bytes()));
        assert!(!valid_corr_id(b"tab\there"));
        let a = new_corr_id();
        let b = new_corr_id();
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(a, b);
        assert_eq!(a[..8], b[..8], "one per-process prefix");
    }

    #[test]
    fn decimals_are_what_format_gives() {
        for n in [0u64, 7, 10, 200, 4096, 65_535, u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }

    #[test]
    fn head_serialization() {
        let r = Response::json(200, b"{}".to_vec())
            .header("Content-Length", "999".into())
            .header("X-Evil", "a\r\nSet-Cookie: x".into());
        let head = String::from_utf8(response_head(&r, "cid", false, Some(2), false)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Type: application/json\r\n"));
        assert!(head.contains("Content-Length: 2\r\n"));
        assert!(!head.contains("999"));
        assert!(head.contains("X-Evil: a  Set-Cookie: x\r\n"));
        assert!(head.contains("Connection: keep-alive\r\n"));
        assert!(head.ends_with("X-Corr-Id: cid\r\n\r\n"));
        let head = String::from_utf8(response_head(&r, "cid", true, None, false)).unwrap();
        assert!(!head.contains("Content-Length"));
        assert!(head.contains("Connection: close\r\n"));
    }
}
