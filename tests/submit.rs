//! `POST /submit` through the real binary (docs/API.md "One-request writes"): a DSSE envelope is
//! proposed, approved and committed in one request; every refusal answers what the first failing
//! step of the three-step flow would, and leaves nothing pending and HEAD unchanged; a SIGKILL
//! during a burst of submits loses no acknowledged write; `ronctl registry submit`.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svc_registry::domain::dsse;

fn proposal(s: &TestServer, base: u64, ops: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&j!({"registry_id": s.setup.registry_id, "base_version": base, "ops": ops}))
        .unwrap()
}

/// The envelope of `payload` signed by `signers` (keyid, signature).
fn envelope(payload: &[u8], sigs: &[(&str, String)]) -> Vec<u8> {
    let sigs: Vec<_> = sigs
        .iter()
        .map(|(k, sig)| j!({"keyid": k, "sig": sig}))
        .collect();
    serde_json::to_vec(&j!({
        "payloadType": dsse::PAYLOAD_TYPE,
        "payload": dsse::b64(payload),
        "signatures": sigs,
    }))
    .unwrap()
}

/// `payload` signed by the server's first `n` signers.
fn signed_by(s: &TestServer, payload: &[u8], n: usize) -> Vec<u8> {
    let sigs: Vec<(&str, String)> = s.setup.signers[..n]
        .iter()
        .map(|k| (k.keyid.as_str(), k.sign(payload)))
        .collect();
    envelope(payload, &sigs)
}

/// Everything a reader can see of the registry, and what is pending.
#[derive(Debug, PartialEq)]
struct Observed {
    head: serde_json::Value,
    descriptors: serde_json::Value,
    pending: f64,
}

fn observe(s: &TestServer) -> Observed {
    Observed {
        head: s.head(),
        descriptors: json(&s.get("/registry/descriptors?limit=1000")),
        pending: s.metric("registry_pending_proposals"),
    }
}

