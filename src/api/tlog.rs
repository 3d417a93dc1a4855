//! The transparency log's routes on the registry listener (docs/API.md "Transparency log"):
//! `/registry/checkpoint`, `/registry/vkey`, `/registry/tile/…`, `/registry/proof/inclusion` and
//! `/registry/proof/consistency`.
//!
//! Invariant: nothing is answered beyond the tree the `tlog` thread published (a size past it is
//! `404 not_found`, like a version past HEAD); the routes read the tree file (its map, or
//! positioned reads past it) and the right edges the `tlog` thread folded, and never wait on
//! another thread. A proof answer allocates its proof and its body and nothing per hash.

use crate::error::ApiError;
use crate::http::{Request, Response};
use crate::tlog::tree::{Hash, Tile};
use crate::tlog::{Tlog, TlogError};
use base64::Engine;

/// Full tiles never change (docs/API.md).
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn off() -> ApiError {
    ApiError::not_found("the transparency log is off ([log] enabled = false)")
}

fn not_ready() -> ApiError {
    ApiError::unavailable("the transparency log is still checking its tree at start-up")
}

fn failed(e: TlogError) -> ApiError {
    match e {
        TlogError::Beyond { size, served } => ApiError::not_found(format!(
            "tree size {size} is beyond the published tree of {served} versions"
        )),
        TlogError::Unreadable(detail) => {
            log::error!("msg=\"tree file read failed\" error={detail:?}");
            ApiError::unavailable("the tree file could not be read (see the server log)")
        }
    }
}

/// Base64 characters of one hash (32 bytes: ten 3-byte groups and a padded pair).
const HASH_B64: usize = 44;

fn hashes_json(hashes: &[Hash]) -> Response {
    // Written out directly (base64 needs no JSON escaping): a proof answer is on the hot read
    // path, and a `serde_json::Value` of strings costs an allocation per hash. Each hash is
    // encoded into a stack buffer (`encode_string`'s chunked writer cost as much again).
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = Vec::with_capacity(14 + hashes.len() * (HASH_B64 + 3));
    body.extend_from_slice(b"{\"hashes\":[");
    let mut buf = [0u8; HASH_B64];
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        let n = b64
            .encode_slice(h, &mut buf)
            .expect("44 bytes hold a 32-byte hash in base64");
        body.push(b'"');
        body.extend_from_slice(&buf[..n]);
        body.push(b'"');
    }
    body.extend_from_slice(b"]}");
    Response::json(200, body).header("Cache-Control", IMMUTABLE.to_string())
}

/// `v` if it is a canonical decimal u64: digits only, no leading zero but in "0" itself, no
/// sign (`str::parse` takes a `+`), no overflow.
fn canonical_decimal(v: &str) -> Option<u64> {
    let b = v.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    v.parse().ok()
}

