//! Verifying followers end to end (docs/OPERATIONS.md "Followers"), with the real binaries on
//! loopback: authority → follower → follower-of-follower serve identical bytes; kills of the
//! upstream and of the follower lose nothing and duplicate nothing; a tampering proxy between
//! follower and authority (flipped signature, changed payload, dropped, reordered and replayed
//! records, a forged rotation) and a forked upstream are refused while the last verified
//! version stays served; an honest second upstream takes over; a stalled upstream is left
//! within a bounded time; write routes answer 503 naming the upstream.

mod common;
use common::*;
use serde_json::json as j;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use svc_registry::domain::{chain, dsse, sha256_hex};

const WAIT: Duration = Duration::from_secs(30);

/// A follower of `upstreams` (URLs), pinned to `genesis`. `timeout_ms` bounds every upstream
/// request and stream stall.
fn follower_setup(upstreams: &[String], genesis: &str, flags: &[&str]) -> Setup {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    Setup {
        tables: format!(
            "[follow]\nupstreams = [{}]\ngenesis_hash = {genesis:?}\nmax_lag_versions = 16\ntimeout_ms = 1000\n",
            list.join(", ")
        ),
        flags: flags.iter().map(|f| f.to_string()).collect(),
        ..Setup::default()
    }
}

fn follower(upstreams: &[String], genesis: &str, flags: &[&str]) -> TestServer {
    TestServer::start(follower_setup(upstreams, genesis, flags))
}

fn url(s: &TestServer) -> String {
    format!("http://{}", s.registry)
}

fn genesis_hash(s: &TestServer) -> String {
    json(&s.get("/registry/0"))["hash"]
        .as_str()
        .unwrap()
        .to_string()
}

fn head_version(s: &TestServer) -> u64 {
    s.head()["version"].as_u64().unwrap()
}

fn wait_head(s: &TestServer, version: u64) {
    if !poll_until(WAIT, || head_version(s) >= version) {
        panic!(
            "head {} did not reach {version} within {WAIT:?}:\n{}",
            head_version(s),
            s.logs()
        );
    }
}

/// Commit `n` single-put versions on `auth` from its head.
fn commit_n(auth: &TestServer, n: u64, tag: &str) {
    for _ in 0..n {
        let base = head_version(auth);
        auth.commit_ops(
            base,
            j!([put(
                "node",
                &format!("{tag}-{base}"),
                j!({"addr": format!("10.0.0.{}:9000", base % 250)})
            )]),
        );
    }
}

/// Every record 0..=head and the head: the same bytes on both.
fn assert_same_bytes(a: &TestServer, b: &TestServer) {
    let head = head_version(a);
    assert_eq!(head_version(b), head, "heads differ");
    assert_eq!(a.get("/registry/head").body, b.get("/registry/head").body);
    for v in 0..=head {
        let (x, y) = (
            a.get(&format!("/registry/{v}")),
            b.get(&format!("/registry/{v}")),
        );
        assert_eq!((x.status, y.status), (200, 200), "version {v}");
        assert_eq!(x.body, y.body, "version {v} differs");
    }
}

fn readyz(s: &TestServer) -> (u16, serde_json::Value) {
    let r = s.admin("GET", "/readyz", None);
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or_default(),
    )
}

fn reasons(s: &TestServer) -> String {
    readyz(s).1["reasons"].to_string()
}

