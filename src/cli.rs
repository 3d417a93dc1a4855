//! The logic behind `ronctl`: each command is a function returning a message for the operator on
//! failure. Output goes to stdout; reviews, prompts and warnings to stderr.
//!
//! Invariants: with `--output json` stdout holds exactly one JSON document per command (tail:
//! one per event), so scripts can parse it; nothing is signed before the key file is checked
//! against the server's published signer set and the operator confirmed (or passed `--yes`).

use crate::domain::audit;
use crate::domain::record::CommitRecord;
use crate::domain::signers::{KeyAlg, SecretKey, SignerSet};
use crate::domain::{dsse, sha256_hex};
use crate::http::client::{self, ClientResponse, Target};
use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub type CliResult = Result<(), String>;

/// How a command prints its result (`--output`): `text` for people (documents as pretty JSON,
/// actions as sentences), `json` for scripts (exactly one JSON document on stdout, one line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}

/// Where the server is, and how to print.
pub struct Conn {
    pub registry: Target,
    pub admin: Target,
    pub timeout: Duration,
    /// Set by the caller after [`Conn::new`] (default text).
    pub output: Output,
    /// Capability token sent as `Authorization: Bearer` on every request (`--token` /
    /// `RON_TOKEN`); set by the caller. Never printed, never in an error message.
    pub token: Option<String>,
}

impl Conn {
    pub fn new(
        url: &str,
        admin_url: &str,
        unix: Option<PathBuf>,
        timeout: Duration,
    ) -> Result<Conn, String> {
        Conn::with_tls(
            url,
            admin_url,
            unix,
            &client::TlsOptions::default(),
            timeout,
        )
    }

    /// [`Conn::new`] where `https://` URLs are checked and (mutual TLS) identified with `tls`:
    /// `--cacert` / `RON_CACERT` (else the system's CAs), `--client-cert` and `--client-key`.
    pub fn with_tls(
        url: &str,
        admin_url: &str,
        unix: Option<PathBuf>,
        tls: &client::TlsOptions,
        timeout: Duration,
    ) -> Result<Conn, String> {
        let registry = match unix {
            Some(p) => Target::Unix(p),
            None => Target::parse_with_tls(url, tls).map_err(|e| format!("--url {url:?}: {e}"))?,
        };
        let admin = Target::parse_with_tls(admin_url, tls)
            .map_err(|e| format!("--admin-url {admin_url:?}: {e}"))?;
        Ok(Conn {
            registry,
            admin,
            timeout,
            output: Output::Text,
            token: None,
        })
    }

    /// Print a command's result: `value` with `--output json`, else `text()` (a line or lines).
    pub fn emit(&self, value: &serde_json::Value, text: impl FnOnce() -> String) {
        emit(self.output, value, text);
    }

    /// Print a server document: compact JSON with `--output json`, pretty JSON for people.
    pub fn emit_doc(&self, value: &serde_json::Value) {
        self.emit(value, || {
            serde_json::to_string_pretty(value).unwrap_or_default()
        });
    }

