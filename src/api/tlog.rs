//! The transparency log's routes on the registry listener (docs/API.md "Transparency log"):
//! `/registry/checkpoint`, `/registry/vkey`, `/registry/tile/…`, `/registry/proof/inclusion` and
//! `/registry/proof/consistency`.
//!
//! Invariant: nothing is answered beyond the tree the `tlog` thread published (a size past it is
//! `404 not_found`, like a version past HEAD); the routes read the tree file with positioned
//! reads and never wait on another thread.

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

fn hashes_json(hashes: &[Hash]) -> Response {
    // Written out directly (base64 needs no JSON escaping): a proof answer is on the hot read
    // path, and a `serde_json::Value` of strings costs an allocation per hash.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut body = String::with_capacity(14 + hashes.len() * 47);
    body.push_str("{\"hashes\":[");
    for (i, h) in hashes.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push('"');
        b64.encode_string(h, &mut body);
        body.push('"');
    }
    body.push_str("]}");
    Response::json(200, body.into_bytes()).header("Cache-Control", IMMUTABLE.to_string())
}

/// A required canonical decimal query parameter.
fn required(req: &Request, name: &str) -> Result<u64, ApiError> {
    let v = req
        .query_param(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))?;
    v.parse::<u64>()
        .ok()
        .filter(|n| n.to_string() == v)
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