#[test]
fn a_chain_of_three_serves_identical_bytes_and_refuses_writes() {
    let auth = TestServer::start(Setup::default());
    commit_n(&auth, 5, "pre");
    let genesis = genesis_hash(&auth);
    let f1 = follower(&[url(&auth)], &genesis, &[]);
    let f2 = follower(&[url(&f1)], &genesis, &["--amnesia"]);
    wait_head(&f2, 5);
    assert_same_bytes(&auth, &f1);
    assert_same_bytes(&auth, &f2);
    // Live: the stream path.
    commit_n(&auth, 5, "live");
    wait_head(&f2, 10);
    assert_same_bytes(&auth, &f1);
    assert_same_bytes(&auth, &f2);
    eventually(WAIT, "both followers ready", || {
        readyz(&f1).0 == 200 && readyz(&f2).0 == 200
    });
    assert_eq!(f1.metric("registry_follow_lag_versions"), 0.0);
    assert!(f1.metric("registry_follow_applied_total") >= 10.0);
    assert_eq!(f1.metric("registry_follow_upstream_head_version"), 10.0);
    let (ok, out, err) = f1.ronctl(&["follow", "status"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.starts_with("ready head=10 upstream_head=10 lag_versions=0 applied=10 refused=0"),
        "{out}"
    );
    let (ok, _, err) = auth.ronctl(&["follow", "status"]);
    assert!(!ok && err.contains("not a follower"), "{err}");
    // Every write route answers 503 naming the upstream.
    let payload = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": 10,
        "ops": [put("node", "x", j!({}))]}))
    .unwrap();
    for (path, body) in [
        ("/propose", payload.clone()),
        (
            "/approve",
            br#"{"proposal_id":"00","signatures":[]}"#.to_vec(),
        ),
        ("/commit", br#"{"proposal_id":"00"}"#.to_vec()),
    ] {
        let r = f1.post(path, &body);
        assert_eq!(r.status, 503, "{path}: {}", r.text());
        assert!(r.text().contains(&url(&auth)), "{path}: {}", r.text());
    }
    // The descriptor plane and the signer set are served too.
    assert_eq!(f2.get("/registry/descriptors/node/live-9").status, 200);
    assert_eq!(
        auth.get("/registry/signers").body,
        f2.get("/registry/signers").body
    );
    // SIGTERM drains a follower like an authority: clean exit within the deadline.
    let f2 = f2.stop();
    let f1 = f1.stop();
    assert!(
        f1.wait_log("msg=\"follower stopped\"", Duration::from_secs(5)),
        "{}",
        f1.logs()
    );
    assert!(f2.logs().contains("shutdown_complete=1"));
}

/// What the tampering proxy does to `/registry/log` pages (the record at `.0` and around it).
#[derive(Clone, Copy, Debug)]
enum Tamper {
    /// Nothing wrong: short pages (5 records) served 50 ms late, so a catch-up takes a while.
    Pace,
    /// Flip a bit of the first signature (and recompute the hash, so only the signature is
    /// wrong).
    FlipSig(u64),
    /// Change a payload byte (proposal id and hash recomputed: the signatures no longer match).
    Payload(u64),
    /// Leave the record out.
    Drop(u64),
    /// Swap it with the next one.
    Reorder(u64),
    /// Serve the previous record again in its place.
    Replay(u64),
    /// Change its descriptor count (not covered by the hash; the follower's own apply of the
    /// ops must agree with it).
    Descriptors(u64),
    /// Replace it with a `set_signers` to a key of the attacker's, signed by the old quorum
    /// only (a, b), hashed correctly.
    ForgedRotation(u64),
}

