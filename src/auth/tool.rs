//! `ronctl cap`: mint, attenuate and inspect tokens, and rotate the root keys file
//! (docs/OPERATIONS.md "Securing a registry"). Runs in the operator's shell, not in the server.
//!
//! Invariants: `inspect` never shows a signature or a secret; a token is printed only by `mint`
//! and `attenuate`, whose job it is; the keys file written by `rotate` is complete before it
//! replaces the old one (temporary file with mode 0600, fsync, rename, fsync of the directory),
//! so the server's SIGHUP never reads half a file, and its keys are never fewer than one live
//! key.

use super::caveats::{self, Action, Caveat};
use super::keys::{fresh_nonce, KeyRing, KeysError, RootKey};
use super::macaroon::Macaroon;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What `cap mint` puts in a token.
#[derive(Debug, Default, Clone)]
pub struct MintOptions {
    /// Root key to mint with; default: the newest key live now.
    pub key_id: Option<String>,
    /// Actions (`scope` caveat), at least one.
    pub scope: Vec<String>,
    /// `expires`: a duration from now (`90s`, `30m`, `12h`, `7d`) or an RFC 3339 time.
    pub expires: Option<String>,
    pub kind: Option<String>,
    pub id_prefix: Option<String>,
    /// `registry` caveat.
    pub registry: Option<String>,
}

/// Unix seconds now.
pub fn now_unix_s() -> i64 {
    crate::clock::now_unix_ms().div_euclid(1000)
}

/// `90s`, `30m`, `12h`, `7d` (or a bare number of seconds) as seconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, "s"),
    };
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 30m, 12h or 7d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 90s, 30m, 12h or 7d"
            ))
        }
    };
    n.checked_mul(unit_s)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("{text:?} is too long"))
}

fn rfc3339(unix_s: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix_s)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix_s.to_string())
}

/// The `expires` value: now + a duration, or an RFC 3339 time as given (checked).
fn expires_value(text: &str, now: i64) -> Result<String, String> {
    if let Ok(secs) = parse_duration(text) {
        return Ok(rfc3339(now + secs));
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).map_err(
        |_| format!("--expires {text:?} is neither a duration (12h, 7d) nor an RFC 3339 time"),
    )?;
    Ok(text.to_string())
}

