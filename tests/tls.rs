//! TLS on the real binary: certificates made here with rcgen (a CA, a server certificate for
//! 127.0.0.1 and localhost, an expired one, one for another host, a client certificate), then
//! our client, ronctl, curl and Python `requests` over https; mutual TLS; SSE over TLS; a
//! SIGHUP certificate reload under an open keep-alive connection; the hostile handshakes
//! (slowloris, garbage, plaintext HTTP, a thousand idle sessions); and a follower of an https
//! upstream trusting `[follow] cacert`.

mod common;
mod pki;
use common::*;
use pki::*;
use rcgen::KeyPair;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConnection, StreamOwned};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use svc_registry::http::client::{self, Target};

/// A TLS test server: the standard setup plus `[tls]` (and `extra` tables).
fn start(pki: &Pki, cert: &str, client_ca: bool, extra: &str) -> TestServer {
    TestServer::start(Setup {
        tables: format!("{}{extra}", pki.table(cert, client_ca)),
        ..Setup::default()
    })
}

fn https(addr: &str, config: Arc<rustls::ClientConfig>) -> Target {
    Target::https(addr, config).unwrap()
}

fn get(target: &Target, path: &str) -> std::io::Result<ClientResponse> {
    client::request(target, "GET", path, &[], None, TIMEOUT)
}

fn post(target: &Target, path: &str, body: &[u8]) -> ClientResponse {
    let headers = [("Content-Type", "application/json")];
    client::request(target, "POST", path, &headers, Some(body), TIMEOUT).expect("POST over TLS")
}