fn rehash(r: &mut serde_json::Value) {
    let sigs: Vec<(String, String)> = r["envelope"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["keyid"].as_str().unwrap().to_string(),
                s["sig"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    r["hash"] = j!(chain::commit_hash(
        "test-registry",
        r["version"].as_u64().unwrap(),
        r["prev_hash"].as_str().unwrap(),
        r["proposal_id"].as_str().unwrap(),
        &sigs
    ));
}

fn tamper_page(body: &[u8], tamper: Tamper) -> Vec<u8> {
    let mut page: serde_json::Value = serde_json::from_slice(body).unwrap();
    let recs = page["records"].as_array_mut().unwrap();
    let at = |t: u64| recs.iter().position(|r| r["version"] == t);
    match tamper {
        Tamper::Pace => {
            let from = recs.first().and_then(|r| r["version"].as_u64());
            recs.truncate(5);
            let next = from
                .map(|f| f + 5)
                .filter(|&n| n <= page["head"].as_u64().unwrap());
            page["next"] = j!(next);
        }
        Tamper::FlipSig(t) => {
            if let Some(i) = at(t) {
                let r = &mut recs[i];
                let sig = r["envelope"]["signatures"][0]["sig"].as_str().unwrap();
                let mut bytes = dsse::decode_sig(sig).unwrap();
                bytes[7] ^= 1;
                r["envelope"]["signatures"][0]["sig"] = j!(dsse::encode_sig(&bytes));
                rehash(r);
            }
        }
        Tamper::Payload(t) => {
            if let Some(i) = at(t) {
                let r = &mut recs[i];
                let payload = dsse::unb64(r["envelope"]["payload"].as_str().unwrap()).unwrap();
                let text = String::from_utf8(payload)
                    .unwrap()
                    .replace("10.0.0.", "10.0.9.");
                r["envelope"]["payload"] = j!(dsse::b64(text.as_bytes()));
                r["proposal_id"] = j!(sha256_hex(text.as_bytes()));
                rehash(r);
            }
        }
        Tamper::Descriptors(t) => {
            if let Some(i) = at(t) {
                let n = recs[i]["descriptors"].as_u64().unwrap();
                recs[i]["descriptors"] = j!(n + 1);
            }
        }
        Tamper::Drop(t) => {
            if let Some(i) = at(t) {
                recs.remove(i);
            }
        }
        Tamper::Reorder(t) => {
            if let Some(i) = at(t).filter(|&i| i + 1 < recs.len()) {
                recs.swap(i, i + 1);
            }
        }
        Tamper::Replay(t) => {
            if let Some(i) = at(t).filter(|&i| i > 0) {
                recs[i] = recs[i - 1].clone();
            }
        }
        Tamper::ForgedRotation(t) => {
            if let Some(i) = at(t) {
                let evil = Signer::new("evil", 66);
                let payload = serde_json::to_vec(&j!({"registry_id": "test-registry",
                    "base_version": t - 1,
                    "ops": [{"op": "set_signers", "threshold": 1,
                        "keys": [{"keyid": "evil", "alg": "ed25519", "public_key": evil.public_hex()}]}]}))
                .unwrap();
                let old = [Signer::new("a", 1), Signer::new("b", 2)];
                let r = &mut recs[i];
                r["proposal_id"] = j!(sha256_hex(&payload));
                r["envelope"]["payload"] = j!(dsse::b64(&payload));
                r["envelope"]["signatures"] = j!(old
                    .iter()
                    .map(|s| j!({"keyid": s.keyid, "sig": s.sign(&payload)}))
                    .collect::<Vec<_>>());
                rehash(r);
            }
        }
    }
    serde_json::to_vec(&page).unwrap()
}

/// A proxy to `upstream` (host:port) that rewrites `/registry/log` pages as `tamper` says and
/// passes everything else (the stream included) through. Returns its URL.
fn proxy(upstream: String, tamper: Tamper) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let upstream = upstream.clone();
            std::thread::spawn(move || proxy_one(conn, &upstream, tamper));
        }
    });
    format!("http://{addr}")
}

fn proxy_one(mut client: TcpStream, upstream: &str, tamper: Tamper) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
            return;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
    if path.starts_with("/registry/log") {
        let target = Target::Tcp(upstream.to_string());
        let Ok(r) = svc_registry::http::client::request(&target, "GET", &path, &[], None, TIMEOUT)
        else {
            return;
        };
        if let Tamper::Pace = tamper {
            std::thread::sleep(Duration::from_millis(50));
        }
        let body = if r.status == 200 {
            tamper_page(&r.body, tamper)
        } else {
            r.body
        };
        let _ = write!(
            client,
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            r.status,
            body.len()
        );
        let _ = client.write_all(&body);
        return;
    }
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let _ = up.write_all(&head);
    let mut up_read = up.try_clone().unwrap();
    let mut to_client = client.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut up_read, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Both);
    });
    let _ = std::io::copy(&mut reader, &mut up);
    let _ = up.shutdown(std::net::Shutdown::Both);
}

fn authority_with(n: u64) -> TestServer {
    let auth = TestServer::start(Setup::default());
    commit_n(&auth, n, "n");
    auth
}