/// Load a keys file for minting or rotating. The server's permission rule is the operator's
/// too, but this tool only warns (on stderr): refusing would not make the file any less
/// readable, and the DEV ONLY keys file is checked out 0644 by git.
pub fn load_ring(path: &Path) -> Result<KeyRing, String> {
    match KeyRing::load(path) {
        Ok(r) => Ok(r),
        Err(KeysError::Permissions { .. }) => {
            eprintln!(
                "warning: keys file {} can be read by group or others; the server refuses it unless [auth] dev_insecure_permissions (DEV ONLY) is set: chmod 600 it",
                path.display()
            );
            KeyRing::load_allowing_readable(path).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// `cap mint`: a new token (base64url, no padding) with the caveats of `opts`, in the order
/// registry, scope, expires, kind, id_prefix.
pub fn mint(keys_file: &Path, opts: &MintOptions) -> Result<String, String> {
    let ring = load_ring(keys_file)?;
    let now = now_unix_s();
    let key = match &opts.key_id {
        Some(id) => ring
            .get(id)
            .ok_or_else(|| format!("keys file {} has no key {id:?}", keys_file.display()))?,
        None => ring.minting_key(now).ok_or_else(|| {
            format!(
                "every key in {} is past its not_after: rotate first",
                keys_file.display()
            )
        })?,
    };
    if !key.live_at(now) {
        return Err(format!(
            "key {:?} is past its not_after: its tokens are refused; mint with a live key",
            key.id
        ));
    }
    if opts.scope.is_empty() {
        return Err("--scope is required (e.g. --scope propose,approve)".to_string());
    }
    let mut caveat_texts = Vec::new();
    if let Some(r) = &opts.registry {
        caveat_texts.push(format!("registry = {r}"));
    }
    caveat_texts.push(format!("scope = {}", opts.scope.join(",")));
    if let Some(e) = &opts.expires {
        caveat_texts.push(format!("expires = {}", expires_value(e, now)?));
    }
    if let Some(k) = &opts.kind {
        caveat_texts.push(format!("kind = {k}"));
    }
    if let Some(p) = &opts.id_prefix {
        caveat_texts.push(format!("id_prefix = {p}"));
    }
    let nonce = fresh_nonce().map_err(|e| format!("no randomness for the nonce: {e}"))?;
    let mut m = key.mint(&nonce);
    add_caveats(&mut m, &caveat_texts)?;
    Ok(m.to_base64())
}

/// Add caveats, each checked to be one the server understands (else the token would only ever
/// be refused).
fn add_caveats(m: &mut Macaroon, texts: &[String]) -> Result<(), String> {
    for text in texts {
        caveats::parse_caveat(text.as_bytes()).map_err(|e| e.to_string())?;
        m.add_first_party_caveat(text.as_bytes())
            .map_err(|e| format!("cannot add caveat: {e}"))?;
    }
    Ok(())
}

/// `cap attenuate`: `token` with `caveats` added (no root key needed: a caveat only narrows).
pub fn attenuate(token: &str, caveats: &[String]) -> Result<String, String> {
    let mut m = Macaroon::from_base64(token.trim()).map_err(|e| format!("token: {e}"))?;
    if caveats.is_empty() {
        return Err("give at least one --caveat \"name = value\"".to_string());
    }
    add_caveats(&mut m, caveats)?;
    Ok(m.to_base64())
}

/// `cap inspect`: the identifier, its key id and the caveats, as JSON; never the signature.
pub fn inspect(token: &str) -> Result<serde_json::Value, String> {
    let m = Macaroon::from_base64(token.trim()).map_err(|e| format!("token: {e}"))?;
    let identifier = String::from_utf8_lossy(&m.identifier).into_owned();
    let key_id = super::identifier_key_id(&m.identifier).map(str::to_string);
    let caveats: Vec<serde_json::Value> = m
        .caveats
        .iter()
        .map(|c| {
            let text = String::from_utf8_lossy(c).into_owned();
            let note = match caveats::parse_caveat(c) {
                Ok(Caveat::Expires(at)) => {
                    if at <= now_unix_s() {
                        "expired".to_string()
                    } else {
                        "ok".to_string()
                    }
                }
                Ok(_) => "ok".to_string(),
                Err(e) => format!("refused by the server: {e}"),
            };
            serde_json::json!({"caveat": text, "check": note})
        })
        .collect();
    Ok(serde_json::json!({
        "identifier": identifier,
        "key_id": key_id,
        "location": m.location.as_ref().map(|l| String::from_utf8_lossy(l).into_owned()),
        "caveats": caveats,
    }))
}

/// What `cap rotate` did.
#[derive(Debug)]
pub struct Rotated {
    pub new_key: String,
    /// (key id, not_after) of the keys that now end, oldest first.
    pub ending: Vec<(String, i64)>,
    /// Keys dropped from the file because their not_after had passed.
    pub dropped: Vec<String>,
}

/// `cap rotate`: add a key with a fresh random secret, give every live key without an earlier
/// end a `not_after` of now + `grace_s`, drop keys already past their `not_after`, and write the
/// file atomically with mode 0600. A file that does not exist yet is created with the new key
/// alone (the first key of a registry).
pub fn rotate(keys_file: &Path, new_id: Option<&str>, grace_s: i64) -> Result<Rotated, String> {
    let old_keys: Vec<RootKey> = if keys_file.exists() {
        load_ring(keys_file)?.keys().to_vec()
    } else {
        Vec::new()
    };
    let now = now_unix_s();
    let end = now + grace_s;
    let new_id = match new_id {
        Some(id) => id.to_string(),
        None => {
            let stamp = time::OffsetDateTime::from_unix_timestamp(now)
                .map_err(|e| e.to_string())?
                .format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .map_err(|e| e.to_string())?;
            format!("k{stamp}")
        }
    };
    if old_keys.iter().any(|k| k.id == new_id) {
        return Err(format!(
            "keys file already has a key {new_id:?}: pass another --new-id"
        ));
    }
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness for the secret: {e}"))?;
    let new_key = RootKey::new(&new_id, secret, None)
        .ok_or_else(|| format!("key id {new_id:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"))?;
    let mut kept = Vec::new();
    let (mut ending, mut dropped) = (Vec::new(), Vec::new());
    for k in &old_keys {
        if !k.live_at(now) {
            dropped.push(k.id.clone());
            continue;
        }
        let not_after = k.not_after_unix_s.map_or(end, |t| t.min(end));
        ending.push((k.id.clone(), not_after));
        kept.push(
            RootKey::new(&k.id, *k.secret(), Some(not_after))
                .expect("ids of a loaded ring are valid"),
        );
    }
    kept.push(new_key);
    let ring = KeyRing::from_keys(kept).map_err(|e| e.to_string())?;
    write_keys_file(keys_file, &ring)?;
    Ok(Rotated {
        new_key: new_id,
        ending,
        dropped,
    })
}

/// The keys file text of `ring`.
pub fn keys_file_text(ring: &KeyRing) -> String {
    let mut text = String::from(
        "# svc-registry capability root keys (docs/OPERATIONS.md, \"Securing a registry\").\n\
         # SECRET: mode 0600, readable by the server's user only. Written by `ronctl cap rotate`.\n",
    );
    for k in ring.keys() {
        text.push_str(&format!(
            "\n[[keys]]\nid = \"{}\"\nsecret = \"{}\"\n",
            k.id,
            hex::encode(k.secret())
        ));
        if let Some(t) = k.not_after_unix_s {
            text.push_str(&format!("not_after = \"{}\"\n", rfc3339(t)));
        }
    }
    text
}

/// Write `ring` to `path` atomically, mode 0600; the directory entry is synced too.
pub fn write_keys_file(path: &Path, ring: &KeyRing) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let fail = |what: &str, e: std::io::Error| format!("{what} {}: {e}", tmp.display());
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| fail("cannot create", e))?;
        f.write_all(keys_file_text(ring).as_bytes())
            .map_err(|e| fail("cannot write", e))?;
        f.sync_all().map_err(|e| fail("cannot sync", e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail("cannot rename", e))?;
        // IMPORTANT: sync the directory too, or a crash can bring back the old file (and its
        // keys) after the rotation was reported done.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The PID in `data_dir/LOCK` (the running server's; written when it took the lock).
pub fn server_pid(data_dir: &Path) -> Result<i32, String> {
    let lock = data_dir.join("LOCK");
    let text = std::fs::read_to_string(&lock).map_err(|e| {
        format!(
            "cannot read {}: {e} (is the server running on this data_dir?)",
            lock.display()
        )
    })?;
    text.trim()
        .parse()
        .ok()
        .filter(|p: &i32| *p > 0)
        .ok_or_else(|| format!("{} does not hold a PID", lock.display()))
}

/// Send SIGHUP to `pid` (the server re-reads its config and keys file).
pub fn signal_reload(pid: i32) -> Result<(), String> {
    // SAFETY: kill(2) with a positive pid and a valid signal number has no memory effects.
    let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot send SIGHUP to {pid}: {}",
            std::io::Error::last_os_error()
        ))
    }
}