/// Submit `body` and expect the refusal `(status, code)`, with the message containing `says`;
/// then nothing changed: HEAD, the descriptors, what is pending, and (when the payload
/// decodes) what `GET /proposals/{id}` says of it — a 404 stays a 404.
fn refused(s: &TestServer, body: &[u8], status: u16, code: &str, says: &str) {
    let env: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let id = env
        .as_ref()
        .and_then(|e| e["payload"].as_str())
        .and_then(dsse::unb64)
        .map(|payload| svc_registry::domain::sha256_hex(&payload));
    let view = |s: &TestServer| {
        id.as_ref().map(|id| {
            let r = s.get(&format!("/proposals/{id}"));
            (r.status, r.text())
        })
    };
    let (before, view_before) = (observe(s), view(s));
    let r = s.post("/submit", body);
    assert_eq!(r.status, status, "{}", r.text());
    let e = json(&r);
    assert_eq!(e["error"], code, "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains(says), "{message:?} lacks {says:?}");
    assert_eq!(observe(s), before, "a refused submit changed something");
    assert_eq!(
        view(s),
        view_before,
        "a refused submit left its proposal behind"
    );
}

#[test]
fn a_submit_commits_in_one_request_and_its_record_verifies() {
    let s = TestServer::start(Setup::default());
    let payload = proposal(
        &s,
        0,
        j!([put("node", "node-7", j!({"addr": "10.0.0.7:9000"}))]),
    );
    let id = svc_registry::domain::sha256_hex(&payload);
    let r = s.post("/submit", &signed_by(&s, &payload, 2));
    assert_eq!(r.status, 200, "{}", r.text());
    let c = json(&r);
    assert_eq!(c["version"], 1);
    assert_eq!(c["proposal_id"], id);
    let head = s.head();
    assert_eq!(head["version"], 1);
    assert_eq!(head["hash"], c["hash"]);
    let d = json(&s.get("/registry/descriptors/node/node-7"));
    assert_eq!(d["body"], j!({"addr": "10.0.0.7:9000"}));
    // The record carries the envelope: the exact payload and both signatures, stored form.
    let rec = json(&s.get("/registry/1"));
    assert_eq!(rec["proposal_id"], id);
    assert_eq!(rec["envelope"]["payload"], dsse::b64(&payload));
    let keyids: Vec<&str> = rec["envelope"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["keyid"].as_str().unwrap())
        .collect();
    assert_eq!(keyids, ["a", "b"]);
    let view = json(&s.get(&format!("/proposals/{id}")));
    assert_eq!(view["state"], "committed");
    assert_eq!(view["version"], 1);
    assert_eq!(s.metric("registry_pending_proposals"), 0.0);
    s.assert_holds_acked(&BTreeMap::from([(
        1,
        c["hash"].as_str().unwrap().to_string(),
    )]));
    // The same envelope again: already committed, and the answer names the version.
    refused(
        &s,
        &signed_by(&s, &payload, 2),
        409,
        "conflict",
        "already committed at version 1",
    );
}

#[test]
fn every_refusal_answers_the_first_failing_step_and_leaves_nothing_behind() {
    let mut setup = Setup::default();
    setup.tables = "[proposals]\nmax_ops = 2\n".into();
    let s = TestServer::start(setup);
    s.commit_ops(0, j!([put("node", "n1", j!({}))]));
    let ok = |id: &str| proposal(&s, 1, j!([put("node", id, j!({"x": 1}))]));
    let (a, b, c) = (
        &s.setup.signers[0],
        &s.setup.signers[1],
        &s.setup.signers[2],
    );

    // Propose step: the proposal itself.
    let wrong_registry = serde_json::to_vec(
        &j!({"registry_id": "other", "base_version": 1, "ops": [put("node", "x", j!({}))]}),
    )
    .unwrap();
    refused(
        &s,
        &signed_by(&s, &wrong_registry, 2),
        400,
        "bad_request",
        "registry_id",
    );
    let too_many = proposal(
        &s,
        1,
        j!([
            put("node", "x1", j!({})),
            put("node", "x2", j!({})),
            put("node", "x3", j!({}))
        ]),
    );
    refused(&s, &signed_by(&s, &too_many, 2), 413, "too_large", "");
    let stale = proposal(&s, 0, j!([put("node", "x", j!({}))]));
    refused(
        &s,
        &signed_by(&s, &stale, 2),
        409,
        "conflict",
        "behind HEAD 1",
    );
    // Approve step: keys and signatures.
    let p = ok("x");
    refused(
        &s,
        &envelope(&p, &[]),
        400,
        "bad_request",
        "signatures is empty",
    );
    refused(
        &s,
        &envelope(&p, &[("a", a.sign(&p)), ("zz", b.sign(&p))]),
        403,
        "forbidden",
        "\"zz\"",
    );
    let other = ok("y");
    refused(
        &s,
        &envelope(&p, &[("a", a.sign(&p)), ("b", b.sign(&other))]),
        403,
        "forbidden",
        "does not verify",
    );
    // b's key under a's keyid: the keyid selects the configured key, the signature is b's.
    refused(
        &s,
        &envelope(&p, &[("a", b.sign(&p)), ("c", c.sign(&p))]),
        403,
        "forbidden",
        "does not verify",
    );
    // Commit step: quorum by distinct key (a twice is one key), CAS, apply.
    refused(&s, &signed_by(&s, &p, 1), 412, "quorum_not_met", "");
    refused(
        &s,
        &envelope(&p, &[("a", a.sign(&p)), ("a", a.sign(&p))]),
        412,
        "quorum_not_met",
        "",
    );
    let ahead = proposal(&s, 5, j!([put("node", "x", j!({}))]));
    refused(&s, &signed_by(&s, &ahead, 2), 409, "conflict", "not HEAD");
    let absent = proposal(&s, 1, j!([{"op": "delete", "kind": "node", "id": "ghost"}]));
    refused(&s, &signed_by(&s, &absent, 2), 409, "conflict", "");
    // The envelope itself.
    let mut env: serde_json::Value = serde_json::from_slice(&signed_by(&s, &p, 2)).unwrap();
    env["extra"] = j!(1);
    refused(
        &s,
        &serde_json::to_vec(&env).unwrap(),
        400,
        "bad_request",
        "unknown field",
    );
    let mut env: serde_json::Value = serde_json::from_slice(&signed_by(&s, &p, 2)).unwrap();
    env["payloadType"] = j!("application/json");
    refused(
        &s,
        &serde_json::to_vec(&env).unwrap(),
        400,
        "bad_request",
        "payloadType",
    );
    env["payloadType"] = j!(dsse::PAYLOAD_TYPE);
    env["payload"] = j!("%%%");
    refused(
        &s,
        &serde_json::to_vec(&env).unwrap(),
        400,
        "bad_request",
        "base64",
    );
    refused(&s, b"{", 400, "bad_request", "bad envelope");
    // GET is not a submit.
    let r = s.get("/submit");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("POST"));

    // After all that, the same proposal commits at version 2: nothing was left in its way.
    let r = s.post("/submit", &signed_by(&s, &p, 2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["version"], 2);
}

#[test]
fn a_submit_commits_a_proposal_pending_through_the_three_step_flow() {
    let s = TestServer::start(Setup::default());
    let payload = proposal(&s, 0, j!([put("service", "api", j!({"port": 80}))]));
    let r = s.post("/propose", &payload);
    assert_eq!(r.status, 202);
    let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    assert_eq!(s.metric("registry_pending_proposals"), 1.0);
    // A refused submit of it leaves the pending proposal as it was.
    let r = s.post("/submit", &signed_by(&s, &payload, 1));
    assert_eq!(r.status, 412);
    assert_eq!(
        json(&s.get(&format!("/proposals/{id}")))["state"],
        "pending"
    );
    let r = s.post("/submit", &signed_by(&s, &payload, 2));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        json(&s.get(&format!("/proposals/{id}")))["state"],
        "committed"
    );
    assert_eq!(s.metric("registry_pending_proposals"), 0.0);
    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
    assert_eq!(r.status, 409, "{}", r.text());
}

