//! The `approve_request` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/approve_request.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Approval request parsing: the JSON body of `POST /approve` (docs/API.md), through the real route
//! handler (`RegistryApi`, whose body types are private), with `/submit` envelopes, `/commit`
//! bodies and `/proposals/{id}` paths alongside.
//!
//! The handler is driven directly with a `Request`; the writer is a channel this target reads.
//!
//! Checked: no panic; a refused request is a docs/API.md error (400 or 413 with a JSON error body)
//! and reaches no writer; an accepted one reaches the writer exactly once, with a 64-hex
//! proposal id, at most 64 signatures, each keyid and signature exactly as the body said; an
//! accepted `/submit` carries the DSSE payloadType, the payload decoded byte for byte and its
//! signatures likewise.

use arc_swap::ArcSwap;
use crossbeam_channel::Receiver;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use svc_registry::api::RegistryApi;
use svc_registry::domain::dsse;
use svc_registry::domain::signers::{Sig, SignerKey, SignerSet};
use svc_registry::http::{Handler, Method, Outcome, Replier, Request};
use svc_registry::ops::{Readiness, WritePlane};
use svc_registry::roles::writer::WriteRequest;
use svc_registry::snapshot::Snapshot;

struct Fixture {
    api: RegistryApi,
    writer_rx: Receiver<WriteRequest>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let keys = (1..=3u8)
            .map(|i| SignerKey {
                keyid: format!("k{i}"),
                public: ed25519_dalek::SigningKey::from_bytes(&[i; 32])
                    .verifying_key()
                    .into(),
                not_before: None,
                not_after: None,
            })
            .collect();
        let plane = WritePlane::new();
        Readiness::set(&plane.readiness.writer_ready, true);
        let (writer_tx, writer_rx) = crossbeam_channel::bounded(4);
        Fixture {
            api: RegistryApi {
                snapshot: Arc::new(ArcSwap::from_pointee(Snapshot::genesis(
                    "fuzz",
                    Arc::new(SignerSet::new(2, keys).unwrap()),
                ))),
                writer: writer_tx,
                plane,
                stream: None,
                cors: svc_registry::api::cors::Cors::new(&[]),
                gate: Arc::new(svc_registry::auth::Gate::open("fuzz")),
                pending_ops: Arc::default(),
                // No transparency log: its routes are not what this target fuzzes.
                tlog: None,
            },
            writer_rx,
        }
    })
}

/// The signatures the writer got are at most 64, and each keyid and signature exactly as the
/// body `v` listed them.
fn same_signatures(v: &serde_json::Value, signatures: &[(String, Sig)]) {
    assert!(signatures.len() <= 64);
    let listed = v["signatures"].as_array().expect("signatures array");
    assert_eq!(listed.len(), signatures.len());
    for ((keyid, sig), s) in signatures.iter().zip(listed) {
        assert_eq!(s["keyid"].as_str(), Some(keyid.as_str()));
        let text = s["sig"].as_str().expect("sig string");
        assert_eq!(Sig::decode(text).as_ref(), Some(sig));
    }
}

fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let f = fixture();
    let (method, path, body) = match selector {
        0..=127 => (Method::Post, "/approve".to_string(), body.to_vec()),
        128..=159 => (Method::Post, "/submit".to_string(), body.to_vec()),
        160..=223 => (Method::Post, "/commit".to_string(), body.to_vec()),
        _ => (
            Method::Get,
            format!("/proposals/{}", String::from_utf8_lossy(body)),
            Vec::new(),
        ),
    };
    let request = Request {
        method,
        path: path.clone(),
        query: None,
        headers: Vec::new(),
        body: body.clone(),
        corr_id: "fuzz".to_string(),
        started: Instant::now(),
    };
    let (replier, answers) = Replier::detached("fuzz");
    match f.api.handle(request, replier) {
        Outcome::Respond(r) => {
            assert!(
                matches!(r.status, 400 | 404 | 413),
                "{path}: refused with {}",
                r.status
            );
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).expect("an error body is JSON");
            assert!(v["error"].is_string() && v["message"].is_string());
            assert!(
                f.writer_rx.try_recv().is_err(),
                "a refused request reached the writer"
            );
        }
        Outcome::Deferred => {
            let sent = f
                .writer_rx
                .try_recv()
                .expect("a deferred request reached the writer");
            assert!(
                f.writer_rx.try_recv().is_err(),
                "more than one writer request"
            );
            let v: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            match sent {
                WriteRequest::Approve {
                    proposal_id,
                    signatures,
                    reply,
                } => {
                    assert!(path == "/approve");
                    assert!(is_hash_hex(&proposal_id), "{proposal_id:?}");
                    assert_eq!(v["proposal_id"].as_str(), Some(proposal_id.as_str()));
                    same_signatures(&v, &signatures);
                    drop(reply);
                }
                WriteRequest::Commit { proposal_id, reply } => {
                    assert!(path == "/commit");
                    assert!(is_hash_hex(&proposal_id));
                    assert_eq!(v["proposal_id"].as_str(), Some(proposal_id.as_str()));
                    drop(reply);
                }
                WriteRequest::Submit {
                    bytes,
                    signatures,
                    reply,
                } => {
                    assert!(path == "/submit");
                    assert_eq!(v["payloadType"].as_str(), Some(dsse::PAYLOAD_TYPE));
                    let payload = v["payload"].as_str().and_then(dsse::unb64);
                    assert_eq!(payload.as_deref(), Some(bytes.as_slice()));
                    same_signatures(&v, &signatures);
                    drop(reply);
                }
                WriteRequest::GetProposal { id, reply } => {
                    assert!(path.starts_with("/proposals/"));
                    assert!(is_hash_hex(&id));
                    drop(reply);
                }
                _ => panic!("unexpected writer request for {path}"),
            }
            // A dropped Reply answers 503, so no client is left hanging.
            let r = answers.try_recv().expect("a dropped replier answers");
            assert_eq!(r.status, 503);
        }
        Outcome::Stream { .. } => panic!("{path} asked for a stream"),
    }
}