/// The operator's instructions after a rotation.
pub fn rotation_report(r: &Rotated, keys_file: &Path) -> String {
    let mut out = format!(
        "added root key {:?} to {}\n",
        r.new_key,
        keys_file.display()
    );
    for (id, end) in &r.ending {
        out.push_str(&format!(
            "key {id:?} stays valid until {} (not_after)\n",
            rfc3339(*end)
        ));
    }
    if !r.dropped.is_empty() {
        out.push_str(&format!(
            "dropped keys already past their not_after: {}\n",
            r.dropped.join(", ")
        ));
    }
    if !r.ending.is_empty() {
        let ids: Vec<&str> = r.ending.iter().map(|(id, _)| id.as_str()).collect();
        out.push_str(&format!(
            "re-issue every token minted with {} before its not_after: ronctl cap mint --keys-file {} --key-id {} --scope ... (`ronctl cap inspect TOKEN` shows a token's key id)",
            ids.join(", "),
            keys_file.display(),
            r.new_key
        ));
    }
    out
}

/// The action words, for `--scope` help and checks.
pub fn check_scope(words: &[String]) -> Result<(), String> {
    for w in words {
        if Action::parse(w).is_none() {
            return Err(format!(
                "scope {w:?} is not one of propose, approve, commit, admin, read"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_expiry_values() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1800));
        assert_eq!(parse_duration("12h"), Ok(43_200));
        assert_eq!(parse_duration("7d"), Ok(604_800));
        assert_eq!(parse_duration("15"), Ok(15));
        assert!(parse_duration("7w").is_err() && parse_duration("h").is_err());
        assert_eq!(
            expires_value("1h", 1_767_225_600).unwrap(),
            "2026-01-01T01:00:00Z"
        );
        assert_eq!(
            expires_value("2026-02-01T00:00:00Z", 0).unwrap(),
            "2026-02-01T00:00:00Z"
        );
        assert!(expires_value("tomorrow", 0).is_err());
    }

    #[test]
    fn rotate_adds_a_key_ends_the_old_ones_and_writes_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let old = KeyRing::from_keys(vec![
            RootKey::new("gone", [1; 32], Some(1)).unwrap(),
            RootKey::new("a", [2; 32], None).unwrap(),
        ])
        .unwrap();
        write_keys_file(&path, &old).unwrap();
        let r = rotate(&path, Some("b"), 3600).unwrap();
        // A missing file is created with one key.
        let first = dir.path().join("first.toml");
        let r0 = rotate(&first, Some("k1"), 60).unwrap();
        assert!(r0.ending.is_empty() && r0.dropped.is_empty());
        assert_eq!(KeyRing::load(&first).unwrap().keys().len(), 1);
        assert_eq!(r.dropped, ["gone"]);
        assert_eq!(r.ending.len(), 1);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let ring = KeyRing::load(&path).unwrap();
        let now = now_unix_s();
        let a = ring.get("a").unwrap();
        assert_eq!(a.secret(), &[2; 32]);
        assert!(a.live_at(now) && !a.live_at(now + 3601));
        assert!(ring.get("b").unwrap().not_after_unix_s.is_none());
        assert_eq!(ring.minting_key(now).unwrap().id, "b");
        assert!(rotate(&path, Some("b"), 60)
            .unwrap_err()
            .contains("already"));
        let report = rotation_report(&r, &path);
        assert!(report.contains("re-issue") && !report.contains(&hex::encode([2u8; 32])));
    }

    #[test]
    fn mint_then_inspect_shows_caveats_but_no_signature() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ring = KeyRing::from_keys(vec![RootKey::new("a", [7; 32], None).unwrap()]).unwrap();
        write_keys_file(&path, &ring).unwrap();
        let token = mint(
            &path,
            &MintOptions {
                scope: vec!["propose".into(), "read".into()],
                kind: Some("node".into()),
                registry: Some("r1".into()),
                ..Default::default()
            },
        )
        .unwrap();
        let narrowed = attenuate(&token, &["id_prefix = edge-".to_string()]).unwrap();
        assert!(attenuate(&token, &["colour = blue".to_string()]).is_err());
        let v = inspect(&narrowed).unwrap();
        assert_eq!(v["key_id"], "a");
        let shown: Vec<&str> = v["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["caveat"].as_str().unwrap())
            .collect();
        assert_eq!(
            shown,
            [
                "registry = r1",
                "scope = propose,read",
                "kind = node",
                "id_prefix = edge-"
            ]
        );
        let m = Macaroon::from_base64(&narrowed).unwrap();
        assert!(!v.to_string().contains(&m.signature_hex()));
        assert!(m.verify_signature(&[7; 32]));
    }
}