#[test]
fn a_set_signers_submit_needs_both_quorums() {
    let s = TestServer::start(Setup::default());
    let d = Signer::new("d", 4);
    let (a, b, c) = (
        &s.setup.signers[0],
        &s.setup.signers[1],
        &s.setup.signers[2],
    );
    // The new set keeps a and b and adds d, threshold 2.
    let keys: Vec<_> = [a, b, &d]
        .iter()
        .map(|k| j!({"keyid": k.keyid, "alg": "ed25519", "public_key": k.public_hex()}))
        .collect();
    let payload = proposal(
        &s,
        0,
        j!([{"op": "set_signers", "threshold": 2, "keys": keys}]),
    );
    // a and c: the old quorum (2 of a, b, c) but only one key of the new set.
    refused(
        &s,
        &envelope(
            &payload,
            &[("a", a.sign(&payload)), ("c", c.sign(&payload))],
        ),
        412,
        "quorum_not_met",
        "",
    );
    // c and d: one key of each set.
    refused(
        &s,
        &envelope(
            &payload,
            &[("c", c.sign(&payload)), ("d", d.sign(&payload))],
        ),
        412,
        "quorum_not_met",
        "",
    );
    // a and d: a counts in both sets, d only in the new one — the old set is short.
    refused(
        &s,
        &envelope(
            &payload,
            &[("a", a.sign(&payload)), ("d", d.sign(&payload))],
        ),
        412,
        "quorum_not_met",
        "",
    );
    // a, c and d: both quorums.
    let r = s.post(
        "/submit",
        &envelope(
            &payload,
            &[
                ("a", a.sign(&payload)),
                ("c", c.sign(&payload)),
                ("d", d.sign(&payload)),
            ],
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = json(&s.get("/registry/signers"));
    assert_eq!(set["since_version"], 1);
    let keyids: Vec<&str> = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["keyid"].as_str().unwrap())
        .collect();
    assert!(keyids.contains(&"d") && !keyids.contains(&"c"), "{set}");
    // The new set judges the next submit: c is no longer a signer.
    let next = proposal(&s, 1, j!([put("node", "n", j!({}))]));
    refused(
        &s,
        &envelope(&next, &[("b", b.sign(&next)), ("c", c.sign(&next))]),
        403,
        "forbidden",
        "\"c\"",
    );
    let r = s.post(
        "/submit",
        &envelope(&next, &[("b", b.sign(&next)), ("d", d.sign(&next))]),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Submit in a loop until `stop`, each on the HEAD it just read; record every acknowledged
/// (version → hash).
fn submitter(
    s: Arc<TestServer>,
    worker: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeMap<u64, String>>>,
) {
    let post = |path: &str, body: Option<&[u8]>| {
        svc_registry::http::client::request(
            &s.target(),
            if body.is_some() { "POST" } else { "GET" },
            path,
            &[],
            body,
            Duration::from_secs(5),
        )
    };
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let Ok(h) = post("/registry/head", None) else {
            return;
        };
        let Ok(head) = serde_json::from_slice::<serde_json::Value>(&h.body) else {
            return;
        };
        let base = head["version"].as_u64().unwrap_or(0);
        let payload = proposal(
            &s,
            base,
            j!([put("node", &format!("w{worker}-{i}"), j!({"i": i}))]),
        );
        let Ok(r) = post("/submit", Some(&signed_by(&s, &payload, 2))) else {
            return;
        };
        if r.status == 200 {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            acked.lock().unwrap().insert(
                v["version"].as_u64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            );
        }
    }
}

#[test]
fn sigkill_during_a_burst_of_submits_loses_no_acknowledged_write() {
    let mut setup = Setup::default();
    setup.tables = "[storage]\nsegment_bytes = 262144\ncheckpoint_every_commits = 25\n".into();
    setup.top = "max_body_bytes = 65536\n".into();
    let mut s = Arc::new(TestServer::start(setup));
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    for round in 0..4u64 {
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (s, stop, acked) = (s.clone(), stop.clone(), acked.clone());
                std::thread::spawn(move || submitter(s, w, stop, acked))
            })
            .collect();
        // Kill once this round has acknowledged some submits, so the kill lands mid-burst.
        let before = acked.lock().unwrap().len();
        eventually(Duration::from_secs(30), "submits acknowledged", || {
            acked.lock().unwrap().len() >= before + 10 + round as usize * 7
        });
        s.signal(libc::SIGKILL);
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            w.join().unwrap();
        }
        let server = Arc::try_unwrap(s).ok().expect("workers are done");
        s = Arc::new(server.restart_killed());
        let head = s.assert_holds_acked(&acked.lock().unwrap());
        // Nothing a submit did is pending after the restart: it never writes a pending frame.
        assert_eq!(s.metric("registry_pending_proposals"), 0.0);
        eprintln!(
            "round {round}: head {head}, {} submits acknowledged",
            acked.lock().unwrap().len()
        );
    }
}

