//! Capabilities on the real binary (docs/OPERATIONS.md "Securing a registry", docs/API.md
//! "Tokens"): tokens minted and attenuated by pymacaroons (not by our code) are accepted and
//! refused with the right 401/403 before anything is queued; reads, the stream and the admin
//! routes follow `[auth] require`; the probes stay open; the keys file is checked at start and
//! on SIGHUP; `ronctl cap rotate` rotates end to end; backups stay under `[ops] backup_root`;
//! no token reaches the server's log.
//!
//! Tests that need pymacaroons print a visible skip without it (`pip install pymacaroons`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OLD: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const GHOST: &str = "3333333333333333333333333333333333333333333333333333333333333333";
const ALL: &str = "scope = propose,approve,commit,admin,read";

/// Mints tokens with pymacaroons from a JSON list of specs on stdin; prints {name: token}.
/// A spec: {name, key_id, secret (hex), caveats: [..], third_party: bool}.
const MINT_PY: &str = r#"
import json, sys
from pymacaroons import Macaroon, MACAROON_V2
out = {}
for i, s in enumerate(json.load(sys.stdin)):
    m = Macaroon(location=None, identifier="v1:%s:%032x" % (s["key_id"], i + 1),
                 key=bytes.fromhex(s["secret"]), version=MACAROON_V2)
    m = Macaroon.deserialize(m.serialize())
    # Attenuated the way a holder does it: from the serialized token, without the root key.
    for c in s.get("caveats", []):
        m = Macaroon.deserialize(m.serialize())
        m.add_first_party_caveat(c)
    if s.get("third_party"):
        m.add_third_party_caveat("https://auth.example/", b"\x44" * 32, "discharge-me")
    out[s["name"]] = m.serialize()
print(json.dumps(out))
"#;