/// A follower whose only upstream tampers as `tamper` says: it keeps `t - 1`, refuses `t`,
/// and says so.
fn assert_refused(auth: &TestServer, tamper: Tamper, t: u64, why: &str) {
    let genesis = genesis_hash(auth);
    let p = proxy(auth.registry.clone(), tamper);
    let f = follower(std::slice::from_ref(&p), &genesis, &["--amnesia"]);
    let want = format!("verification failed at version {t}");
    if !poll_until(WAIT, || reasons(&f).contains(&want)) {
        panic!(
            "{tamper:?}: no refusal in /readyz: {}\n{}",
            reasons(&f),
            f.logs()
        );
    }
    let (status, body) = readyz(&f);
    assert_eq!(status, 503, "{tamper:?}: {body}");
    assert!(
        body["reasons"].to_string().contains(why),
        "{tamper:?}: {body}"
    );
    assert!(
        body["reasons"].to_string().contains(&p),
        "{tamper:?}: {body}"
    );
    // The last verified version stays served; nothing past it is.
    assert_eq!(head_version(&f), t - 1, "{tamper:?}");
    assert_eq!(f.get(&format!("/registry/{t}")).status, 404, "{tamper:?}");
    for v in 0..t {
        assert_eq!(
            f.get(&format!("/registry/{v}")).body,
            auth.get(&format!("/registry/{v}")).body,
            "{tamper:?}: version {v}"
        );
    }
    assert_eq!(f.metric("registry_follow_verify_failures_total"), 1.0);
    assert!(
        f.wait_log("upstream refused", Duration::from_secs(5)),
        "{}",
        f.logs()
    );
}

#[test]
fn a_tampering_upstream_is_refused_at_the_tampered_version() {
    let auth = authority_with(6);
    assert_refused(&auth, Tamper::FlipSig(4), 4, "does not verify");
    assert_refused(&auth, Tamper::Payload(4), 4, "does not verify");
    assert_refused(&auth, Tamper::Descriptors(4), 4, "descriptors");
    assert_refused(&auth, Tamper::Drop(4), 4, "expected version 4, found 5");
    assert_refused(&auth, Tamper::Reorder(4), 4, "expected version 4, found 5");
    assert_refused(&auth, Tamper::Replay(4), 4, "expected version 4, found 3");
    assert_refused(
        &auth,
        Tamper::ForgedRotation(4),
        4,
        "the new signer set has 0 of 1",
    );
}

#[test]
fn an_honest_second_upstream_takes_over_from_a_refused_one() {
    let auth = authority_with(6);
    let genesis = genesis_hash(&auth);
    let bad = proxy(auth.registry.clone(), Tamper::FlipSig(3));
    let f = follower(&[bad.clone(), url(&auth)], &genesis, &[]);
    wait_head(&f, 6);
    assert_same_bytes(&auth, &f);
    eventually(WAIT, "ready again through the honest upstream", || {
        readyz(&f).0 == 200
    });
    // The refusal stays named while ready.
    let why = reasons(&f);
    assert!(
        why.contains(&bad) && why.contains("verification failed at version 3"),
        "{why}"
    );
    // Live commits keep coming through the honest one.
    commit_n(&auth, 2, "after");
    wait_head(&f, 8);
    assert_same_bytes(&auth, &f);
}

#[test]
fn another_genesis_is_refused_and_the_pinned_one_followed() {
    let auth = authority_with(2);
    let genesis = genesis_hash(&auth);
    let other = TestServer::start(Setup {
        signers: vec![
            Signer::new("d", 4),
            Signer::new("e", 5),
            Signer::new("f", 6),
        ],
        ..Setup::default()
    });
    commit_n(&other, 2, "other");
    assert_ne!(genesis_hash(&other), genesis);
    // Only the impostor: no verified genesis, nothing served, the reason in /readyz.
    let lone = TestServer::start_until(
        follower_setup(&[url(&other)], &genesis, &["--amnesia"]),
        "metrics listener bound",
    );
    eventually(WAIT, "genesis refusal in /readyz", || {
        let (status, body) = readyz(&lone);
        status == 503
            && body["reasons"]
                .to_string()
                .contains("verification failed at version 0")
    });
    // The impostor first, then the real one: the real genesis wins.
    let f = follower(&[url(&other), url(&auth)], &genesis, &[]);
    wait_head(&f, 2);
    assert_same_bytes(&auth, &f);
    assert!(reasons(&f).contains("verification failed at version 0"));
}

