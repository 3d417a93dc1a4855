//! Percent-decoding of request targets (RFC 3986 §2.1), free of sockets: the path split into
//! segments and the query into key/value pairs, each decoded exactly once.
//!
//! Decisions (docs/API.md "Percent-encoding"):
//! - the path is split on `/` *before* decoding, so `%2F` inside a segment is a literal `/` in
//!   that segment and never a separator; no id, kind or version may contain `/`, so such a
//!   segment is refused by the route's own validation (400), never silently re-routed;
//! - a `%` not followed by two hex digits, or a decoded segment or value that is not UTF-8, is
//!   refused (400) rather than passed through as the lenient decoders do;
//! - in the query, `+` means a space (`application/x-www-form-urlencoded`, what `requests`,
//!   `httpx` and `URLSearchParams` send); in the path it is a literal `+`;
//! - a query key given twice is refused (400): first-wins or last-wins would each let a client
//!   and a proxy disagree about what was asked.
//!
//! Invariant: the transport validates every request target with these functions before a
//! handler runs, so a handler calling them again on the same request cannot get an error.

use percent_encoding::percent_decode_str;
use std::borrow::Cow;

/// Decode one path segment or query component. `plus_is_space` for query components.
/// Borrowed when there is nothing to decode (no `%`, and no `+` to turn into a space): the
/// common case on every request costs no allocation.
pub(crate) fn decode(raw: &str, plus_is_space: bool) -> Result<Cow<'_, str>, String> {
    let b = raw.as_bytes();
    let mut i = 0;
    let mut escapes = false;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!("bad percent-encoding in {raw:?}"));
            }
            escapes = true;
            i += 3;
        } else {
            i += 1;
        }
    }
    let spaced = plus_is_space && raw.contains('+');
    if !escapes && !spaced {
        return Ok(Cow::Borrowed(raw));
    }
    let raw: Cow<'_, str> = if spaced {
        Cow::Owned(raw.replace('+', " "))
    } else {
        Cow::Borrowed(raw)
    };
    percent_decode_str(&raw)
        .decode_utf8()
        .map(|s| Cow::Owned(s.into_owned()))
        .map_err(|_| format!("{raw:?} does not decode to UTF-8"))
}

/// The decoded segments of an origin-form path, in order (`/a/b` → `a`, `b`; `/` → one empty
/// segment), each borrowed from `path` unless it had escapes: no `Vec` per request. An `Err`
/// item for a segment that does not decode; `Err` at once if the path does not start with `/`.
pub(crate) fn segments(
    path: &str,
) -> Result<impl Iterator<Item = Result<Cow<'_, str>, String>>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("path {path:?} does not start with /"))?;
    Ok(rest.split('/').map(|s| decode(s, false)))
}

/// Check that every segment of `path` decodes (the transport's check before a handler runs),
/// without keeping any.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    for segment in segments(path)? {
        segment?;
    }
    Ok(())
}

/// The decoded segments of an origin-form path (`/a/b` → `["a", "b"]`; `/` → `[""]`).
pub(crate) fn path_segments(path: &str) -> Result<Vec<String>, String> {
    segments(path)?.map(|s| s.map(Cow::into_owned)).collect()
}

/// The decoded `key=value` pairs of a raw query (empty pieces skipped; `key` alone has an empty
/// value). A key given twice is an error.
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let k = decode(k, true)?.into_owned();
        if out.iter().any(|(seen, _)| *seen == k) {
            return Err(format!("query parameter {k:?} is given more than once"));
        }
        let v = decode(v, true)?.into_owned();
        out.push((k, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode_once_and_keep_encoded_slashes_inside() {
        assert_eq!(
            path_segments("/registry/descriptors/node/hx%3Ahost-22").unwrap(),
            ["registry", "descriptors", "node", "hx:host-22"]
        );
        // Decoded once: %253A is the text "%3A", not ":".
        assert_eq!(path_segments("/a%253A").unwrap(), ["a%3A"]);
        assert_eq!(path_segments("/a%2Fb/c").unwrap(), ["a/b", "c"]);
        assert_eq!(path_segments("/+1").unwrap(), ["+1"]);
        assert_eq!(path_segments("/caf%C3%A9").unwrap(), ["café"]);
        for bad in ["/a%", "/a%3", "/a%zz", "/%FF", "/%C3"] {
            assert!(path_segments(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn query_pairs_decode_plus_and_refuse_repeats() {
        assert_eq!(
            query_pairs(Some("after=hx%3Ahost-22&limit=2&flag&&x=a+b%2Bc")).unwrap(),
            [
                ("after".to_string(), "hx:host-22".to_string()),
                ("limit".into(), "2".into()),
                ("flag".into(), "".into()),
                ("x".into(), "a b+c".into()),
            ]
        );
        assert!(query_pairs(None).unwrap().is_empty());
        assert!(query_pairs(Some("a=1&a=2")).is_err());
        // The same key, differently encoded, is still the same key.
        assert!(query_pairs(Some("after=1&%61fter=2")).is_err());
        assert!(query_pairs(Some("a=%G0")).is_err());
        assert!(query_pairs(Some("a=%80")).is_err());
    }
}
