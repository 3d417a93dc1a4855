//! `ronctl log …` and `ronctl registry prove | check-proof`: the transparency log from the
//! command line (docs/OPERATIONS.md "Transparency log").
//!
//! Invariant: `check-proof` is offline — it trusts only the file and the pinned vkey (and the
//! record hash the caller expects), never a server.

use super::note::{Checkpoint, LogKey, Vkey};
use super::tree::{leaf_hash, verify_inclusion};
use super::ProofFile;
use crate::cli::{CliResult, Conn, Output};
use std::path::Path;

/// `ronctl log keygen [--origin NAME] --out FILE`: a new log key (mode 0600); prints its vkey.
pub fn keygen(origin: &str, out: &Path, output: Output) -> CliResult {
    let key = LogKey::generate(origin)?;
    super::write_key_file(out, &key).map_err(|e| format!("{}: {e}", out.display()))?;
    let vkey = key.vkey();
    crate::cli::emit(
        output,
        &serde_json::json!({"file": out.display().to_string(), "vkey": vkey}),
        || format!("wrote {} (mode 0600)\n{vkey}", out.display()),
    );
    Ok(())
}

/// `ronctl log vkey [--key FILE]`: the verifier key of a key file, or the server's.
pub fn vkey(conn: &Conn, key: Option<&Path>) -> CliResult {
    let vkey = match key {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            LogKey::parse(&text)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .vkey()
        }
        None => {
            let text = conn.registry_text("/registry/vkey")?;
            Vkey::parse(&text).map_err(|e| format!("the server's vkey: {e}"))?;
            text.trim().to_string()
        }
    };
    crate::cli::emit(conn.output, &serde_json::json!({"vkey": vkey}), || {
        vkey.clone()
    });
    Ok(())
}

/// `ronctl registry prove VERSION [--size N] --out FILE`: the server's current checkpoint and
/// the inclusion proof of VERSION in it, as a C2SP tlog-proof. The server signs only its current
/// tree, so `--size` must be that size (a script's guard against a moved log).
pub fn prove(conn: &Conn, version: u64, size: Option<u64>, out: &Path) -> CliResult {
    let signed = conn.registry_text("/registry/checkpoint")?;
    let (body, _) = signed
        .rsplit_once("\n\n")
        .ok_or("the server's checkpoint is not a signed note")?;
    let cp = Checkpoint::parse(&format!("{body}\n"))?;
    if let Some(want) = size {
        if want != cp.size {
            return Err(format!(
                "the server's checkpoint is of size {}, not {want}: it signs only its current tree",
                cp.size
            ));
        }
    }
    if version >= cp.size {
        return Err(format!(
            "version {version} is not in the checkpointed tree of size {}",
            cp.size
        ));
    }
    let proof = conn.registry(
        "GET",
        &format!(
            "/registry/proof/inclusion?version={version}&size={}",
            cp.size
        ),
        None,
        200,
    )?;
    let record = conn.registry("GET", &format!("/registry/{version}"), None, 200)?;
    let hash = record["hash"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .filter(|h| h.len() == 32)
        .ok_or("the record has no 64-hex hash")?;
    let mut hashes = Vec::new();
    for h in proof["hashes"].as_array().ok_or("no hashes in the proof")? {
        let raw = h
            .as_str()
            .and_then(crate::domain::dsse::unb64)
            .ok_or("a proof hash is not base64")?;
        hashes.push(raw.try_into().map_err(|_| "a proof hash is not 32 bytes")?);
    }
    // Check before writing: a proof that does not verify against its own checkpoint is useless.
    if !verify_inclusion(version, cp.size, &leaf_hash(&hash), &hashes, &cp.root) {
        return Err("the server's proof does not verify against its checkpoint".into());
    }
    let file = ProofFile {
        extra: Some(hash.clone()),
        index: version,
        hashes,
        checkpoint: signed,
    };
    std::fs::write(out, file.text()).map_err(|e| format!("{}: {e}", out.display()))?;
    crate::cli::emit(
        conn.output,
        &serde_json::json!({"file": out.display().to_string(), "version": version, "size": cp.size, "hash": hex::encode(&hash)}),
        || {
            format!(
                "wrote {}: version {version} in {} at size {}",
                out.display(),
                cp.origin,
                cp.size
            )
        },
    );
    Ok(())
}

/// `ronctl registry check-proof FILE --vkey VKEY [--record-hash HEX]`, offline.
pub fn check_proof(
    file: &Path,
    vkey: &str,
    record_hash: Option<&str>,
    output: Output,
) -> CliResult {
    // --vkey takes the key itself or a file holding it.
    let vkey_text = if Path::new(vkey).is_file() {
        std::fs::read_to_string(vkey).map_err(|e| format!("{vkey}: {e}"))?
    } else {
        vkey.to_string()
    };
    let key = Vkey::parse(&vkey_text).map_err(|e| format!("--vkey: {e}"))?;
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let proof = ProofFile::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let body = key.open(&proof.checkpoint)?;
    let cp = Checkpoint::parse(body)?;
    if cp.origin != key.name {
        return Err(format!(
            "the checkpoint's origin {:?} is not the key's name {:?}",
            cp.origin, key.name
        ));
    }
    let hash = match (record_hash, &proof.extra) {
        (Some(h), extra) => {
            let want = hex::decode(h)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or("--record-hash is 64 hex digits")?;
            if extra.as_ref().is_some_and(|e| *e != want) {
                return Err("the proof is for another record hash than --record-hash".into());
            }
            want
        }
        (None, Some(extra)) if extra.len() == 32 => extra.clone(),
        _ => return Err("the proof carries no record hash: pass --record-hash".into()),
    };
    if !verify_inclusion(
        proof.index,
        cp.size,
        &leaf_hash(&hash),
        &proof.hashes,
        &cp.root,
    ) {
        return Err(format!(
            "version {} with hash {} is NOT proved in {} at size {}",
            proof.index,
            hex::encode(&hash),
            cp.origin,
            cp.size
        ));
    }
    crate::cli::emit(
        output,
        &serde_json::json!({"ok": true, "version": proof.index, "hash": hex::encode(&hash), "origin": cp.origin, "size": cp.size}),
        || {
            format!(
                "ok: version {} (hash {}) is in {} at size {}",
                proof.index,
                hex::encode(&hash),
                cp.origin,
                cp.size
            )
        },
    );
    Ok(())
}
