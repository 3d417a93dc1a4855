//! Capability tokens against pymacaroons, both ways (SPEC §10):
//! - tokens pymacaroons minted, attenuated or damaged (tests/vectors/macaroons.json, made by
//!   tests/vectors/macaroons_vectors.py) parse, verify and are refused exactly as the vectors say;
//! - tokens our code mints deserialize and verify in pymacaroons, and pymacaroons' attenuation of
//!   them verifies here (when python3 and pymacaroons are installed; a visible skip otherwise).

mod common;

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use svc_registry::auth::{authorize, Action, KeyRing, Macaroon, OpRef, Request};

fn vectors() -> Value {
    serde_json::from_str(include_str!("vectors/macaroons.json")).unwrap()
}

/// The vectors' keys, written as a keys file and read back through the real parser.
fn key_ring(v: &Value) -> KeyRing {
    let mut toml = String::new();
    for k in v["keys"].as_array().unwrap() {
        toml += &format!(
            "[[keys]]\nid = \"{}\"\nsecret = \"{}\"\n",
            k["id"].as_str().unwrap(),
            k["secret"].as_str().unwrap()
        );
        if let Some(t) = k["not_after"].as_str() {
            toml += &format!("not_after = \"{t}\"\n");
        }
    }
    KeyRing::parse(&toml).unwrap()
}

/// "ok <key id>", or "<status> <reason>": the vectors' `expect` notation.
fn outcome(token: &str, keys: &KeyRing, req: &Request<'_>) -> String {
    match authorize(token, keys, req) {
        Ok(v) => format!("ok {}", v.key_id),
        Err(e) => format!("{} {}", e.status(), e.reason()),
    }
}

fn text_list(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pymacaroons_vectors_verify_and_are_refused_exactly_as_expected() {
    let v = vectors();
    let keys = key_ring(&v);
    let vectors = v["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 20, "the vector file lost entries");
    let mut checked = 0;
    for vector in vectors {
        let name = vector["name"].as_str().unwrap();
        let token = vector["token"].as_str().unwrap();
        let parsed = &vector["parsed"];
        // Whatever pymacaroons could parse (including the ones with a bad signature), we read
        // to the same identifier, caveats and signature — unless our bounds refuse it.
        if !parsed.is_null() {
            let m = Macaroon::from_base64(token).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                String::from_utf8(m.identifier.clone()).unwrap(),
                parsed["identifier"].as_str().unwrap(),
                "{name}"
            );
            let caveats: Vec<String> = m
                .caveats
                .iter()
                .map(|c| String::from_utf8(c.clone()).unwrap())
                .collect();
            assert_eq!(caveats, text_list(&parsed["caveats"]), "{name}");
            assert_eq!(
                m.signature_hex(),
                parsed["signature"].as_str().unwrap(),
                "{name}"
            );
            // Re-encoding gives pymacaroons' bytes, less the empty location it always writes.
            let again = Macaroon::from_base64(&m.to_base64()).unwrap();
            assert_eq!(again, m, "{name}");
        }
        for check in vector["checks"].as_array().unwrap() {
            let action = Action::parse(check["action"].as_str().unwrap()).unwrap();
            let ops_owned: Option<Vec<(String, String)>> = check["ops"].as_array().map(|ops| {
                ops.iter()
                    .map(|op| {
                        (
                            op[0].as_str().unwrap().to_string(),
                            op[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect()
            });
            let ops: Option<Vec<OpRef<'_>>> = ops_owned
                .as_ref()
                .map(|ops| ops.iter().map(|(kind, id)| OpRef { kind, id }).collect());
            let req = Request {
                action,
                registry_id: check["registry"].as_str().unwrap(),
                now_unix_s: check["now"].as_i64().unwrap(),
                ops: ops.as_deref(),
            };
            let want = check["expect"].as_str().unwrap();
            assert_eq!(outcome(token, &keys, &req), want, "{name}: {check}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} checks ran");
}

const PYTHON_VERIFY: &str = r#"
import json, sys
from pymacaroons import Macaroon, Verifier
from pymacaroons.exceptions import MacaroonInvalidSignatureException
out = []
for t in json.load(sys.stdin):
    m = Macaroon.deserialize(t["token"])
    v = Verifier()
    for c in t["caveats"]:
        v.satisfy_exact(c)
    assert v.verify(m, bytes.fromhex(t["secret"]))
    wrong = Verifier()
    wrong.satisfy_general(lambda _: True)
    try:
        wrong.verify(m, b"\x00" * 32)
        raise SystemExit("verified under a wrong secret")
    except MacaroonInvalidSignatureException:
        pass
    entry = {
        "identifier": m.identifier_bytes.decode(),
        "caveats": [c.caveat_id_bytes.decode() for c in m.caveats],
        "signature": m.signature,
    }
    m.add_first_party_caveat("scope = read")
    entry["attenuated"] = m.serialize()
    out.append(entry)
json.dump(out, sys.stdout)
"#;

fn have_pymacaroons() -> bool {
    Command::new("python3")
        .args(["-c", "import pymacaroons"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn tokens_we_mint_verify_in_pymacaroons_and_its_attenuation_verifies_here() {
    const TEST: &str = "tokens_we_mint_verify_in_pymacaroons_and_its_attenuation_verifies_here";
    if !have_pymacaroons() {
        common::skip_notice(
            TEST,
            "python3 with pymacaroons not installed (pip install pymacaroons)",
        );
        return;
    }
    let v = vectors();
    let keys = key_ring(&v);
    let k1 = keys.get("k1").unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["scope = propose,read", "registry = reg-vectors"],
        vec![
            "scope = read,admin",
            "expires = 2030-01-01T00:00:00Z",
            "kind = node",
            "id_prefix = eu-",
        ],
    ];
    let mut minted = Vec::new();
    for (i, caveats) in cases.iter().enumerate() {
        let mut m = k1.mint(&[i as u8; 16]);
        for c in caveats {
            m.add_first_party_caveat(c.as_bytes()).unwrap();
        }
        minted.push(m);
    }
    let input: Vec<Value> = minted
        .iter()
        .zip(&cases)
        .map(|(m, caveats)| {
            serde_json::json!({"token": m.to_base64(), "secret": hex::encode(k1.secret()), "caveats": caveats})
        })
        .collect();

    let mut child = Command::new("python3")
        .args(["-c", PYTHON_VERIFY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pymacaroons refused our tokens: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen.len(), minted.len());

    let read = Request {
        action: Action::Read,
        registry_id: "reg-vectors",
        now_unix_s: 1_800_000_000,
        ops: None,
    };
    let admin = Request {
        action: Action::Admin,
        ..read
    };
    for ((m, caveats), s) in minted.iter().zip(&cases).zip(&seen) {
        assert_eq!(
            s["identifier"].as_str().unwrap().as_bytes(),
            &m.identifier[..]
        );
        assert!(s["identifier"].as_str().unwrap().starts_with("v1:k1:"));
        assert_eq!(text_list(&s["caveats"]), *caveats);
        assert_eq!(s["signature"].as_str().unwrap(), m.signature_hex());
        // pymacaroons narrowed our token to reads: we accept it for read, refuse it for admin.
        let attenuated = s["attenuated"].as_str().unwrap();
        assert_eq!(outcome(attenuated, &keys, &read), "ok k1", "{caveats:?}");
        // Refused by the first caveat in order that denies: the appended scope, or an earlier
        // kind caveat that admin, having no ops, cannot satisfy.
        let refused = outcome(attenuated, &keys, &admin);
        assert!(
            refused == "403 scope" || refused == "403 no_ops",
            "{caveats:?}: {refused}"
        );
    }
}