/// Tokens by name, minted by pymacaroons; None (with a visible skip) when it is not installed.
fn pymacaroons(test: &str, specs: Value) -> Option<BTreeMap<String, String>> {
    let child = Command::new("python3")
        .args(["-c", MINT_PY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        skip_notice(test, "python3 is not installed");
        return None;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(specs.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("No module named"),
            "the pymacaroons helper failed: {err}"
        );
        skip_notice(
            test,
            "python3 with pymacaroons not installed (pip install pymacaroons)",
        );
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn third_party_spec() -> Value {
    let mut s = spec("third_party", "k1", K1, &[ALL]);
    s["third_party"] = json!(true);
    s
}

fn spec(name: &str, key_id: &str, secret: &str, caveats: &[&str]) -> Value {
    json!({"name": name, "key_id": key_id, "secret": secret, "caveats": caveats})
}

/// A keys file with mode 0600 in its own directory (kept alive by the returned guard).
fn keys_file(keys: &[(&str, &str, Option<&str>)]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth-keys.toml");
    write_keys(&path, keys);
    (dir, path)
}

fn write_keys(path: &Path, keys: &[(&str, &str, Option<&str>)]) {
    let mut text = String::new();
    for (id, secret, not_after) in keys {
        text += &format!("[[keys]]\nid = \"{id}\"\nsecret = \"{secret}\"\n");
        if let Some(t) = not_after {
            text += &format!("not_after = \"{t}\"\n");
        }
    }
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn auth_setup(keys: &Path, require: &[&str], extra: &str) -> Setup {
    Setup {
        tables: format!(
            "[auth]\nkeys_file = {:?}\nrequire = {:?}\n{extra}",
            keys.display().to_string(),
            require
        ),
        // Debug level: the access log lines are on, and must not carry a token either.
        env: vec![("RUST_LOG".into(), "debug".into())],
        ..Setup::default()
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn send(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> ClientResponse {
    let auth = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    s.request(method, path, &headers, body)
}

fn admin_send(
    s: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> ClientResponse {
    let auth = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    svc_registry::http::client::request(&s.metrics_target(), method, path, &headers, body, TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn proposal(s: &TestServer, ops: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "registry_id": s.setup.registry_id,
        "base_version": s.head()["version"],
        "ops": ops,
    }))
    .unwrap()
}

fn proposal_id(payload: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(payload))
}

fn status_and_code(r: &ClientResponse) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
    format!("{} {}", r.status, v["error"].as_str().unwrap_or("-"))
}

#[test]
fn pymacaroons_tokens_are_accepted_and_refused_before_anything_is_queued() {
    let test = "pymacaroons_tokens_are_accepted_and_refused_before_anything_is_queued";
    let Some(t) = pymacaroons(
        test,
        json!([
            spec("all", "k1", K1, &[ALL]),
            spec("retired", "old", OLD, &[ALL]),
            spec("ghost", "ghost", GHOST, &[ALL]),
            spec(
                "expired",
                "k1",
                K1,
                &[ALL, "expires = 2020-01-01T00:00:00Z"]
            ),
            spec("future", "k1", K1, &[ALL, "expires = 2999-01-01T00:00:00Z"]),
            spec("unknown_caveat", "k1", K1, &[ALL, "colour = blue"]),
            third_party_spec(),
            spec("read_only", "k1", K1, &["scope = read"]),
            spec("narrowed", "k1", K1, &[ALL, "scope = read,approve"]),
            spec("admin_only", "k1", K1, &["scope = admin"]),
            spec(
                "other_registry",
                "k1",
                K1,
                &[ALL, "registry = other-registry"]
            ),
            spec(
                "this_registry",
                "k1",
                K1,
                &[ALL, "registry = test-registry"]
            ),
            spec("nodes", "k1", K1, &[ALL, "kind = node"]),
            spec("edge", "k1", K1, &[ALL, "id_prefix = edge-"]),
        ]),
    ) else {
        return;
    };
    let (_keys_dir, keys) =
        keys_file(&[("old", OLD, Some("2020-01-01T00:00:00Z")), ("k1", K1, None)]);
    let s = TestServer::start(auth_setup(
        &keys,
        &["propose", "approve", "commit", "admin"],
        "",
    ));
    let all = Some(t["all"].as_str());

    // Damaged copies of a good token.
    let good = t["all"].clone();
    let truncated = good[..good.len() - 7].to_string();
    let mut flipped: Vec<u8> = good.clone().into_bytes();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();

    // A multi-op proposal with one op outside `kind = node` and `id_prefix = edge-`.
    let mixed = proposal(
        &s,
        json!([
            put("node", "edge-1", json!({"v": 1})),
            put("service", "edge-2", json!({"v": 1})),
            put("node", "core-3", json!({"v": 1})),
        ]),
    );
    let pending_before = s.metric("registry_pending_proposals");
    let refusals: Vec<(&str, Option<&str>, &str)> = vec![
        ("no token", None, "401 unauthorized"),
        ("malformed", Some("not a token!"), "401 unauthorized"),
        ("truncated", Some(&truncated), "401 unauthorized"),
        ("bit-flipped", Some(&flipped), "401 unauthorized"),
        ("unknown key", Some(t["ghost"].as_str()), "401 unauthorized"),
        (
            "retired key",
            Some(t["retired"].as_str()),
            "401 unauthorized",
        ),
        ("expired", Some(t["expired"].as_str()), "401 unauthorized"),
        (
            "unknown caveat",
            Some(t["unknown_caveat"].as_str()),
            "401 unauthorized",
        ),
        (
            "third-party caveat",
            Some(t["third_party"].as_str()),
            "401 unauthorized",
        ),
        (
            "scope without propose",
            Some(t["read_only"].as_str()),
            "403 forbidden",
        ),
        (
            "narrowed by a second scope",
            Some(t["narrowed"].as_str()),
            "403 forbidden",
        ),
        (
            "other registry",
            Some(t["other_registry"].as_str()),
            "403 forbidden",
        ),
        (
            "kind violated by one op",
            Some(t["nodes"].as_str()),
            "403 forbidden",
        ),
        (
            "id_prefix violated by one op",
            Some(t["edge"].as_str()),
            "403 forbidden",
        ),
    ];
    for (what, token, want) in &refusals {
        let r = send(&s, "POST", "/propose", *token, Some(&mixed));
        assert_eq!(&status_and_code(&r), want, "{what}: {}", r.text());
        if r.status == 401 {
            let challenge = r.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer"), "{what}: {challenge:?}");
        }
    }
    // Nothing was queued: the proposal is unknown and the pending count did not move.
    let r = send(
        &s,
        "GET",
        &format!("/proposals/{}", proposal_id(&mixed)),
        None,
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(s.metric("registry_pending_proposals"), pending_before);
    assert!(s.metric("auth_failures_total{reason=\"missing\"}") >= 1.0);
    assert!(s.metric("auth_failures_total{reason=\"kind\"}") >= 1.0);
    assert!(s.metric("auth_failures_total{reason=\"id_prefix\"}") >= 1.0);
    assert!(s.metric("auth_failures_total{reason=\"key_retired\"}") >= 1.0);

    // Good tokens work: the plain one, one with an expiry ahead, one for this registry.
    for name in ["all", "future", "this_registry"] {
        let p = proposal(
            &s,
            json!([put("node", &format!("n-{name}"), json!({"v": 1}))]),
        );
        let r = send(&s, "POST", "/propose", Some(&t[name]), Some(&p));
        assert_eq!(r.status, 202, "{name}: {}", r.text());
    }
    // The mixed proposal, proposed with the full token, is pending; a token narrowed to one kind
    // or prefix can neither approve nor commit it (its ops come from the pending proposal).
    let r = send(&s, "POST", "/propose", all, Some(&mixed));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = proposal_id(&mixed);
    let approve = s.setup.approve_body(&id, &mixed);
    let commit = format!(r#"{{"proposal_id":"{id}"}}"#);
    for name in ["nodes", "edge"] {
        let r = send(&s, "POST", "/approve", Some(&t[name]), Some(&approve));
        assert_eq!(status_and_code(&r), "403 forbidden", "{name}: {}", r.text());
        let r = send(
            &s,
            "POST",
            "/commit",
            Some(&t[name]),
            Some(commit.as_bytes()),
        );
        assert_eq!(status_and_code(&r), "403 forbidden", "{name}: {}", r.text());
    }
    // …and no approval was recorded.
    let r = send(&s, "GET", &format!("/proposals/{id}"), None, None);
    assert_eq!(json(&r)["approvals"], json!([]), "{}", r.text());
    // A proposal inside both caveats goes all the way with the narrowed tokens.
    let inside = proposal(&s, json!([put("node", "edge-9", json!({"v": 9}))]));
    let r = send(&s, "POST", "/propose", Some(&t["nodes"]), Some(&inside));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = proposal_id(&inside);
    let r = send(
        &s,
        "POST",
        "/approve",
        Some(&t["edge"]),
        Some(&s.setup.approve_body(&id, &inside)),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        &s,
        "POST",
        "/commit",
        Some(&t["nodes"]),
        Some(format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A narrowed token on a proposal that is not pending fails closed.
    let absent = "ab".repeat(32);
    let r = send(
        &s,
        "POST",
        "/commit",
        Some(&t["nodes"]),
        Some(format!(r#"{{"proposal_id":"{absent}"}}"#).as_bytes()),
    );
    assert_eq!(status_and_code(&r), "403 forbidden", "{}", r.text());

    // Reads are open (read is not required here), and so are the probes and OPTIONS.
    assert_eq!(send(&s, "GET", "/registry/head", None, None).status, 200);
    assert_eq!(send(&s, "OPTIONS", "/propose", None, None).status, 204);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            admin_send(&s, "GET", probe, None, None).status,
            200,
            "{probe}"
        );
    }
    // Admin routes need `admin`.
    for (token, want) in [
        (None, "401 unauthorized"),
        (Some(t["read_only"].as_str()), "403 forbidden"),
        (Some(t["retired"].as_str()), "401 unauthorized"),
    ] {
        for (method, path, body) in [
            ("GET", "/admin/config", None),
            ("GET", "/admin/maintenance", None),
            (
                "POST",
                "/admin/maintenance",
                Some(&br#"{"read_only": true}"#[..]),
            ),
            ("POST", "/admin/chaos/clear", None),
            (
                "POST",
                "/admin/backup",
                Some(&br#"{"to": "/tmp/nowhere-auth-test"}"#[..]),
            ),
        ] {
            let r = admin_send(&s, method, path, token, body);
            assert_eq!(status_and_code(&r), want, "{method} {path}: {}", r.text());
        }
    }
    let r = admin_send(
        &s,
        "GET",
        "/admin/maintenance",
        Some(&t["admin_only"]),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json(&r)["read_only"],
        false,
        "a refused POST changed nothing"
    );

    // No token, whole or as its signature part, in the server's log (debug level).
    let logs = s.logs();
    assert!(logs.contains("msg=\"auth refused\""), "refusals are logged");
    for (name, token) in &t {
        assert!(!logs.contains(token.as_str()), "token {name} in the log");
        assert!(
            !logs.contains(&token[token.len() - 40..]),
            "token {name}'s tail in the log"
        );
    }
    assert!(!logs.contains(&truncated) && !logs.contains(&flipped));
}

#[test]
fn read_required_closes_reads_and_the_stream_but_not_the_probes() {
    let (_keys_dir, keys) = keys_file(&[("k1", K1, None)]);
    let s = TestServer::start(auth_setup(
        &keys,
        &["propose", "approve", "commit", "admin", "read"],
        "",
    ));
    let ring = svc_registry::auth::KeyRing::load(&keys).unwrap();
    let mut m = ring.get("k1").unwrap().mint(&[7; 16]);
    m.add_first_party_caveat(b"scope = read").unwrap();
    let read = m.to_base64();
    for path in [
        "/registry/head",
        "/registry/0",
        "/registry/signers",
        "/registry/log",
        "/registry/descriptors",
        "/registry/descriptors/node/x",
        &format!("/proposals/{}", "ab".repeat(32)),
    ] {
        let r = send(&s, "GET", path, None, None);
        assert_eq!(status_and_code(&r), "401 unauthorized", "{path}");
        let r = send(&s, "GET", path, Some(&read), None);
        assert!(matches!(r.status, 200 | 404), "{path}: {}", r.text());
    }
    let auth = bearer(&read);
    let (head, _) =
        svc_registry::http::client::open_stream(&s.target(), "/registry/stream", &[], TIMEOUT)
            .unwrap();
    assert_eq!(head.status, 401);
    let (head, _) = svc_registry::http::client::open_stream(
        &s.target(),
        "/registry/stream",
        &[("Authorization", &auth)],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(head.status, 200);
    // A read token cannot write.
    let p = proposal_with_token(&s, &read);
    let r = send(&s, "POST", "/propose", Some(&read), Some(&p));
    assert_eq!(status_and_code(&r), "403 forbidden", "{}", r.text());
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            admin_send(&s, "GET", probe, None, None).status,
            200,
            "{probe}"
        );
    }
    assert_eq!(
        send(&s, "OPTIONS", "/registry/head", None, None).status,
        204
    );
    // ronctl sends RON_TOKEN, and never prints it.
    let (ok, out, err) = s.ronctl(&["--token", &read, "registry", "head"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"version\""), "{out}");
    let (ok, out, err) = s.ronctl(&["registry", "head"]);
    assert!(
        !ok && err.contains("401") && err.contains("RON_TOKEN"),
        "{out}{err}"
    );
    let bad = format!("{read}x");
    let (ok, out, err) = s.ronctl(&["--token", &bad, "registry", "head"]);
    assert!(!ok);
    assert!(!out.contains(&read) && !err.contains(&read), "{out}{err}");
}

fn proposal_with_token(s: &TestServer, token: &str) -> Vec<u8> {
    let r = send(s, "GET", "/registry/head", Some(token), None);
    serde_json::to_vec(&json!({
        "registry_id": s.setup.registry_id,
        "base_version": json(&r)["version"],
        "ops": [put("node", "n1", json!({}))],
    }))
    .unwrap()
}

#[test]
fn a_keys_file_others_can_read_or_a_malformed_one_stops_the_start() {
    let (_dir, keys) = keys_file(&[("k1", K1, None)]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let Err((logs, status)) = TestServer::try_start(auth_setup(&keys, &["admin"], "")) else {
        panic!("started with a 0644 keys file");
    };
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{logs:?}");
    assert!(logs.join("\n").contains("chmod 600"), "{logs:?}");
    // Malformed (mode fine): refused, and the line does not quote the secret.
    std::fs::write(
        &keys,
        format!("[[keys]]\nid = \"k1\"\nsecret = \"{}\"\n", &K1[..60]),
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let Err((logs, status)) = TestServer::try_start(auth_setup(&keys, &["admin"], "")) else {
        panic!("started with a malformed keys file");
    };
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{logs:?}");
    let logs = logs.join("\n");
    assert!(
        logs.contains("64 hex digits") && !logs.contains(&K1[..60]),
        "{logs}"
    );
    // Without [auth]: one clear warning line, and the server runs open.
    let s = TestServer::start(Setup::default());
    assert_eq!(s.logs().matches("no [auth] in the config").count(), 1);
}

/// A token of `key` (from the keys file at `path`) with every scope, minted by ronctl.
fn ronctl_mint(s: &TestServer, path: &Path, key: &str) -> String {
    ronctl_mint_scoped(s, path, key, "propose,approve,commit,admin,read")
}

/// A token of `key` with exactly `scope` (comma-separated actions), minted by ronctl.
fn ronctl_mint_scoped(s: &TestServer, path: &Path, key: &str, scope: &str) -> String {
    let (ok, out, err) = s.ronctl(&[
        "cap",
        "mint",
        "--keys-file",
        path.to_str().unwrap(),
        "--key-id",
        key,
        "--scope",
        scope,
    ]);
    assert!(ok, "{err}");
    out.trim().to_string()
}

#[test]
fn a_submit_needs_propose_approve_and_commit_scopes() {
    let (_dir, keys) = keys_file(&[("k1", K1, None)]);
    let s = TestServer::start(auth_setup(
        &keys,
        &["propose", "approve", "commit", "admin", "read"],
        "",
    ));
    let reader = ronctl_mint_scoped(&s, &keys, "k1", "read");
    let head = |s: &TestServer| json(&send(s, "GET", "/registry/head", Some(&reader), None));
    let payload = serde_json::to_vec(&json!({
        "registry_id": s.setup.registry_id,
        "base_version": head(&s)["version"],
        "ops": [put("node", "n1", json!({}))],
    }))
    .unwrap();
    let sigs: Vec<Value> = s.setup.signers[..s.setup.threshold]
        .iter()
        .map(|k| json!({"keyid": k.keyid, "sig": k.sign(&payload)}))
        .collect();
    let envelope = serde_json::to_vec(&json!({
        "payloadType": svc_registry::domain::dsse::PAYLOAD_TYPE,
        "payload": svc_registry::domain::dsse::b64(&payload),
        "signatures": sigs,
    }))
    .unwrap();
    let before = head(&s);
    // No token: 401 with the challenge; two of the three scopes: 403; nothing changes.
    let r = send(&s, "POST", "/submit", None, Some(&envelope));
    assert_eq!(status_and_code(&r), "401 unauthorized");
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    for scope in [
        "propose,approve",
        "approve,commit",
        "propose,commit",
        "read",
    ] {
        let t = ronctl_mint_scoped(&s, &keys, "k1", scope);
        let r = send(&s, "POST", "/submit", Some(&t), Some(&envelope));
        assert_eq!(status_and_code(&r), "403 forbidden", "scope {scope}");
    }
    assert_eq!(head(&s), before);
    // All three: committed.
    let t = ronctl_mint_scoped(&s, &keys, "k1", "propose,approve,commit");
    let r = send(&s, "POST", "/submit", Some(&t), Some(&envelope));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(head(&s)["version"], before["version"].as_u64().unwrap() + 1);
}

fn admin_status(s: &TestServer, token: &str) -> u16 {
    admin_send(s, "GET", "/admin/maintenance", Some(token), None).status
}

#[test]
fn sighup_with_a_broken_keys_file_keeps_the_old_keys() {
    let (_dir, keys) = keys_file(&[("k1", K1, None)]);
    let s = TestServer::start(auth_setup(&keys, &["admin"], ""));
    let token = ronctl_mint(&s, &keys, "k1");
    assert_eq!(admin_status(&s, &token), 200);
    std::fs::write(&keys, "[[keys]\nid = ").unwrap();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_log("keeping the previous keys", TIMEOUT),
        "{}",
        s.logs()
    );
    assert_eq!(admin_status(&s, &token), 200);
    // Group-readable on reload: also kept out.
    write_keys(&keys, &[("k2", GHOST, None)]);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o640)).unwrap();
    s.signal(libc::SIGHUP);
    eventually(TIMEOUT, "a second refusal", || {
        s.logs().matches("keeping the previous keys").count() == 2
    });
    assert_eq!(admin_status(&s, &token), 200);
}

#[test]
fn rotation_with_ronctl_keeps_old_tokens_until_not_after_and_new_tokens_work() {
    let dir = tempfile::tempdir().unwrap();
    let (_keys_dir, keys) = keys_file(&[("k1", K1, None)]);
    let s = TestServer::start(auth_setup(
        &keys,
        &["propose", "approve", "commit", "admin"],
        &format!(
            "[ops]\nbackup_root = {:?}\n",
            dir.path().display().to_string()
        ),
    ));
    let old = ronctl_mint(&s, &keys, "k1");
    assert_eq!(admin_status(&s, &old), 200);
    let (ok, out, err) = s.ronctl(&[
        "cap",
        "rotate",
        "--keys-file",
        keys.to_str().unwrap(),
        "--grace",
        "3s",
        "--new-id",
        "k2",
        "--data-dir",
        s.data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("re-issue") && out.contains("k1") && out.contains("SIGHUP"),
        "{out}"
    );
    assert!(!out.contains(K1), "the report shows no secret: {out}");
    let mode = std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(s.wait_log("auth_keys=2", TIMEOUT), "{}", s.logs());
    let new = ronctl_mint(&s, &keys, "k2");
    assert_eq!(admin_status(&s, &new), 200);
    assert_eq!(
        admin_status(&s, &old),
        200,
        "the old token lives until not_after"
    );
    // After the grace period the old key's tokens are refused; the new ones still work.
    eventually(Duration::from_secs(15), "the old key retires", || {
        admin_status(&s, &old) == 401
    });
    assert_eq!(admin_status(&s, &new), 200);
    let r = admin_send(&s, "GET", "/admin/config", Some(&old), None);
    assert!(r.text().contains("past its not_after"), "{}", r.text());
    // ronctl with the new token runs an admin command; neither token is in any output or log.
    let (ok, out, err) = s.ronctl(&["--token", &new, "maintenance", "status"]);
    assert!(ok, "{err}");
    let logs = s.logs();
    for t in [&old, &new] {
        assert!(
            !logs.contains(t.as_str()) && !out.contains(t.as_str()) && !err.contains(t.as_str())
        );
    }
}

#[test]
fn backups_are_written_only_under_backup_root() {
    let root = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let (_keys_dir, keys) = keys_file(&[("k1", K1, None)]);
    let s = TestServer::start(auth_setup(
        &keys,
        &["admin"],
        &format!(
            "[ops]\nbackup_root = {:?}\n",
            root.path().display().to_string()
        ),
    ));
    let token = ronctl_mint(&s, &keys, "k1");
    let outside = elsewhere.path().join("b1");
    let body = serde_json::to_vec(&json!({"to": outside})).unwrap();
    let r = admin_send(&s, "POST", "/admin/backup", Some(&token), Some(&body));
    assert_eq!(status_and_code(&r), "403 forbidden", "{}", r.text());
    assert!(r.text().contains("backup_root"), "{}", r.text());
    assert!(!outside.exists());
    // A symbolic link inside the root that points out of it is outside too.
    std::os::unix::fs::symlink(elsewhere.path(), root.path().join("link")).unwrap();
    let body = serde_json::to_vec(&json!({"to": root.path().join("link").join("b2")})).unwrap();
    let r = admin_send(&s, "POST", "/admin/backup", Some(&token), Some(&body));
    assert_eq!(r.status, 403, "{}", r.text());
    // Inside: a real backup.
    let inside = root.path().join("b3");
    let (ok, out, err) = s.ronctl(&[
        "--token",
        &token,
        "backup",
        "--to",
        inside.to_str().unwrap(),
    ]);
    assert!(ok, "{out}{err}");
    assert!(inside.join("BACKUP.json").exists());

    // With [auth] on and no backup_root, the route is refused and says what to set.
    let (_keys_dir2, keys2) = keys_file(&[("k1", K1, None)]);
    let s2 = TestServer::start(auth_setup(&keys2, &["admin"], ""));
    let body = serde_json::to_vec(&json!({"to": elsewhere.path().join("b4")})).unwrap();
    let r = admin_send(&s2, "POST", "/admin/backup", Some(&token), Some(&body));
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(r.text().contains("set [ops] backup_root"), "{}", r.text());
}