/// A required canonical decimal query parameter.
fn required(req: &Request, name: &str) -> Result<u64, ApiError> {
    let v = req
        .query_value(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?;
    canonical_decimal(&v)
        .ok_or_else(|| ApiError::bad_request(format!("{name} must be a canonical decimal number")))
}

pub fn checkpoint(tlog: Option<&Tlog>) -> Result<Response, ApiError> {
    let tlog = tlog.ok_or_else(off)?;
    let signed = tlog.checkpoint().ok_or_else(not_ready)?;
    Ok(Response::new(200, signed.text.clone().into_bytes())
        .header("Content-Type", "text/plain; charset=utf-8".to_string())
        // Mutable: C2SP tlog-tiles asks that it not be cached beyond a few seconds.
        .header("Cache-Control", "no-cache".to_string()))
}

pub fn vkey(tlog: Option<&Tlog>) -> Result<Response, ApiError> {
    let tlog = tlog.ok_or_else(off)?;
    Ok(
        Response::new(200, format!("{}\n", tlog.vkey()).into_bytes())
            .header("Content-Type", "text/plain; charset=utf-8".to_string()),
    )
}

pub fn tile(tlog: Option<&Tlog>, path: &str) -> Result<Response, ApiError> {
    let tlog = tlog.ok_or_else(off)?;
    let tile = Tile::parse(path).map_err(|e| ApiError::bad_request(format!("tile/{path}: {e}")))?;
    let bytes = tlog.tile(&tile).map_err(|e| match e {
        TlogError::Beyond { served, .. } => ApiError::not_found(format!(
            "tile/{path} is not complete in the published tree of {served} versions"
        )),
        e => failed(e),
    })?;
    let cache = if tile.width == crate::tlog::tree::TILE_WIDTH {
        IMMUTABLE
    } else {
        // A partial tile's bytes never change either, but it is superseded by the full tile;
        // caches should not keep serving it.
        "no-cache"
    };
    Ok(Response::new(200, bytes)
        .header("Content-Type", "application/octet-stream".to_string())
        .header("Cache-Control", cache.to_string()))
}

pub fn inclusion(tlog: Option<&Tlog>, req: &Request) -> Result<Response, ApiError> {
    let tlog = tlog.ok_or_else(off)?;
    let version = required(req, "version")?;
    let size = required(req, "size")?;
    if version >= size {
        // Well-formed but naming a leaf the tree does not have: like a version past HEAD.
        return Err(ApiError::not_found(format!(
            "version {version} is not in a tree of size {size} (size is HEAD+1 of some checkpoint)"
        )));
    }
    Ok(hashes_json(&tlog.inclusion(version, size).map_err(failed)?))
}

pub fn consistency(tlog: Option<&Tlog>, req: &Request) -> Result<Response, ApiError> {
    let tlog = tlog.ok_or_else(off)?;
    let old = required(req, "old")?;
    let new = required(req, "new")?;
    if old == 0 {
        return Err(ApiError::bad_request(
            "old must be at least 1 (a tree of one version)",
        ));
    }
    if old > new {
        // Well-formed but naming no proof: a tree does not extend a larger one.
        return Err(ApiError::not_found(format!(
            "no consistency proof from {old} to {new}: old is past new"
        )));
    }
    Ok(hashes_json(&tlog.consistency(old, new).map_err(failed)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;

    fn request(query: &str) -> Request {
        Request {
            method: Method::Get,
            path: "/registry/proof/inclusion".into(),
            query: Some(query.into()),
            headers: Vec::new(),
            body: Vec::new(),
            corr_id: "t".into(),
            started: std::time::Instant::now(),
        }
    }

    /// The borrowed lookup finds what the list of decoded pairs finds, on queries the transport
    /// lets through.
    #[test]
    fn query_values_agree_with_query_params() {
        for q in [
            "version=5&size=12",
            "size=12&version=5",
            "%76ersion=5&size=1%32",
            "version=+5&size=",
            "x&version&size=3",
            "&&version=7&",
            "ver=1&version2=2",
        ] {
            let r = request(q);
            for name in ["version", "size", "other"] {
                assert_eq!(
                    r.query_value(name).map(|v| v.into_owned()),
                    r.query_param(name),
                    "{name} in {q}"
                );
            }
        }
    }

    #[test]
    fn only_canonical_decimals_are_numbers() {
        let ok = [("0", 0), ("7", 7), ("18446744073709551615", u64::MAX)];
        for (text, n) in ok {
            assert_eq!(canonical_decimal(text), Some(n), "{text}");
        }
        for bad in [
            "",
            "01",
            "00",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "0x1",
            "18446744073709551616",
        ] {
            assert_eq!(canonical_decimal(bad), None, "{bad}");
        }
        // Decoded first: %31 is "1".
        assert_eq!(required(&request("size=%31"), "size").unwrap(), 1);
        assert!(required(&request("size=01"), "size").is_err());
        assert!(required(&request("version=1"), "size").is_err());
    }

    /// The body is the JSON the spec shows: each hash in standard padded base64.
    #[test]
    fn proof_bodies_are_standard_base64() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let hashes: Vec<Hash> = (0..3u8).map(|i| [i.wrapping_mul(91); 32]).collect();
        let want = serde_json::json!({
            "hashes": hashes.iter().map(|h| b64.encode(h)).collect::<Vec<_>>()
        });
        for n in 0..=hashes.len() {
            let r = hashes_json(&hashes[..n]);
            let got: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let want = serde_json::json!({"hashes": want["hashes"].as_array().unwrap()[..n]});
            assert_eq!(got, want);
            assert_eq!(
                r.body,
                serde_json::to_vec(&want).unwrap(),
                "compact, as before"
            );
        }
    }
}