#[test]
fn ronctl_submits_an_envelope_or_signs_a_proposal_file_locally() {
    let s = TestServer::start(Setup::default());
    let dir = tempfile::tempdir().unwrap();
    // Key files as `ronctl keygen` writes them.
    let key_file = |signer: &Signer| {
        let path = dir.path().join(format!("{}.key", signer.keyid));
        let kf = j!({
            "keyid": signer.keyid,
            "secret_key": hex::encode(signer.key.to_bytes()),
            "public_key": signer.public_hex(),
        });
        std::fs::write(&path, kf.to_string()).unwrap();
        path.display().to_string()
    };
    let (ka, kb) = (key_file(&s.setup.signers[0]), key_file(&s.setup.signers[1]));
    let file = dir.path().join("p.json");
    std::fs::write(&file, proposal(&s, 0, j!([put("region", "eu", j!({}))]))).unwrap();
    let file = file.display().to_string();
    // Without a terminal and without --yes nothing is signed or sent.
    let (ok, _, err) = s.ronctl(&["registry", "submit", "--file", &file, "--signer", &ka]);
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(s.head()["version"], 0);
    let (ok, out, err) = s.ronctl(&[
        "--output", "json", "registry", "submit", "--file", &file, "--signer", &ka, "--signer",
        &kb, "--yes",
    ]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(s.head()["hash"], v["hash"]);

    let payload = proposal(&s, 1, j!([put("region", "us", j!({}))]));
    let env = dir.path().join("env.json");
    std::fs::write(&env, signed_by(&s, &payload, 2)).unwrap();
    let env = env.display().to_string();
    let (ok, out, err) = s.ronctl(&["registry", "submit", "--envelope", &env]);
    assert!(ok, "{err}");
    assert!(out.starts_with("version 2 hash "), "{out}");
    // Again: 409, and the message says which version has it.
    let (ok, _, err) = s.ronctl(&["registry", "submit", "--envelope", &env]);
    assert!(
        !ok && err.contains("already committed at version 2"),
        "{err}"
    );
}

/// A lone one-signature submit finds the writer and the pool idle and is verified on the
/// writer (docs/ARCHITECTURE.md invariant 6): a bad signature is still refused 403 with nothing
/// left behind, a good one commits, and both verifications are timed like the pool's.
#[test]
fn a_lone_one_signature_submit_is_verified_and_timed_like_any_other() {
    let s = TestServer::start(Setup {
        threshold: 1,
        ..Setup::default()
    });
    let verified = r#"approval_verify_seconds_count{alg="ed25519"}"#;
    let before = s.metric(verified);
    let p = proposal(&s, 0, j!([put("node", "lone", j!({"n": 1}))]));
    let a = &s.setup.signers[0];
    refused(
        &s,
        &envelope(&p, &[("a", a.sign(b"other bytes"))]),
        403,
        "forbidden",
        "does not verify",
    );
    let r = s.post("/submit", &signed_by(&s, &p, 1));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["version"], 1);
    let record = json(&s.get("/registry/1"));
    assert_eq!(record["envelope"]["signatures"][0]["keyid"], "a");
    assert_eq!(
        s.metric(verified),
        before + 2.0,
        "each verification is timed"
    );
}