/// propose → approve → commit over `target`; returns the new version.
fn commit_over(s: &TestServer, target: &Target, base_version: u64, id: &str) -> u64 {
    let payload = serde_json::to_vec(&serde_json::json!({
        "registry_id": s.setup.registry_id,
        "base_version": base_version,
        "ops": [put("node", id, serde_json::json!({"addr": "10.0.0.1:1"}))],
    }))
    .unwrap();
    let r = post(target, "/propose", &payload);
    assert_eq!(r.status, 202, "propose: {}", r.text());
    let pid = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let r = post(target, "/approve", &s.setup.approve_body(&pid, &payload));
    assert_eq!(r.status, 200, "approve: {}", r.text());
    let r = post(
        target,
        "/commit",
        format!(r#"{{"proposal_id":"{pid}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 200, "commit: {}", r.text());
    json(&r)["version"].as_u64().unwrap()
}

fn ronctl_https(
    s: &TestServer,
    cacert: Option<&Path>,
    host: &str,
    args: &[&str],
) -> (bool, String) {
    let port = |a: &str| a.rsplit(':').next().unwrap().to_string();
    let mut cmd = Command::new(ronctl_bin());
    cmd.args([
        "--url",
        &format!("https://{host}:{}", port(&s.registry)),
        "--admin-url",
        &format!("https://{host}:{}", port(&s.metrics)),
    ])
    .args(args)
    .env_remove("RON_REGISTRY_URL")
    .env_remove("RON_ADMIN_URL")
    .env_remove("RON_CACERT");
    if let Some(ca) = cacert {
        cmd.env("RON_CACERT", ca);
    }
    let out = cmd.output().expect("run ronctl");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn https_serves_both_listeners_to_our_client_ronctl_curl_and_python() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1", "localhost"], (-1, 30), false);
    let s = start(&pki, "server", false, "");
    let registry = https(&s.registry, pki.client(None));
    let metrics = https(&s.metrics, pki.client(None));
    assert_eq!(get(&registry, "/registry/head").unwrap().status, 200);
    assert_eq!(get(&metrics, "/readyz").unwrap().status, 200);
    let version = commit_over(&s, &registry, 0, "n1");
    assert_eq!(version, 1);

    // Plaintext HTTP to the TLS port is not served.
    assert!(client::request(&s.target(), "GET", "/registry/head", &[], None, TIMEOUT).is_err());

    // ronctl with --cacert (as RON_CACERT), by IP and by name.
    let ca = pki.path("ca.pem");
    for host in ["127.0.0.1", "localhost"] {
        let (ok, out) = ronctl_https(&s, Some(&ca), host, &["registry", "head"]);
        assert!(ok, "ronctl over https://{host}: {out}");
        assert!(
            out.contains("\"version\": 1") || out.contains("\"version\":1"),
            "{out}"
        );
    }
    // Without the CA: a clear error naming the cause and the fix.
    let (ok, out) = ronctl_https(&s, None, "127.0.0.1", &["registry", "head"]);
    assert!(!ok);
    assert!(
        out.contains("unknown CA") || out.contains("no system CA"),
        "ronctl without --cacert: {out}"
    );

    if have("curl") {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--cacert"])
            .arg(&ca)
            .arg(format!("https://{}/registry/head", s.registry))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let head: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(head["version"], 1);
        // curl without the CA refuses the certificate.
        let out = Command::new("curl")
            .args(["-sS", "--fail"])
            .arg(format!("https://{}/registry/head", s.registry))
            .output()
            .unwrap();
        assert!(!out.status.success());
    } else {
        skip_notice("curl over https", "curl is not installed");
    }

    let python = "import sys, requests\n\
                  r = requests.get(sys.argv[1], verify=sys.argv[2], timeout=10)\n\
                  print(r.status_code, r.json()['version'])\n";
    let have_requests = Command::new("python3")
        .args(["-c", "import requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have_requests {
        let out = Command::new("python3")
            .args(["-c", python])
            .arg(format!(
                "https://localhost:{}/registry/head",
                s.registry.rsplit(':').next().unwrap()
            ))
            .arg(&ca)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "python: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 1");
    } else {
        skip_notice(
            "python requests over https",
            "python3 with requests is not installed",
        );
    }
}

#[test]
fn mutual_tls_serves_a_client_with_a_certificate_and_refuses_one_without() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1", "localhost"], (-1, 30), false);
    pki.issue("client", &["ops-client"], (-1, 30), true);
    let s = start(&pki, "server", true, "");

    let with = https(&s.registry, pki.client(Some("client")));
    assert_eq!(get(&with, "/registry/head").unwrap().status, 200);
    let without = https(&s.registry, pki.client(None));
    let refused = get(&without, "/registry/head");
    assert!(refused.is_err(), "served without a client certificate");
    // The metrics listener asks for one too.
    assert!(get(&https(&s.metrics, pki.client(None)), "/metrics").is_err());

    if have("curl") {
        let curl = |with_cert: bool| {
            let mut cmd = Command::new("curl");
            cmd.args(["-sS", "--fail", "--cacert"])
                .arg(pki.path("ca.pem"));
            if with_cert {
                cmd.arg("--cert")
                    .arg(pki.path("client.pem"))
                    .arg("--key")
                    .arg(pki.path("client.key"));
            }
            cmd.arg(format!("https://{}/registry/head", s.registry));
            cmd.output().unwrap().status.success()
        };
        assert!(curl(true), "curl with a client certificate");
        assert!(!curl(false), "curl without a client certificate was served");
    } else {
        skip_notice("curl mutual TLS", "curl is not installed");
    }
    // ronctl with --client-cert/--client-key (and RON_CACERT) is served; without, it fails.
    let ca = pki.path("ca.pem");
    let (cert, key) = (pki.path("client.pem"), pki.path("client.key"));
    let identity = [
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let (ok, out) = ronctl_https(
        &s,
        Some(&ca),
        "localhost",
        &[&identity[..], &["registry", "head"]].concat(),
    );
    assert!(ok, "ronctl with a client certificate: {out}");
    let (ok, out) = ronctl_https(&s, Some(&ca), "localhost", &["registry", "head"]);
    assert!(!ok, "ronctl without a client certificate was served: {out}");
    let (ok, out) = ronctl_https(
        &s,
        Some(&ca),
        "localhost",
        &[&identity[..2], &["registry", "head"]].concat(),
    );
    assert!(
        !ok && out.contains("--client-key"),
        "a certificate without its key: {out}"
    );

    // The server is still fine after the refusals.
    assert_eq!(get(&with, "/registry/head").unwrap().status, 200);
}

#[test]
fn sse_stream_over_tls_delivers_a_commit_event() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1"], (-1, 30), false);
    let s = start(&pki, "server", false, "");
    let target = https(&s.registry, pki.client(None));
    let (head, mut reader) =
        client::open_stream(&target, "/registry/stream", &[], TIMEOUT).expect("open the stream");
    assert_eq!(head.status, 200);
    // The stream is attached once its first heartbeat arrives; then commit.
    let mut line = String::new();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        line.clear();
        reader.read_line(&mut line).expect("stream line");
        if line.starts_with("event: heartbeat") || line.starts_with(':') {
            break;
        }
        assert!(Instant::now() < deadline, "no heartbeat on the stream");
    }
    commit_over(&s, &target, 0, "over-tls");
    let mut seen = Vec::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).expect("stream line");
        assert!(n > 0, "stream ended before the commit event: {seen:?}");
        seen.push(line.clone());
        if line.starts_with("event: commit") {
            break;
        }
        assert!(Instant::now() < deadline, "no commit event: {seen:?}");
    }
    line.clear();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "id: 1");

    // `ronctl tail` over https replays the commit and stops at --limit.
    let ca = pki.path("ca.pem");
    let tail = ["tail", "--from", "0", "--limit", "1", "--json"];
    let (ok, out) = ronctl_https(&s, Some(&ca), "127.0.0.1", &tail);
    assert!(ok, "ronctl tail over https: {out}");
    assert!(out.contains("\"version\":1"), "{out}");
    // Without the CA it fails at once with the reason instead of retrying forever.
    let started = Instant::now();
    let (ok, out) = ronctl_https(&s, None, "127.0.0.1", &tail);
    assert!(!ok);
    assert!(
        out.contains("unknown CA") || out.contains("no system CA"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{out}");
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_an_established_connection() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1", "localhost"], (-1, 30), false);
    let s = start(&pki, "server", false, "");
    let config = pki.client(None);
    let mut kept = tls_connect(&s.registry, config.clone());
    assert_eq!(keepalive_get(&mut kept, "/registry/head"), 200);

    let leaf = |stream: &StreamOwned<ClientConnection, TcpStream>| -> CertificateDer<'static> {
        stream.conn.peer_certificates().unwrap()[0]
            .clone()
            .into_owned()
    };
    let first = leaf(&kept);

    // Renew in place (same paths, new certificate) and reload.
    let renewed_path = pki.issue("server", &["127.0.0.1", "localhost"], (-1, 60), false);
    let renewed: CertificateDer<'static> =
        rustls::pki_types::pem::PemObject::from_pem_file(&renewed_path).unwrap();
    let reloads = || s.logs().matches("msg=reloaded").count();
    s.signal(libc::SIGHUP);
    eventually(TIMEOUT, "the reload", || reloads() == 1);
    assert!(s.logs().contains("tls_reloaded=true"), "{}", s.logs());

    // The established session keeps working on its old certificate.
    assert_eq!(keepalive_get(&mut kept, "/registry/head"), 200);
    assert_eq!(leaf(&kept), first);
    // A new connection sees the new one.
    let fresh = tls_connect(&s.registry, config.clone());
    let new_leaf = renewed;
    assert_eq!(leaf(&fresh), new_leaf);
    assert_ne!(first, new_leaf);

    // A certificate for another host: ronctl names the problem.
    pki.issue("server", &["other.example"], (-1, 30), false);
    s.signal(libc::SIGHUP);
    eventually(TIMEOUT, "the second reload", || reloads() == 2);
    let (ok, out) = ronctl_https(
        &s,
        Some(&pki.path("ca.pem")),
        "127.0.0.1",
        &["registry", "head"],
    );
    assert!(!ok);
    assert!(out.contains("not valid for that name"), "wrong host: {out}");

    // An expired certificate: ronctl says so.
    pki.issue("server", &["127.0.0.1", "localhost"], (-30, -1), false);
    s.signal(libc::SIGHUP);
    eventually(TIMEOUT, "the third reload", || reloads() == 3);
    let (ok, out) = ronctl_https(
        &s,
        Some(&pki.path("ca.pem")),
        "127.0.0.1",
        &["registry", "head"],
    );
    assert!(!ok);
    assert!(out.contains("has expired"), "expired: {out}");

    // A key that does not match: the reload is refused and the old certificate stays.
    std::fs::write(
        pki.path("server.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    s.signal(libc::SIGHUP);
    eventually(TIMEOUT, "the refusal", || {
        s.logs()
            .contains("reload refused; keeping the old config and certificate")
    });
    let err = get(&https(&s.registry, config), "/registry/head").unwrap_err();
    assert!(err.to_string().contains("has expired"), "{err}");
    // Through all of it, the first connection stayed up.
    assert_eq!(keepalive_get(&mut kept, "/registry/head"), 200);
}

/// Read until the server closes (EOF or reset); returns when.
fn until_closed(t: &mut TcpStream) -> Instant {
    let mut buf = [0u8; 4096];
    loop {
        match t.read(&mut buf) {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

#[test]
fn hostile_handshakes_are_cut_and_idle_sessions_cost_no_threads() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1"], (-1, 30), false);
    let s = start(
        &pki,
        "server",
        false,
        "[http]\nhead_timeout_ms = 1000\nidle_timeout_secs = 60\n",
    );
    let connect = || {
        let t = TcpStream::connect(&s.registry).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        t
    };

    // Slowloris on the handshake: a ClientHello record header, then one byte every 300 ms.
    let mut slow = connect();
    let started = Instant::now();
    let hello_start = [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut cut = None;
    for &b in hello_start.iter().chain([0u8; 32].iter()) {
        if slow.write_all(&[b]).is_err() {
            cut = Some(Instant::now());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    let closed = cut.unwrap_or_else(|| until_closed(&mut slow)) - started;
    assert!(
        closed >= Duration::from_millis(900) && closed < Duration::from_millis(3000),
        "a stalled handshake was cut after {closed:?} (head_timeout 1 s)"
    );

    // Garbage and plaintext HTTP are closed at once, not at a deadline.
    for bytes in [
        &b"\x00\xff\x13\x37 not TLS at all \x01\x02\x03\r\n\r\n"[..],
        &b"GET /registry/head HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let mut t = connect();
        let sent = Instant::now();
        t.write_all(bytes).unwrap();
        let closed = until_closed(&mut t) - sent;
        assert!(
            closed < Duration::from_millis(900),
            "closed after {closed:?}"
        );
    }

    // A thousand idle TLS sessions (handshake done, one request each) add no thread.
    let config = pki.client(None);
    let threads_before = s.proc_status("Threads");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut c = tls_connect(&s.registry, config.clone());
        assert_eq!(keepalive_get(&mut c, "/registry/head"), 200);
        idle.push(c);
    }
    let threads = s.proc_status("Threads");
    assert!(
        threads <= threads_before + 2,
        "threads {threads_before} -> {threads} with 1000 idle TLS sessions"
    );
    let started = Instant::now();
    assert_eq!(
        get(&https(&s.registry, config), "/registry/head")
            .unwrap()
            .status,
        200
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a new client waited {:?}",
        started.elapsed()
    );
    drop(idle);
}

/// The value of series `series` (e.g. `registry_tls_handshakes_total{listener="registry"}`) in
/// a scrape of the TLS metrics listener.
fn tls_metric(s: &TestServer, config: Arc<rustls::ClientConfig>, series: &str) -> f64 {
    let r = get(&https(&s.metrics, config), "/metrics").expect("scrape /metrics over TLS");
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body);
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no series {series} in the scrape"))
}

#[test]
fn handshake_failures_are_counted_by_listener_and_reason() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1"], (-1, 30), false);
    pki.issue("client", &["ops-client"], (-1, 30), true);
    // Mutual TLS, so that a missing client certificate is one of the failures counted.
    let s = TestServer::start(Setup {
        tables: format!(
            "{}[http]\nhead_timeout_ms = 500\nidle_timeout_secs = 60\n",
            pki.table("server", true)
        ),
        ..Setup::default()
    });
    let with_cert = pki.client(Some("client"));
    let series = |reason: &str| {
        format!(
            "registry_tls_handshake_failures_total{{listener=\"registry\",reason=\"{reason}\"}}"
        )
    };
    let completed = "registry_tls_handshakes_total{listener=\"registry\"}";
    let value = |name: &str| tls_metric(&s, with_cert.clone(), name);
    // Every reason is exported at zero before anything failed.
    for reason in ["timeout", "protocol", "certificate", "eof"] {
        assert_eq!(value(&series(reason)), 0.0, "{reason}");
    }
    // The scrapes above completed handshakes on the metrics listener, not on this one.
    assert_eq!(value(completed), 0.0);
    assert!(value("registry_tls_handshakes_total{listener=\"metrics\"}") >= 1.0);

    let moved = |name: String, by: f64, act: &dyn Fn()| {
        let before = value(&name);
        act();
        let ok = poll_until(TIMEOUT, || value(&name) == before + by);
        assert!(ok, "{name} did not move by {by} from {before}");
    };
    let connect = || {
        let t = TcpStream::connect(&s.registry).unwrap();
        t.set_read_timeout(Some(TIMEOUT)).unwrap();
        t
    };

    // Garbage and plaintext HTTP: protocol.
    moved(series("protocol"), 2.0, &|| {
        for bytes in [
            &b"\x00\xff\x13\x37 not TLS at all \x01\x02\x03\r\n\r\n"[..],
            &b"GET /registry/head HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        ] {
            let mut t = connect();
            t.write_all(bytes).unwrap();
            until_closed(&mut t);
        }
    });
    // A handshake that starts and stalls: timeout, once it is cut at head_timeout_ms.
    moved(series("timeout"), 1.0, &|| {
        let mut t = connect();
        t.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        let sent = Instant::now();
        let closed = until_closed(&mut t) - sent;
        assert!(closed >= Duration::from_millis(450), "cut after {closed:?}");
    });
    // A handshake the client abandons half-way: eof.
    moved(series("eof"), 1.0, &|| {
        let mut t = connect();
        t.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).unwrap();
        t.shutdown(std::net::Shutdown::Write).unwrap();
        until_closed(&mut t);
    });
    // No client certificate, and a client that refuses ours (not valid for the name it asked
    // for): certificate.
    moved(series("certificate"), 2.0, &|| {
        assert!(get(&https(&s.registry, pki.client(None)), "/registry/head").is_err());
        let port = s.registry.rsplit(':').next().unwrap();
        let wrong_name = https(&format!("localhost:{port}"), with_cert.clone());
        assert!(get(&wrong_name, "/registry/head").is_err());
    });
    // A connection that never sends a byte is no handshake: it moves nothing.
    let before: Vec<f64> = ["timeout", "protocol", "certificate", "eof"]
        .iter()
        .map(|r| value(&series(r)))
        .collect();
    drop(connect());
    // A good request afterwards: one more completed handshake. The probe above closed before
    // it; its end of stream is read by a worker at once, so a wrong count shows up below (a
    // scheduling race could only hide it, never fail a correct server).
    moved(completed.to_string(), 1.0, &|| {
        assert_eq!(
            get(&https(&s.registry, with_cert.clone()), "/registry/head")
                .unwrap()
                .status,
            200
        );
    });
    let after: Vec<f64> = ["timeout", "protocol", "certificate", "eof"]
        .iter()
        .map(|r| value(&series(r)))
        .collect();
    assert_eq!(
        before, after,
        "a silent TCP connection counted as a failed handshake"
    );
}

#[test]
fn a_follower_follows_an_https_upstream_checked_against_its_cacert() {
    let pki = Pki::new();
    pki.issue("server", &["127.0.0.1"], (-1, 30), false);
    let s = start(&pki, "server", false, "");
    let target = https(&s.registry, pki.client(None));
    commit_over(&s, &target, 0, "before");
    let genesis =
        serde_json::from_slice::<serde_json::Value>(&get(&target, "/registry/0").unwrap().body)
            .unwrap()["hash"]
            .as_str()
            .unwrap()
            .to_string();
    let follower = |cacert: &str| {
        Setup {
            tables: format!(
                "[follow]\nupstreams = [\"https://{}\"]\ngenesis_hash = {genesis:?}\ntimeout_ms = 1000\n{cacert}",
                s.registry
            ),
            flags: vec!["--amnesia".into()],
            ..Setup::default()
        }
    };
    let f = TestServer::start(follower(&format!(
        "cacert = {:?}\n",
        pki.path("ca.pem").display().to_string()
    )));
    commit_over(&s, &target, 1, "live");
    eventually(TIMEOUT, "the follower reaches version 2 over https", || {
        f.head()["version"] == 2
    });
    assert_eq!(
        f.get("/registry/2").body,
        get(&target, "/registry/2").unwrap().body
    );
    // Without the CA the upstream's certificate is refused: nothing is followed.
    let untrusting = TestServer::start_until(follower(""), "metrics listener bound");
    assert!(
        untrusting.wait_log("genesis fetch failed", TIMEOUT),
        "{}",
        untrusting.logs()
    );
    assert!(!untrusting.logs().contains("genesis verified"));
}