#[test]
fn a_fork_at_a_verified_version_is_refused_with_both_hashes_logged() {
    let a = TestServer::start(Setup::default());
    let b = TestServer::start(Setup::default());
    // The same proposals signed by the same keys: identical hashes up to version 3.
    commit_n(&a, 3, "same");
    commit_n(&b, 3, "same");
    assert_eq!(
        json(&a.get("/registry/3"))["hash"],
        json(&b.get("/registry/3"))["hash"]
    );
    commit_n(&a, 2, "a");
    commit_n(&b, 3, "b");
    let genesis = genesis_hash(&a);
    let f = follower(&[url(&a), url(&b)], &genesis, &[]);
    wait_head(&f, 5);
    assert_same_bytes(&a, &f);
    let (hash_a, hash_b) = (
        json(&a.get("/registry/5"))["hash"]
            .as_str()
            .unwrap()
            .to_string(),
        json(&b.get("/registry/5"))["hash"]
            .as_str()
            .unwrap()
            .to_string(),
    );
    drop(a);
    if !poll_until(WAIT, || reasons(&f).contains("fork at version 5")) {
        panic!("no fork reason: {}\n{}", reasons(&f), f.logs());
    }
    let line = f
        .logs()
        .lines()
        .find(|l| l.contains("msg=\"fork"))
        .unwrap_or_default()
        .to_string();
    assert!(line.contains(&hash_a) && line.contains(&hash_b), "{line}");
    assert_eq!(head_version(&f), 5);
    assert_eq!(json(&f.get("/registry/5"))["hash"], j!(hash_a));
    assert_eq!(f.metric("registry_follow_verify_failures_total"), 1.0);
    assert_eq!(f.metric("registry_follow_forks_total"), 1.0);
    assert_eq!(f.metric("registry_follower"), 1.0);
}

fn key_json(s: &Signer) -> serde_json::Value {
    j!({"keyid": s.keyid, "alg": "ed25519", "public_key": s.public_hex()})
}

/// propose → approve with `signers` → commit; the commit JSON.
fn commit_signed(s: &TestServer, payload: &[u8], signers: &[&Signer]) -> serde_json::Value {
    let r = s.post("/propose", payload);
    assert_eq!(r.status, 202, "propose: {}", r.text());
    let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let sigs: Vec<serde_json::Value> = signers
        .iter()
        .map(|k| j!({"keyid": k.keyid, "sig": k.sign(payload)}))
        .collect();
    let body = serde_json::to_vec(&j!({"proposal_id": id, "signatures": sigs})).unwrap();
    let r = s.post("/approve", &body);
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let r = s.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
    assert_eq!(r.status, 200, "commit: {}", r.text());
    json(&r)
}

#[test]
fn a_signer_rotation_is_followed_and_commits_by_the_new_set_accepted() {
    let auth = authority_with(2);
    let genesis = genesis_hash(&auth);
    let f = follower(&[url(&auth)], &genesis, &[]);
    wait_head(&f, 2);
    let (a, b) = (Signer::new("a", 1), Signer::new("b", 2));
    let (d, e, g) = (
        Signer::new("d", 4),
        Signer::new("e", 5),
        Signer::new("g", 7),
    );
    let rotation = serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": 2,
        "ops": [{"op": "set_signers", "threshold": 2,
            "keys": [key_json(&d), key_json(&e), key_json(&g)]}]}))
    .unwrap();
    commit_signed(&auth, &rotation, &[&a, &b, &d, &e]);
    for base in 3..6u64 {
        let payload =
            serde_json::to_vec(&j!({"registry_id": "test-registry", "base_version": base,
            "ops": [put("node", &format!("new-{base}"), j!({"v": base}))]}))
            .unwrap();
        commit_signed(&auth, &payload, &[&d, &g]);
    }
    wait_head(&f, 6);
    assert_same_bytes(&auth, &f);
    assert_eq!(
        auth.get("/registry/signers").body,
        f.get("/registry/signers").body
    );
    assert_eq!(f.metric("registry_follow_verify_failures_total"), 0.0);
}