/// The writer syncs the log itself when the group-commit pipeline is idle
/// (docs/ARCHITECTURE.md "Commit protocol"): a lone client's every submit takes that path
/// (`registry_fsync_inline_total` counts them), and a burst of concurrent submits is still group
/// committed by the fsync thread (more than one write per sync on average).
#[test]
fn a_lone_client_is_synced_inline_and_a_burst_is_still_group_committed() {
    let mut setup = Setup {
        threshold: 1,
        ..Setup::default()
    };
    // A submit that overtakes its predecessor (another client's) waits for it.
    setup.tables = "[proposals]\ncommit_wait_ms = 5000\n".into();
    let s = Arc::new(TestServer::start(setup));
    let inline = "registry_fsync_inline_total";
    let (syncs, writes) = ("fsync_batch_size_count", "fsync_batch_size_sum");

    let before = (s.metric(inline), s.metric(syncs));
    const LONE: u64 = 5;
    for v in 0..LONE {
        let p = proposal(&s, v, j!([put("node", &format!("lone-{v}"), j!({"v": v}))]));
        let r = s.post("/submit", &signed_by(&s, &p, 1));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        (s.metric(inline) - before.0, s.metric(syncs) - before.1),
        (LONE as f64, LONE as f64),
        "one sync per lone submit, each run by the writer"
    );

    // A burst: every client takes the next version and submits it at once, so the writer
    // always has work queued and syncs are in flight.
    const BURST: u64 = 96;
    const CLIENTS: usize = 12;
    let before = (s.metric(inline), s.metric(syncs), s.metric(writes));
    let next = Arc::new(std::sync::atomic::AtomicU64::new(LONE));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (s, next) = (s.clone(), next.clone());
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                loop {
                    let base = next.fetch_add(1, Ordering::Relaxed);
                    if base >= LONE + BURST {
                        return statuses;
                    }
                    let p = proposal(&s, base, j!([put("node", &format!("b-{base}"), j!({}))]));
                    let body = signed_by(&s, &p, 1);
                    // A full queue answers 429: the same envelope again, within a deadline.
                    let status =
                        eventually_some(Duration::from_secs(30), "a submit past 429 busy", || {
                            Some(s.post("/submit", &body).status).filter(|&st| st != 429)
                        });
                    statuses.push(status);
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert_eq!(statuses.len() as u64, BURST);
    assert!(statuses.iter().all(|&st| st == 200), "{statuses:?}");
    assert_eq!(s.head()["version"], LONE + BURST);
    let synced = s.metric(syncs) - before.1;
    let written = s.metric(writes) - before.2;
    let inline_syncs = s.metric(inline) - before.0;
    eprintln!("burst: {written} writes in {synced} syncs, {inline_syncs} of them inline");
    assert_eq!(written, BURST as f64, "a submit appends one record");
    assert!(
        written / synced > 1.0,
        "{written} writes in {synced} syncs ({inline_syncs} inline): no group commit"
    );
    assert!(
        synced > inline_syncs,
        "the fsync thread took no part in the burst ({synced} syncs, all inline)"
    );
}
