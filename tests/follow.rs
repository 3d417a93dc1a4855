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
use std::io::{BufRead, BufReader, Read, Write};
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
}