    fn call(
        &self,
        target: &Target,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<ClientResponse, String> {
        let bearer = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        client::request(target, method, path, &headers, body, self.timeout)
            .map_err(|e| format!("cannot reach {}: {e}", describe(target)))
    }

    /// Call the registry API and insist on `want`; any other status becomes a clear message.
    pub fn registry(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Result<serde_json::Value, String> {
        let r = self.call(&self.registry, method, path, body)?;
        expect(r, want, method, path, false)
    }

    pub fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        want: u16,
    ) -> Result<serde_json::Value, String> {
        let r = self.call(&self.admin, method, path, body)?;
        expect(r, want, method, path, true)
    }

    /// A registry route answering text (the transparency log's checkpoint and vkey).
    pub fn registry_text(&self, path: &str) -> Result<String, String> {
        let r = self.call(&self.registry, "GET", path, None)?;
        if r.status == 200 {
            return String::from_utf8(r.body)
                .map_err(|_| format!("GET {path}: the answer is not UTF-8"));
        }
        expect(r, 200, "GET", path, false).map(|_| String::new())
    }

    /// An admin route answering text (not JSON).
    pub fn admin_text(&self, path: &str) -> Result<String, String> {
        let r = self.call(&self.admin, "GET", path, None)?;
        if r.status == 200 {
            return String::from_utf8(r.body)
                .map_err(|_| format!("GET {path}: the answer is not UTF-8"));
        }
        expect(r, 200, "GET", path, true).map(|_| String::new())
    }
}

fn describe(t: &Target) -> String {
    match t {
        Target::Tcp(a) => format!("http://{a}"),
        Target::Tls(t) => format!("https://{}", t.addr),
        Target::Unix(p) => format!("unix:{}", p.display()),
    }
}

fn expect(
    r: ClientResponse,
    want: u16,
    method: &str,
    path: &str,
    admin: bool,
) -> Result<serde_json::Value, String> {
    let value: Option<serde_json::Value> = serde_json::from_slice(&r.body).ok();
    if r.status == want {
        return value.ok_or_else(|| format!("{method} {path}: the answer is not JSON"));
    }
    let (code, message) = value
        .as_ref()
        .map(|v| {
            (
                v["error"].as_str().unwrap_or("?").to_string(),
                v["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .unwrap_or_else(|| ("?".into(), String::from_utf8_lossy(&r.body).into_owned()));
    let hint = match r.status {
        401 => " (send a capability token: --token or RON_TOKEN; `ronctl cap mint` makes one)",
        403 if message.starts_with("token") || message.contains("the token") => {
            " (the token does not allow this: `ronctl cap inspect TOKEN` shows its caveats)"
        }
        _ if admin => match r.status {
            404 => " (is --admin-url the metrics listener of a current svc-registry?)",
            429 => " (one at a time: retry when the running one is done)",
            _ => "",
        },
        400 => " (the request is malformed; check the file and the id)",
        403 => " (the key is not a configured signer, is outside its validity window, or the signature is wrong)",
        404 => " (no such version, proposal or descriptor)",
        409 => " (HEAD moved or the proposal is already committed: re-propose on the current HEAD)",
        410 => " (the proposal expired: propose it again)",
        412 => " (more approvals are needed)",
        413 => " (too large: split the proposal)",
        429 => " (the server is busy: retry shortly)",
        503 => " (writes are unavailable: read-only mode, not ready, or storage failed; see /readyz)",
        507 => " (the server's disk is full)",
        _ => "",
    };
    Err(format!(
        "{method} {path}: {} {code}: {message}{hint}",
        r.status
    ))
}

/// See [`Conn::emit`].
pub fn emit(output: Output, value: &serde_json::Value, text: impl FnOnce() -> String) {
    match output {
        Output::Json => println!("{}", serde_json::to_string(value).unwrap_or_default()),
        Output::Text => println!("{}", text()),
    }
}

/// A signer key file (docs/FORMATS.md, "Key files").
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    #[serde(rename = "_warning", default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    pub keyid: String,
    /// The key's algorithm; absent means `ed25519`, so key files written before the
    /// post-quantum algorithms stay valid and ed25519 files stay byte-for-byte as they were.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// The 32-byte seed(s), hex: the ed25519 seed, the ML-DSA-65 key-generation seed ξ (FIPS
    /// 204), or for the hybrid the two joined by `:` (ed25519 first, like `public_key`).
    pub secret_key: String,
    /// The public key's text form (docs/FORMATS.md), checked against the seeds on load.
    pub public_key: String,
}

/// Load an ed25519 key file (what tests and older callers use); other algorithms are refused
/// here: use [`load_signer`].
pub fn load_key(path: &Path) -> Result<(String, SigningKey), String> {
    let (keyid, key) = load_signer(path)?;
    if key.alg() != KeyAlg::Ed25519 {
        return Err(format!(
            "{}: an {} key, not an ed25519 one",
            path.display(),
            key.alg().as_str()
        ));
    }
    Ok((keyid, SigningKey::from_bytes(&key.seeds()[0])))
}

/// Load a key file of any algorithm.
pub fn load_signer(path: &Path) -> Result<(String, SecretKey), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let kf: KeyFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a key file: {e}", path.display()))?;
    let alg = KeyAlg::parse(kf.alg.as_deref().unwrap_or("ed25519"))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let seeds = kf
        .secret_key
        .split(':')
        .map(|half| {
            hex::decode(half)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
        })
        .collect::<Option<Vec<[u8; 32]>>>()
        .ok_or_else(|| {
            format!(
                "{}: secret_key must be 64 hex digits (two such joined by \":\" for {})",
                path.display(),
                KeyAlg::Ed25519MlDsa65.as_str()
            )
        })?;
    let key = SecretKey::from_seeds(alg, &seeds).map_err(|e| format!("{}: {e}", path.display()))?;
    if key.public_key().to_text() != kf.public_key {
        return Err(format!(
            "{}: public_key does not match secret_key",
            path.display()
        ));
    }
    Ok((kf.keyid, key))
}

/// Per-signature randomness for ML-DSA-65's hedged signing (FIPS 204's default): fresh bytes
/// from the OS, so a fault or side channel in one signature tells nothing about another.
fn signing_randomness() -> Result<[u8; 32], String> {
    let mut rnd = [0u8; 32];
    getrandom::getrandom(&mut rnd).map_err(|e| format!("no randomness: {e}"))?;
    Ok(rnd)
}

/// Sign `payload`'s DSSE PAE with `key`: the signature in its stored form.
fn sign_text(key: &SecretKey, payload: &[u8]) -> Result<String, String> {
    Ok(key.sign_payload(payload, &signing_randomness()?)?.encode())
}

pub fn keygen(out: &Path, keyid: Option<&str>, alg: KeyAlg, output: Output) -> CliResult {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let halves = if alg == KeyAlg::Ed25519MlDsa65 { 2 } else { 1 };
    let mut seeds = vec![[0u8; 32]; halves];
    for seed in &mut seeds {
        getrandom::getrandom(seed).map_err(|e| format!("no randomness: {e}"))?;
    }
    let key = SecretKey::from_seeds(alg, &seeds)?;
    let public = key.public_key().to_text();
    let keyid = keyid
        .map(str::to_string)
        .unwrap_or_else(|| format!("key-{}", &public[..8]));
    let file = KeyFile {
        warning: None,
        keyid: keyid.clone(),
        alg: (alg != KeyAlg::Ed25519).then(|| alg.as_str().to_string()),
        secret_key: seeds.iter().map(hex::encode).collect::<Vec<_>>().join(":"),
        public_key: public.clone(),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    f.write_all(
        serde_json::to_string_pretty(&file)
            .expect("serializes")
            .as_bytes(),
    )
    .and_then(|_| f.write_all(b"\n"))
    .and_then(|_| f.sync_all())
    .map_err(|e| format!("{}: {e}", out.display()))?;
    let alg_line = match alg {
        KeyAlg::Ed25519 => String::new(),
        _ => format!("alg = {:?}\n", alg.as_str()),
    };
    emit(
        output,
        &serde_json::json!({"keyid": keyid, "alg": alg.as_str(), "public_key": public, "path": out}),
        || format!("keyid = {keyid:?}\n{alg_line}public_key = {public:?}"),
    );
    eprintln!(
        "wrote private key to {} (mode 0600). Add to the server config:\n\n[[signers.keys]]\nkeyid = {keyid:?}\n{alg_line}public_key = {public:?}",
        out.display()
    );
    Ok(())
}

pub fn head(conn: &Conn) -> CliResult {
    conn.emit_doc(&conn.registry("GET", "/registry/head", None, 200)?);
    Ok(())
}

pub fn get(conn: &Conn, version: u64) -> CliResult {
    conn.emit_doc(&conn.registry("GET", &format!("/registry/{version}"), None, 200)?);
    Ok(())
}

/// `registry descriptor KIND ID`.
pub fn descriptor(conn: &Conn, kind: &str, id: &str) -> CliResult {
    conn.emit_doc(&conn.registry(
        "GET",
        &format!("/registry/descriptors/{kind}/{id}"),
        None,
        200,
    )?);
    Ok(())
}

/// `registry descriptors [--kind K]`: every page, all read at one snapshot version (listed again
/// if a commit lands between two pages, so the list is never a mix of two versions).
pub fn descriptors(conn: &Conn, kind: Option<&str>) -> CliResult {
    let base = match kind {
        Some(k) => format!("/registry/descriptors?kind={k}&limit=1000"),
        None => "/registry/descriptors?limit=1000".to_string(),
    };
    'attempt: for _ in 0..5 {
        let mut all = Vec::new();
        let mut at: Option<u64> = None;
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(cursor) => format!("{base}&after={cursor}"),
                None => base.clone(),
            };
            let mut page = conn.registry("GET", &path, None, 200)?;
            let version = page["version"]
                .as_u64()
                .ok_or("descriptors page: no version")?;
            if *at.get_or_insert(version) != version {
                continue 'attempt;
            }
            all.extend(
                page["descriptors"]
                    .take()
                    .as_array()
                    .cloned()
                    .ok_or("descriptors page: no list")?,
            );
            match page["next"].as_str() {
                Some(cursor) => after = Some(cursor.to_string()),
                None => break,
            }
        }
        let version = at.unwrap_or(0);
        let doc = serde_json::json!({"version": version, "descriptors": all});
        conn.emit(&doc, || {
            let mut text = format!("{} descriptor(s) at version {version}", all.len());
            for d in &all {
                text.push_str(&format!(
                    "\n{}/{}  v{}  {}",
                    d["kind"].as_str().unwrap_or("?"),
                    d["id"].as_str().unwrap_or("?"),
                    d["version"],
                    d["body"]
                ));
            }
            text
        });
        return Ok(());
    }
    Err("the registry changed during every attempt to list its descriptors; try again".into())
}

/// `registry log --from V --limit N`: one page of commit records.
pub fn log_page(conn: &Conn, from: u64, limit: u64) -> CliResult {
    let page = conn.registry(
        "GET",
        &format!("/registry/log?from={from}&limit={limit}"),
        None,
        200,
    )?;
    conn.emit(&page, || {
        let records = page["records"].as_array().cloned().unwrap_or_default();
        let mut lines: Vec<String> = records
            .iter()
            .map(|r| {
                format!(
                    "version {}  hash {}  proposal {}  committed_at {}",
                    r["version"],
                    r["hash"].as_str().unwrap_or("-"),
                    r["proposal_id"].as_str().unwrap_or("-"),
                    r["committed_at"].as_str().unwrap_or("-")
                )
            })
            .collect();
        lines.push(match page["next"].as_u64() {
            Some(n) => format!("(head {}; next page: --from {n})", page["head"]),
            None => format!("(head {}; end of log)", page["head"]),
        });
        lines.join("\n")
    });
    Ok(())
}

/// `registry proposal ID`: what a signer reviews (the payload checked against the id).
pub fn proposal(conn: &Conn, id: &str) -> CliResult {
    let (v, payload) = fetch_payload(conn, id)?;
    conn.emit(&v, || review_text(&v, &payload));
    Ok(())
}

pub fn propose(conn: &Conn, file: &Path) -> CliResult {
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let v = conn.registry("POST", "/propose", Some(&bytes), 202)?;
    eprintln!(
        "proposal accepted; expires at {}",
        v["expires_at"].as_str().unwrap_or("?")
    );
    conn.emit(&v, || v["proposal_id"].as_str().unwrap_or("").to_string());
    Ok(())
}

/// Fetch a proposal and check its payload really is what `id` names (never trust the server
/// for the bytes we are about to sign).
fn fetch_payload(conn: &Conn, id: &str) -> Result<(serde_json::Value, Vec<u8>), String> {
    let v = conn.registry("GET", &format!("/proposals/{id}"), None, 200)?;
    let payload = v["payload"]
        .as_str()
        .and_then(dsse::unb64)
        .ok_or("the server's proposal has no base64 payload")?;
    if sha256_hex(&payload) != id {
        return Err(format!(
            "the server returned a payload whose SHA-256 is not {id}: refusing to sign"
        ));
    }
    Ok((v, payload))
}

fn show_review(v: &serde_json::Value, payload: &[u8]) {
    eprintln!("{}", review_text(v, payload));
}

/// A proposal as a signer reviews it: state, approvals, the diff per op, the exact payload.
fn review_text(v: &serde_json::Value, payload: &[u8]) -> String {
    let mut text = format!(
        "proposal {}\nstate: {}   approvals: {} of threshold {}",
        v["proposal_id"].as_str().unwrap_or("?"),
        v["state"].as_str().unwrap_or("?"),
        v["approvals"],
        v["threshold"]
    );
    if let Some(m) = v["new_threshold"].as_u64() {
        text.push_str(&format!(
            "\nnew signer set: {} of threshold {m} (both quorums are needed)",
            v["new_approvals"]
        ));
    }
    if let Some(diff) = v["diff"].as_array() {
        for d in diff {
            if d["op"] == "set_signers" {
                text.push_str(&set_change_text(d));
                continue;
            }
            text.push_str(&format!(
                "\n  {} {}/{}\n    current:  {}\n    proposed: {}",
                d["op"].as_str().unwrap_or("?"),
                d["kind"].as_str().unwrap_or("?"),
                d["id"].as_str().unwrap_or("?"),
                d["current"],
                d["proposed"]
            ));
        }
    }
    text.push_str(&format!(
        "\npayload ({} bytes): {}",
        payload.len(),
        String::from_utf8_lossy(payload)
    ));
    text
}

/// Check that `key` is the key the server's published signer set lists for `keyid`, before
/// anything is sent: a wrong key file (or keyid) otherwise shows up only as a 403 from the
/// server, after the operator confirmed.
///
/// The sets that judge a proposal (docs/FORMATS.md): the one in force at its `base_version`, and for a
/// `set_signers` also the new set it carries (its keys may approve it).
fn check_key_matches_signer(
    conn: &Conn,
    view: &serde_json::Value,
    payload: &[u8],
    keyid: &str,
    key: &SecretKey,
) -> CliResult {
    let path = match view["base_version"].as_u64() {
        Some(base) => format!("/registry/signers?version={base}"),
        None => "/registry/signers".to_string(),
    };
    let set = conn.registry("GET", &path, None, 200)?;
    let mut keys = set["keys"].as_array().cloned().unwrap_or_default();
    let proposal: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
    if proposal["ops"][0]["op"] == "set_signers" {
        keys.extend(
            proposal["ops"][0]["keys"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    let entries: Vec<&serde_json::Value> = keys.iter().filter(|k| k["keyid"] == keyid).collect();
    if entries.is_empty() {
        let known: Vec<&str> = keys.iter().filter_map(|k| k["keyid"].as_str()).collect();
        return Err(format!(
            "keyid {keyid:?} is not in the server's signer set that judges this proposal (signers: {}): nothing was sent",
            known.join(", ")
        ));
    }
    let mine = key.public_key().to_text();
    if !entries
        .iter()
        .any(|e| e["public_key"].as_str() == Some(mine.as_str()))
    {
        return Err(format!(
            "the key file's private key does not match signer {keyid:?}: the signer set lists {} public_key {} for it, this key's is {} {} (wrong key file?): nothing was sent",
            entries[0]["alg"].as_str().unwrap_or("ed25519"),
            abbreviate(entries[0]["public_key"].as_str().unwrap_or("?")),
            key.alg().as_str(),
            abbreviate(&mine)
        ));
    }
    Ok(())
}

/// A public key short enough for a message (an ML-DSA-65 key is 3,904 hex digits).
fn abbreviate(text: &str) -> String {
    if text.len() <= 80 {
        return text.to_string();
    }
    format!(
        "{}…{} ({} chars)",
        &text[..32],
        &text[text.len() - 16..],
        text.len()
    )
}

/// Ask before signing. `yes` skips the question; without a terminal on stdin there is no one
/// to ask, so refuse rather than sign unreviewed.
fn confirm_signing(id: &str, keyid: &str, yes: bool) -> CliResult {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(
            "refusing to sign without confirmation: stdin is not a terminal; review the proposal above (or with `ronctl registry proposal ID`) and pass --yes to sign non-interactively"
                .into(),
        );
    }
    eprint!("sign proposal {id} as {keyid}? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err("not signed (answer was not yes)".into()),
    }
}

/// One key of a signer set's JSON form, with its validity window. An ML-DSA-65 key (3,904 hex
/// digits) is shown by its ends and length; `--output json` carries it whole.
fn key_line(k: &serde_json::Value) -> String {
    let time = |t: &serde_json::Value| t.as_str().unwrap_or("-").to_string();
    format!(
        "{} {} {} valid {} .. {}",
        k["keyid"].as_str().unwrap_or("?"),
        k["alg"].as_str().unwrap_or("?"),
        abbreviate(k["public_key"].as_str().unwrap_or("?")),
        time(&k["not_before"]),
        time(&k["not_after"])
    )
}

/// What a set_signers changes, as a signer must review it before signing (docs/FORMATS.md).
fn set_change_text(d: &serde_json::Value) -> String {
    let mut text = format!(
        "\n  set_signers: threshold {} -> {}",
        d["threshold"]["old"], d["threshold"]["new"]
    );
    for (label, list) in [("added", &d["added"]), ("removed", &d["removed"])] {
        for k in list.as_array().into_iter().flatten() {
            text.push_str(&format!("\n    {label:8} {}", key_line(k)));
        }
    }
    for c in d["changed"].as_array().into_iter().flatten() {
        text.push_str(&format!(
            "\n    changed  {}\n         was {}",
            key_line(&c["new"]),
            key_line(&c["old"])
        ));
    }
    for k in d["unchanged"].as_array().into_iter().flatten() {
        text.push_str(&format!("\n    kept     {}", k.as_str().unwrap_or("?")));
    }
    text
}

/// `ronctl signers show [--version V]`: the signer set in force for proposals on base V.
pub fn signers_show(conn: &Conn, version: Option<u64>) -> CliResult {
    let path = match version {
        Some(v) => format!("/registry/signers?version={v}"),
        None => "/registry/signers".to_string(),
    };
    let v = conn.registry("GET", &path, None, 200)?;
    eprintln!(
        "threshold {} of {} keys, in force since version {}, signers_digest {}",
        v["threshold"],
        v["keys"].as_array().map_or(0, Vec::len),
        v["since_version"],
        v["signers_digest"].as_str().unwrap_or("?")
    );
    for k in v["keys"].as_array().into_iter().flatten() {
        eprintln!("  {}", key_line(k));
    }
    conn.emit_doc(&v);
    Ok(())
}

/// A new signer set as written by an operator: TOML with `threshold` and `[[keys]]`, like the
/// config's `[signers]`.
pub fn parse_signer_set_toml(text: &str) -> Result<SignerSet, String> {
    let raw: crate::config::RawSigners = toml::from_str(text).map_err(|e| e.to_string())?;
    crate::config::parse_signers(&raw)
}

/// `ronctl signers propose --file NEWSET.toml`: build the `set_signers` proposal on HEAD (the
/// set is validated here first, like the config), submit it, print its id; the review (keys
/// added and removed, threshold old -> new) goes to stderr.
pub fn signers_propose(
    conn: &Conn,
    file: &Path,
    registry_id: Option<&str>,
    note: Option<&str>,
) -> CliResult {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let set = parse_signer_set_toml(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let registry_id = match registry_id {
        Some(r) => r.to_string(),
        None => registry_id_from_admin(conn)?,
    };
    let head = conn.registry("GET", "/registry/head", None, 200)?;
    let base = head["version"].as_u64().ok_or("the head has no version")?;
    let form = set.to_json_form_as_listed();
    let mut op = serde_json::json!({"op": "set_signers"});
    op["threshold"] = form.threshold.into();
    op["keys"] = serde_json::to_value(&form.keys).expect("keys serialize");
    let mut proposal = serde_json::json!({
        "registry_id": registry_id,
        "base_version": base,
        "ops": [op],
    });
    if let Some(n) = note {
        proposal["note"] = n.into();
    }
    let bytes = serde_json::to_vec(&proposal).expect("serializes");
    let v = conn.registry("POST", "/propose", Some(&bytes), 202)?;
    let id = v["proposal_id"].as_str().unwrap_or("").to_string();
    let (view, payload) = fetch_payload(conn, &id)?;
    show_review(&view, &payload);
    eprintln!(
        "set_signers proposed on base {base}; expires at {}. It commits with approvals of the set \
         in force AND of the new set (`ronctl registry approve --id {id} --signer KEY`).",
        v["expires_at"].as_str().unwrap_or("?")
    );
    conn.emit(&v, || id.clone());
    Ok(())
}

/// The server's registry_id, from its effective config on the admin listener.
fn registry_id_from_admin(conn: &Conn) -> Result<String, String> {
    let text = conn.admin_text("/admin/config").map_err(|e| {
        format!("cannot read the registry_id from /admin/config ({e}); pass --registry-id")
    })?;
    text.lines()
        .find_map(|l| {
            let rest = l
                .trim()
                .strip_prefix("registry_id")?
                .trim()
                .strip_prefix('=')?;
            Some(rest.trim().trim_matches('"').to_string())
        })
        .ok_or_else(|| "no registry_id in /admin/config; pass --registry-id".to_string())
}

pub fn approve(
    conn: &Conn,
    id: &str,
    signer: Option<&Path>,
    export_payload: Option<&Path>,
    import_sig: Option<&Path>,
    yes: bool,
) -> CliResult {
    let signature = if let Some(sig_file) = import_sig {
        let text = std::fs::read_to_string(sig_file)
            .map_err(|e| format!("{}: {e}", sig_file.display()))?;
        let v: SigJson =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", sig_file.display()))?;
        serde_json::json!({"keyid": v.keyid, "sig": v.sig})
    } else {
        let (v, payload) = fetch_payload(conn, id)?;
        show_review(&v, &payload);
        if let Some(out) = export_payload {
            std::fs::write(out, &payload).map_err(|e| format!("{}: {e}", out.display()))?;
            eprintln!(
                "wrote the exact payload to {}; sign it offline with `ronctl sign`",
                out.display()
            );
            return Ok(());
        }
        let (keyid, key) = load_signer(signer.ok_or("--signer is required")?)?;
        check_key_matches_signer(conn, &v, &payload, &keyid, &key)?;
        confirm_signing(id, &keyid, yes)?;
        let sig = sign_text(&key, &payload)?;
        serde_json::json!({"keyid": keyid, "sig": sig})
    };
    let body =
        serde_json::to_vec(&serde_json::json!({"proposal_id": id, "signatures": [signature]}))
            .expect("serializes");
    let v = conn.registry("POST", "/approve", Some(&body), 200)?;
    conn.emit(&v, || match v["new_threshold"].as_u64() {
        Some(m) => format!(
            "approvals {} of {}; new signer set {} of {m}",
            v["approvals"], v["threshold"], v["new_approvals"]
        ),
        None => format!("approvals {} of {}", v["approvals"], v["threshold"]),
    });
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigJson {
    keyid: String,
    sig: String,
}

/// `sign`: its output is JSON in both `--output` forms (it is the file `--import-sig` reads).
pub fn sign_offline(payload: &Path, signer: &Path, out: Option<&Path>) -> CliResult {
    let bytes = std::fs::read(payload).map_err(|e| format!("{}: {e}", payload.display()))?;
    let (keyid, key) = load_signer(signer)?;
    eprintln!(
        "signing proposal {} ({} bytes) as {keyid} ({})",
        sha256_hex(&bytes),
        bytes.len(),
        key.alg().as_str()
    );
    let sig = SigJson {
        keyid,
        sig: sign_text(&key, &bytes)?,
    };
    let text = serde_json::to_string(&sig).expect("serializes");
    match out {
        Some(p) => std::fs::write(p, text + "\n").map_err(|e| format!("{}: {e}", p.display())),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

pub fn commit(conn: &Conn, id: &str) -> CliResult {
    let body = serde_json::to_vec(&serde_json::json!({"proposal_id": id})).expect("serializes");
    let v = conn.registry("POST", "/commit", Some(&body), 200)?;
    conn.emit(&v, || {
        format!(
            "version {} hash {}",
            v["version"],
            v["hash"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

/// `registry submit`: one request that proposes, approves and commits (docs/API.md). The
/// envelope is read from `envelope`, or built here from the proposal file `file` signed with
/// each of `signers` — each key checked against the server's signer set for the proposal's base
/// and confirmed (or `--yes`) before it signs, as `registry approve` does.
pub fn submit(
    conn: &Conn,
    envelope: Option<&Path>,
    file: Option<&Path>,
    signers: &[PathBuf],
    yes: bool,
) -> CliResult {
    let body = match (envelope, file) {
        (Some(path), None) => {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (None, Some(path)) => {
            let payload = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            if signers.is_empty() {
                return Err("--file needs at least one --signer KEYFILE".into());
            }
            let proposal: serde_json::Value = serde_json::from_slice(&payload)
                .map_err(|e| format!("{}: not a JSON proposal: {e}", path.display()))?;
            let id = sha256_hex(&payload);
            eprintln!(
                "proposal {id} ({} bytes):\n{}",
                payload.len(),
                String::from_utf8_lossy(&payload)
            );
            // The signer sets that judge it are those at its base (and a set_signers' own).
            let view = serde_json::json!({"base_version": proposal["base_version"]});
            let mut signatures = Vec::with_capacity(signers.len());
            for signer in signers {
                let (keyid, key) = load_signer(signer)?;
                check_key_matches_signer(conn, &view, &payload, &keyid, &key)?;
                confirm_signing(&id, &keyid, yes)?;
                let sig = sign_text(&key, &payload)?;
                signatures.push(serde_json::json!({"keyid": keyid, "sig": sig}));
            }
            serde_json::to_vec(&serde_json::json!({
                "payloadType": dsse::PAYLOAD_TYPE,
                "payload": dsse::b64(&payload),
                "signatures": signatures,
            }))
            .expect("serializes")
        }
        _ => return Err("give exactly one of --envelope FILE or --file PROPOSAL".into()),
    };
    let v = conn.registry("POST", "/submit", Some(&body), 200)?;
    conn.emit(&v, || {
        format!(
            "version {} hash {} proposal {}",
            v["version"],
            v["hash"].as_str().unwrap_or(""),
            v["proposal_id"].as_str().unwrap_or("")
        )
    });
    Ok(())
}

/// Parse a signer set in the JSON form of `/registry/signers`.
pub fn signers_from_json(v: &serde_json::Value) -> Result<SignerSet, String> {
    let raw = crate::config::RawSigners {
        threshold: v["threshold"].as_u64().ok_or("signers: no threshold")? as usize,
        keys: v["keys"]
            .as_array()
            .ok_or("signers: no keys")?
            .iter()
            .map(|k| crate::config::RawKey {
                keyid: k["keyid"].as_str().unwrap_or_default().to_string(),
                alg: k["alg"].as_str().map(str::to_string),
                public_key: k["public_key"].as_str().unwrap_or_default().to_string(),
                not_before: k["not_before"].as_str().map(str::to_string),
                not_after: k["not_after"].as_str().map(str::to_string),
            })
            .collect(),
    };
    crate::config::parse_signers(&raw)
}

/// `ronctl registry verify`. Trust is anchored in one place only (docs/FORMATS.md): `genesis_hash`
/// (`--genesis-hash`), or the genesis signer set in `pinned` (`--signers FILE`), or — with
/// neither — the downloaded genesis itself, whose hash is printed so it can be compared with
/// one known out of band. Every later version is judged against the set in force at its base.
pub fn verify(
    conn: &Conn,
    pinned: Option<&Path>,
    genesis_hash: Option<&str>,
    log_file: Option<&Path>,
    registry_id: Option<&str>,
) -> CliResult {
    let pinned_set = match pinned {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            Some(signers_from_json(&v).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    if let Some(h) = genesis_hash {
        if !crate::domain::is_hash_hex(h) {
            return Err(format!(
                "--genesis-hash {h:?} is not 64 lower-case hex digits"
            ));
        }
    }
    if log_file.is_none() {
        let head = conn.registry("GET", "/registry/head", None, 200)?;
        if let Some(oldest) = head["oldest_version"].as_u64().filter(|&o| o > 0) {
            return verify_window(conn, oldest, registry_id);
        }
    }
    // Online, the served state is read before the log: the log then reaches at least its
    // version (history only grows), so the replay can stop exactly there.
    let served = match log_file {
        Some(_) => None,
        None => Some(served_state(conn)?),
    };
    let values: Vec<serde_json::Value> = match log_file {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
            match v {
                serde_json::Value::Array(a) => a,
                mut page => page["records"]
                    .take()
                    .as_array()
                    .cloned()
                    .ok_or("log file: no records")?,
            }
        }
        None => {
            let mut all = Vec::new();
            let mut from = 0u64;
            loop {
                let mut page = conn.registry(
                    "GET",
                    &format!("/registry/log?from={from}&limit=1000"),
                    None,
                    200,
                )?;
                all.extend(
                    page["records"]
                        .take()
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
                match page["next"].as_u64() {
                    Some(n) if n > from => from = n,
                    _ => break,
                }
            }
            all
        }
    };
    let mut records = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        records
            .push(CommitRecord::from_value(v).map_err(|e| format!("record {i}: {}", e.message))?);
    }
    let registry_id = match registry_id {
        Some(r) => r.to_string(),
        None => match records.get(1) {
            Some(r) => serde_json::from_slice::<serde_json::Value>(&r.payload)
                .ok()
                .and_then(|v| v["registry_id"].as_str().map(str::to_string))
                .ok_or("record 1 has no registry_id")?,
            None => {
                conn.emit(
                    &serde_json::json!({"ok": true, "records": records.len(), "checked": false}),
                    || "log holds only genesis; pass --registry-id to check it".into(),
                );
                return Ok(());
            }
        },
    };
    let trust = match (genesis_hash, pinned_set.as_ref()) {
        (Some(h), _) => audit::Trust::GenesisHash(h),
        (None, Some(set)) => audit::Trust::GenesisSet(set),
        (None, None) => audit::Trust::Unpinned,
    };
    let audited = audit::verify_chain_trusting(&registry_id, &records, trust)
        .map_err(|b| format!("BROKEN at version {}: {}", b.version, b.reason))?;
    let n = audited.versions;
    let trusted = match trust {
        audit::Trust::GenesisHash(_) => "pinned",
        audit::Trust::GenesisSet(_) => "its signer set is the pinned one",
        audit::Trust::Unpinned => {
            eprintln!("warning: no --genesis-hash or --signers given: the log's own genesis was trusted; compare its hash with one you know");
            "unpinned"
        }
    };
    // In text the chain verdict is printed before the state comparison, so a state that differs
    // still shows that the history itself verified; JSON prints one document at the end.
    if conn.output == Output::Text {
        println!(
            "ok: {n} records (versions 0..={}) verify: hash chain intact, every commit has a quorum of the signer set in force at its base ({} signer set(s) in the history)",
            n.saturating_sub(1),
            audited.signer_sets
        );
        println!("trusted genesis hash {} ({trusted})", audited.genesis_hash);
    }
    let mut doc = serde_json::json!({"ok": true, "checked": true, "records": n,
        "registry_id": registry_id, "genesis_hash": audited.genesis_hash, "trusted": trusted,
        "signer_sets": audited.signer_sets});
    if let Some((version, state)) = served {
        let count = compare_with_replay(&registry_id, &records, version, &state)?;
        if conn.output == Output::Text {
            println!(
                "ok: the served state at version {version} ({count} descriptors) is the replay of the signed history"
            );
        }
        doc["served_version"] = version.into();
        doc["served_descriptors"] = count.into();
    }
    if conn.output == Output::Json {
        emit(Output::Json, &doc, String::new);
    }
    Ok(())
}

/// `ronctl registry verify` against a node with a retention window (SPEC §14): its records
/// start at `oldest`, so the chain cannot be walked from genesis. What can be checked is the
/// window itself: every record from `oldest` to HEAD links to the one before, hashes right,
/// carries its proposal id, and has a quorum of the signer set in force at its base, starting
/// from the set the node says was in force at `oldest - 1` and the `prev_hash` of record
/// `oldest`. Both starting points are the node's word: say so plainly, and where to verify
/// from genesis.
fn verify_window(conn: &Conn, oldest: u64, registry_id: Option<&str>) -> CliResult {
    let mut records = Vec::new();
    let mut from = oldest;
    loop {
        let mut page = conn.registry(
            "GET",
            &format!("/registry/log?from={from}&limit=1000"),
            None,
            200,
        )?;
        for v in page["records"]
            .take()
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let i = records.len() as u64 + oldest;
            records.push(
                CommitRecord::from_value(v).map_err(|e| format!("record {i}: {}", e.message))?,
            );
        }
        match page["next"].as_u64() {
            Some(n) if n > from => from = n,
            _ => break,
        }
    }
    let first = records.first().ok_or("the window holds no record")?;
    let registry_id = match registry_id {
        Some(r) => r.to_string(),
        None => serde_json::from_slice::<serde_json::Value>(&first.payload)
            .ok()
            .and_then(|v| v["registry_id"].as_str().map(str::to_string))
            .ok_or(format!("record {oldest} has no registry_id"))?,
    };
    let set = conn.registry(
        "GET",
        &format!("/registry/signers?version={}", oldest - 1),
        None,
        200,
    )?;
    let set = signers_from_json(&set).map_err(|e| format!("signers at {}: {e}", oldest - 1))?;
    let mut tip = audit::Tip {
        version: oldest - 1,
        hash: first.prev_hash.clone(),
        signers: crate::domain::quorum::SignerHistory::genesis(std::sync::Arc::new(set)),
    };
    for (i, rec) in records.iter().enumerate() {
        let expect = oldest + i as u64;
        if rec.version != expect {
            return Err(format!(
                "BROKEN at version {expect}: expected version {expect}, found {}",
                rec.version
            ));
        }
        tip.check(&registry_id, rec)
            .map_err(|b| format!("BROKEN at version {}: {}", b.version, b.reason))?;
    }
    let head = tip.version;
    let warning = format!(
        "this node keeps only versions {oldest}..={head} (retention window, storage.retain_versions): \
         its history could NOT be verified from genesis; the window's start (the prev_hash of \
         version {oldest} and the signer set in force there) is the node's word. Verify from \
         genesis against an authority or another node that keeps the full history."
    );
    eprintln!("warning: {warning}");
    if conn.output == Output::Text {
        println!(
            "ok: {} records (versions {oldest}..={head}) verify from the window's start: hash \
             chain intact, every commit has a quorum of the signer set in force at its base",
            records.len()
        );
        println!("NOT verified from genesis (versions 0..{oldest} were dropped by this node)");
    } else {
        emit(
            Output::Json,
            &serde_json::json!({"ok": true, "checked": true, "from_genesis": false,
                "oldest_version": oldest, "records": records.len(), "head": head,
                "registry_id": registry_id, "warning": warning}),
            String::new,
        );
    }
    Ok(())
}

/// The served descriptors: (kind, id) → (version, body).
type ServedState = std::collections::BTreeMap<(String, String), (u64, serde_json::Value)>;

/// Every descriptor the server serves, all pages at one version (listed again if a commit lands
/// between two pages).
fn served_state(conn: &Conn) -> Result<(u64, ServedState), String> {
    'attempt: for _ in 0..5 {
        let mut state = ServedState::new();
        let mut at: Option<u64> = None;
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(cursor) => format!("/registry/descriptors?limit=1000&after={cursor}"),
                None => "/registry/descriptors?limit=1000".to_string(),
            };
            let page = conn.registry("GET", &path, None, 200)?;
            let version = page["version"]
                .as_u64()
                .ok_or("descriptors page: no version")?;
            if *at.get_or_insert(version) != version {
                continue 'attempt;
            }
            for d in page["descriptors"]
                .as_array()
                .ok_or("descriptors page: no list")?
            {
                let key = (
                    d["kind"].as_str().unwrap_or_default().to_string(),
                    d["id"].as_str().unwrap_or_default().to_string(),
                );
                let version = d["version"].as_u64().ok_or("descriptor: no version")?;
                state.insert(key, (version, d["body"].clone()));
            }
            match page["next"].as_str() {
                Some(cursor) => after = Some(cursor.to_string()),
                None => return Ok((at.unwrap_or(0), state)),
            }
        }
    }
    Err("the registry changed during every attempt to list its descriptors; try again".into())
}

/// Replay the signed proposals of versions 1..=`version` from the empty genesis state and
/// compare the result with what the server serves. A mismatch means the server's state is not
/// the one its history proves (a forged checkpoint in its data directory, or a lying server).
fn compare_with_replay(
    registry_id: &str,
    records: &[CommitRecord],
    version: u64,
    served: &ServedState,
) -> Result<usize, String> {
    struct Fetched(Vec<u8>, u64);
    impl crate::restore::Located for Fetched {
        fn location(&self) -> String {
            format!("version {}", self.1)
        }
        fn payload(&self) -> &[u8] {
            &self.0
        }
    }
    if version >= records.len() as u64 {
        return Err(format!(
            "the server serves descriptors at version {version} but its log ends at version {}",
            records.len().saturating_sub(1)
        ));
    }
    let fetched: Vec<Fetched> = records[..=version as usize]
        .iter()
        .map(|r| Fetched(r.to_json(), r.version))
        .collect();
    let replayed = crate::restore::restore(registry_id, None, &fetched)
        .map_err(|e| format!("replaying the signed history: {e}"))?;
    let mut replay = ServedState::new();
    for d in replayed.snapshot.descriptors.values() {
        let v = d.to_value();
        replay.insert(
            (d.kind().as_str().to_string(), d.id().to_string()),
            (d.version(), v["body"].clone()),
        );
    }
    let mut differences = Vec::new();
    for (key, got) in served {
        match replay.get(key) {
            None => differences.push(format!(
                "{}/{} is served but no signed commit put it",
                key.0, key.1
            )),
            Some(want) if want != got => differences.push(format!(
                "{}/{} is served as of version {} but the signed history gives version {}{}",
                key.0,
                key.1,
                got.0,
                want.0,
                if want.1 != got.1 {
                    " with another body"
                } else {
                    ""
                }
            )),
            Some(_) => {}
        }
    }
    for key in replay.keys().filter(|k| !served.contains_key(*k)) {
        differences.push(format!(
            "{}/{} is missing from the served state",
            key.0, key.1
        ));
    }
    if differences.is_empty() {
        return Ok(replay.len());
    }
    let total = differences.len();
    differences.truncate(10);
    Err(format!(
        "STATE DIFFERS at version {version}: {total} descriptor(s) do not match the replay of the signed history:\n  {}",
        differences.join("\n  ")
    ))
}

/// `config print`: with a file, the effective config it gives (file + environment); without,
/// the running server's (`GET /admin/config` on --admin-url). Secrets are redacted either way.
pub fn config_print(conn: &Conn, path: Option<&Path>) -> CliResult {
    let text = match path {
        Some(path) => {
            let config = crate::config::Config::load(path, crate::config::Flags::default())
                .map_err(|e| e.to_string())?;
            config.to_toml()
        }
        None => conn.admin_text("/admin/config")?,
    };
    match conn.output {
        Output::Text => print!("{text}"),
        Output::Json => {
            let value: toml::Value =
                toml::from_str(&text).map_err(|e| format!("the config is not TOML: {e}"))?;
            emit(
                Output::Json,
                &serde_json::to_value(value).expect("TOML is JSON"),
                String::new,
            );
        }
    }
    Ok(())
}

/// `chaos inject`.
pub fn chaos_inject(conn: &Conn, fault: &str, ms: u64, for_secs: Option<u64>) -> CliResult {
    let mut body = serde_json::json!({"fault": fault, "ms": ms});
    if let Some(s) = for_secs {
        body["for_secs"] = s.into();
    }
    let body = serde_json::to_vec(&body).expect("serializes");
    let v = conn.admin("POST", "/admin/chaos", Some(&body), 200)?;
    conn.emit(&v, || match v["expires_at"].as_str() {
        Some(at) => format!("injected {fault} {ms} ms until {at}"),
        None => format!("injected {fault} {ms} ms until cleared (ronctl chaos clear)"),
    });
    Ok(())
}

/// `chaos clear`.
pub fn chaos_clear(conn: &Conn) -> CliResult {
    let v = conn.admin("DELETE", "/admin/chaos", None, 200)?;
    conn.emit(&v, || match v["was_ms"].as_u64() {
        Some(ms) if ms > 0 => format!("cleared storage-latency ({ms} ms)"),
        _ => "no fault was injected".to_string(),
    });
    Ok(())
}

/// `chaos status`.
pub fn chaos_status(conn: &Conn) -> CliResult {
    conn.emit_doc(&conn.admin("GET", "/admin/chaos", None, 200)?);
    Ok(())
}

/// `maintenance on|off|status`: `on` = `Some(true)`.
pub fn maintenance(conn: &Conn, on: Option<bool>, reason: Option<&str>) -> CliResult {
    let v = match on {
        None => conn.admin("GET", "/admin/maintenance", None, 200)?,
        Some(on) => {
            let body = serde_json::to_vec(&serde_json::json!({"read_only": on, "reason": reason}))
                .expect("serializes");
            conn.admin("POST", "/admin/maintenance", Some(&body), 200)?
        }
    };
    conn.emit(&v, || match v["reason"].as_str() {
        Some(reason) if v["read_only"] == true => format!("read-only (maintenance): {reason}"),
        _ => "writes enabled".to_string(),
    });
    Ok(())
}

/// `backup --to DIR`: the server copies its data directory into DIR (a path on the server's
/// host; a relative one is made absolute against this directory, for a server on this host).
pub fn backup(conn: &Conn, to: &Path) -> CliResult {
    let to = std::path::absolute(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let body = serde_json::to_vec(&serde_json::json!({"to": to})).expect("serializes");
    // A large data directory takes a while to copy: wait for the answer at least an hour.
    let patient = Conn {
        registry: conn.registry.clone(),
        admin: conn.admin.clone(),
        timeout: conn.timeout.max(Duration::from_secs(3600)),
        output: conn.output,
        token: conn.token.clone(),
    };
    let v = patient.admin("POST", "/admin/backup", Some(&body), 200)?;
    conn.emit(&v, || {
        format!(
            "backup of {} complete in {}: every version up to {} (log position {}), {} ms",
            v["registry_id"].as_str().unwrap_or("?"),
            v["to"].as_str().unwrap_or("?"),
            v["min_version"],
            v["lsn"],
            v["elapsed_ms"]
        )
    });
    eprintln!("restore: stop the server, point data_dir at this directory (or copy it there), start; see docs/OPERATIONS.md");
    Ok(())
}

/// `follow status`: a follower's standing from its own listeners — verified head, the newest
/// upstream head it heard, lag, refusals and reconnects (docs/OPERATIONS.md §11.1). Fails on a
/// node that is not a follower; prints the state whether or not it is ready.
pub fn follow_status(conn: &Conn) -> CliResult {
    let metrics = conn.admin_text("/metrics")?;
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .map_or(0, |v| v as u64)
    };
    if metric("registry_follower") != 1 {
        return Err("this node is not a follower (registry_follower is not 1)".to_string());
    }
    let r = conn.call(&conn.admin, "GET", "/readyz", None)?;
    let ready: serde_json::Value = serde_json::from_slice(&r.body)
        .map_err(|_| format!("GET /readyz answered {} without JSON", r.status))?;
    let head = conn.registry("GET", "/registry/head", None, 200)?;
    let v = serde_json::json!({
        "ready": r.status == 200,
        "head": head["version"],
        "hash": head["hash"],
        "upstream_head": metric("registry_follow_upstream_head_version"),
        "lag_versions": metric("registry_follow_lag_versions"),
        "applied_total": metric("registry_follow_applied_total"),
        "verify_failures_total": metric("registry_follow_verify_failures_total"),
        "forks_total": metric("registry_follow_forks_total"),
        "reconnects_total": metric("registry_follow_reconnects_total"),
        "reasons": ready["reasons"],
    });
    conn.emit(&v, || {
        let mut text = format!(
            "{} head={} upstream_head={} lag_versions={} applied={} refused={} forks={} reconnects={}",
            if r.status == 200 { "ready" } else { "NOT READY" },
            v["head"],
            v["upstream_head"],
            v["lag_versions"],
            v["applied_total"],
            v["verify_failures_total"],
            v["forks_total"],
            v["reconnects_total"]
        );
        for reason in ready["reasons"].as_array().into_iter().flatten() {
            text.push_str(&format!("\n  {}", reason.as_str().unwrap_or("?")));
        }
        text
    });
    Ok(())
}