#[test]
fn a_stalled_upstream_is_left_within_a_bounded_time() {
    let auth = authority_with(3);
    let genesis = genesis_hash(&auth);
    // Accepts connections and never answers.
    let stalled = TcpListener::bind("127.0.0.1:0").unwrap();
    let stalled_url = format!("http://{}", stalled.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    {
        let held = held.clone();
        std::thread::spawn(move || {
            for c in stalled.incoming().flatten() {
                held.lock().unwrap().push(c);
            }
        });
    }
    let started = std::time::Instant::now();
    let f = follower(&[stalled_url, url(&auth)], &genesis, &["--amnesia"]);
    wait_head(&f, 3);
    // timeout_ms = 1000: the genesis fetch and the first page each wait one timeout at most.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(f.metric("registry_follow_reconnects_total") >= 1.0);
    assert!(!held.lock().unwrap().is_empty());
    commit_n(&auth, 1, "more");
    wait_head(&f, 4);
}

/// A free loopback port (bound and released), so a restarted server comes back at the same
/// address its followers know.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn kill_of_the_upstream_mid_stream_loses_and_duplicates_nothing() {
    let addr = format!("127.0.0.1:{}", free_port());
    let auth = TestServer::start(Setup {
        env: vec![("REGISTRY_ADDR".into(), addr.clone())],
        ..Setup::default()
    });
    commit_n(&auth, 3, "before");
    let genesis = genesis_hash(&auth);
    let f = follower(&[format!("http://{addr}")], &genesis, &[]);
    wait_head(&f, 3);
    let auth = auth.restart_killed();
    commit_n(&auth, 4, "after");
    wait_head(&f, 7);
    assert_same_bytes(&auth, &f);
    assert!(f.metric("registry_follow_reconnects_total") >= 1.0);
    // No duplicate: the follower's log holds each version once, in order.
    let records = f.records_from(0);
    let versions: Vec<u64> = records.iter().map(|r| r.version).collect();
    assert_eq!(versions, (0..=7).collect::<Vec<u64>>());
}

#[test]
fn kill_of_the_follower_during_catch_up_resumes_from_its_durable_head() {
    let auth = authority_with(60);
    let genesis = genesis_hash(&auth);
    // Short pages served slowly: the catch-up takes about 12 pages x 50 ms.
    let paced = proxy(auth.registry.clone(), Tamper::Pace);
    let f = follower(&[paced], &genesis, &[]);
    let seen = poll(WAIT, || Some(head_version(&f)).filter(|&v| v >= 1)).unwrap();
    let f = f.restart_killed();
    assert!(seen < 60, "killed after the catch-up, not during it");
    // It starts from what it had made durable (at least what it served), not from genesis.
    let line = f
        .logs()
        .lines()
        .find(|l| l.contains("msg=\"following upstream\""))
        .map(str::to_string);
    let from = poll(WAIT, || {
        f.logs()
            .lines()
            .find(|l| l.contains("msg=\"following upstream\""))
            .and_then(|l| l.split("from_version=").nth(1)?.trim().parse::<u64>().ok())
    })
    .unwrap_or_else(|| panic!("{line:?}\n{}", f.logs()));
    assert!(from >= seen, "resumed from {from}, had served {seen}");
    wait_head(&f, 60);
    assert_same_bytes(&auth, &f);
}

#[test]
fn an_idle_upstream_is_not_a_stall() {
    // Heartbeats every 15 s (the default), follower timeout 1 s: silence is probed, not failed.
    let auth = authority_with(1);
    let genesis = genesis_hash(&auth);
    let f = follower(&[url(&auth)], &genesis, &["--amnesia"]);
    wait_head(&f, 1);
    // Three follower timeouts of silence, each answered by a probe page from the authority
    // (the deadline this test is about): counted on the authority, not waited out by a sleep.
    let pages = r#"http_requests_total{code="200",route="/registry/log"}"#;
    let before = auth.metric(pages);
    eventually(WAIT, "three probes of a silent stream", || {
        auth.metric(pages) >= before + 3.0
    });
    assert_eq!(
        f.metric("registry_follow_reconnects_total"),
        0.0,
        "{}",
        f.logs()
    );
    assert_eq!(readyz(&f).0, 200, "{}", reasons(&f));
    commit_n(&auth, 1, "late");
    wait_head(&f, 2);
}
