//! Issue 17, "Client-facing defects": the registry as clients nobody here wrote see it: Python
//! `requests` / `httpx` / `sseclient-py`, headless Chromium on another origin, raw RFC 9112
//! request lines, and `ronctl tail` across a restart. Each test is named after the defect it
//! pins down and runs against the real binary.
//!
//! Python clients live in a venv under this test binary's `CARGO_TARGET_TMPDIR`
//! (`pip install requests httpx sseclient-py` once); where that cannot be done, or `chromium` is
//! missing, the part is skipped with a visible [`skip_notice`] line.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A python interpreter with `requests`, `httpx` and `sseclient` importable, or why not.
fn python() -> Result<PathBuf, String> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-clients");
        let py = venv.join("bin/python");
        let ready = |py: &Path| {
            Command::new(py)
                .args(["-c", "import requests, httpx, sseclient"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if ready(&py) {
            return Ok(py);
        }
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .output()
            .map_err(|e| format!("python3 -m venv: {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "python3 -m venv failed: {}",
                String::from_utf8_lossy(&made.stderr).trim()
            ));
        }
        let pip = Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "requests", "httpx", "sseclient-py"])
            .output()
            .map_err(|e| format!("pip: {e}"))?;
        if !pip.status.success() || !ready(&py) {
            return Err(format!(
                "pip install requests httpx sseclient-py failed: {}",
                String::from_utf8_lossy(&pip.stderr).trim()
            ));
        }
        Ok(py)
    })
    .clone()
}

/// Run a python script with `args`; its stdout on success.
fn run_python(py: &Path, script: &str, args: &[&str]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send raw bytes on a fresh connection and read until the server closes (or 10 s).
fn raw(s: &TestServer, bytes: &[u8]) -> String {
    let mut t = TcpStream::connect(&s.registry).unwrap();
    t.set_read_timeout(Some(TIMEOUT)).unwrap();
    t.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = t.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}

fn commit_hosts(s: &TestServer, ids: &[&str]) {
    let ops: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| put("node", id, serde_json::json!({"addr": "10.0.0.1"})))
        .collect();
    let base = s.head()["version"].as_u64().unwrap();
    s.commit_ops(base, serde_json::Value::Array(ops));
}

#[test]
fn percent_encoded_ids_and_cursors_are_decoded_once_and_paging_terminates() {
    let s = TestServer::start(Setup::default());
    commit_hosts(&s, &["hx:host-21", "hx:host-22", "hx:host-23"]);

    // Path segments are decoded (`:` as %3A, and even a needlessly encoded letter).
    let r = s.get("/registry/descriptors/node/hx%3Ahost-22");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["id"], "hx:host-22");
    assert_eq!(
        s.get("/registry/descriptors/node/hx%3ahost%2D22").status,
        200
    );
    // Decoded once: %253A is the id "hx%3Ahost-22", not a valid id.
    assert_eq!(
        s.get("/registry/descriptors/node/hx%253Ahost-22").status,
        400
    );
    // Invalid encodings, non-UTF-8, and an encoded slash inside a segment are 400.
    for bad in [
        "/registry/descriptors/node/hx%3",
        "/registry/descriptors/node/hx%zz",
        "/registry/descriptors/node/hx%FF",
        "/registry/descriptors/node/hx%2Fhost-22",
        "/registry/descriptors?after=a%2",
    ] {
        assert_eq!(s.get(bad).status, 400, "{bad}");
    }
    // `%2F` is never a separator: `node%2Fhx:host-22` is one segment, and no route has it.
    assert_eq!(s.get("/registry/descriptors/node%2Fhx:host-22").status, 404);
    // Repeated query keys are refused, not first-wins.
    let r = s.get("/registry/descriptors?limit=1&limit=2");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("more than once"), "{}", r.text());

    // A cursor encoded as clients encode it pages on (with a kind: the id; without: kind/id).
    let page = json(&s.get("/registry/descriptors?kind=node&limit=1&after=hx%3Ahost-21"));
    assert_eq!(page["descriptors"][0]["id"], "hx:host-22");
    let page = json(&s.get("/registry/descriptors?limit=1&after=node%2Fhx%3Ahost-22"));
    assert_eq!(page["descriptors"][0]["id"], "hx:host-23");

    // And through real clients, with their own encoding, paging terminates.
    let py = match python() {
        Ok(py) => py,
        Err(why) => return skip_notice("percent-encoding through requests/httpx", &why),
    };
    let script = r#"
import sys, requests, httpx
base = sys.argv[1]
for name, get in (("requests", requests.get), ("httpx", httpx.get)):
    for kind in ("node", None):
        seen, after = [], None
        for _ in range(10):
            params = {"limit": 1}
            if kind: params["kind"] = kind
            if after is not None: params["after"] = after
            page = get(base + "/registry/descriptors", params=params, timeout=10).json()
            seen += [d["id"] for d in page["descriptors"]]
            after = page["next"]
            if after is None: break
        else:
            sys.exit(f"{name} kind={kind}: paging did not terminate: {seen}")
        print(name, kind, ",".join(seen))
    r = get(base + "/registry/descriptors/node/" + "hx:host-22".replace(":", "%3A"), timeout=10)
    print(name, "get", r.status_code, r.json()["id"])
"#;
    let out = run_python(&py, script, &[&format!("http://{}", s.registry)]);
    let all = "hx:host-21,hx:host-22,hx:host-23";
    for line in [
        format!("requests node {all}"),
        format!("requests None {all}"),
        format!("httpx node {all}"),
        format!("httpx None {all}"),
        "requests get 200 hx:host-22".to_string(),
        "httpx get 200 hx:host-22".to_string(),
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} not in:\n{out}");
    }
}

#[test]
fn http_request_lines_and_hosts_follow_rfc_9112() {
    let s = TestServer::start(Setup::default());
    commit_hosts(&s, &["n1"]);
    // Host: none or two → 400; exactly one → served.
    let r = raw(
        &s,
        b"GET /registry/head HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 400, "{r}");
    let r = raw(
        &s,
        b"GET /registry/head HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 400, "{r}");
    // HTTP/1.2 is served as 1.1; HTTP/2.0 on an HTTP/1 connection is 505.
    let r = raw(
        &s,
        b"GET /registry/head HTTP/1.2\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let r = raw(&s, b"GET /registry/head HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(status_of(&r), 505, "{r}");
    // A target over the head cap is 414 (URI Too Long), not 431.
    let long = format!(
        "GET /registry/descriptors?after={} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(20_000)
    );
    let r = raw(&s, long.as_bytes());
    assert_eq!(status_of(&r), 414, "{}", &r[..r.len().min(200)]);
    // Versions are canonical: `+1` and `01` are not aliases of 1.
    assert_eq!(s.get("/registry/1").status, 200);
    for alias in ["/registry/+1", "/registry/01", "/registry/%2B1"] {
        let r = s.get(alias);
        assert_eq!(r.status, 400, "{alias}: {}", r.text());
    }
    // OPTIONS: `*` and every known route answer 204 with Allow; unknown paths stay 404.
    let r = raw(
        &s,
        b"OPTIONS * HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status_of(&r), 204, "{r}");
    assert!(r.contains("Allow: GET, HEAD, POST, OPTIONS\r\n"), "{r}");
    let r = s.request("OPTIONS", "/registry/head", &[], None);
    assert_eq!(
        (r.status, r.header("allow")),
        (204, Some("GET, HEAD, OPTIONS"))
    );
    let r = s.request("OPTIONS", "/commit", &[], None);
    assert_eq!((r.status, r.header("allow")), (204, Some("POST, OPTIONS")));
    assert_eq!(s.request("OPTIONS", "/nope", &[], None).status, 404);
    let r = svc_registry::http::client::request(
        &s.metrics_target(),
        "OPTIONS",
        "/readyz",
        &[],
        None,
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(
        (r.status, r.header("allow")),
        (204, Some("GET, HEAD, OPTIONS"))
    );
}

/// Read one chunk of a chunked body: (size, data); panics on bad framing.
fn read_chunk(r: &mut impl BufRead) -> (usize, String) {
    let mut line = String::new();
    r.read_line(&mut line).expect("a chunk-size line");
    let size = usize::from_str_radix(line.trim_end(), 16)
        .unwrap_or_else(|_| panic!("bad chunk size line {line:?}"));
    let mut data = vec![0u8; size + 2];
    r.read_exact(&mut data).expect("the chunk");
    assert_eq!(&data[size..], b"\r\n", "chunk not followed by CRLF");
    data.truncate(size);
    (size, String::from_utf8(data).unwrap())
}

fn read_head(r: &mut impl BufRead) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("a head line");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            return head;
        }
    }
}

#[test]
fn the_stream_is_chunked_for_http11_ends_with_the_zero_chunk_and_head_takes_no_slot() {
    // Two slots: the HTTP/1.0 and the HTTP/1.1 stream below; a HEAD holding one would show.
    let setup = Setup {
        tables: "[sse]\nmax_subscribers = 2\n".into(),
        ..Setup::default()
    };
    let s = TestServer::start(setup);
    // HEAD: the stream's head, no body, no subscriber slot, and the connection stays usable.
    let mut t = TcpStream::connect(&s.registry).unwrap();
    t.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut r = BufReader::new(t.try_clone().unwrap());
    for _ in 0..3 {
        t.write_all(b"HEAD /registry/stream HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let head = read_head(&mut r);
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(
            head.contains("Content-Type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("Content-Length"), "{head}");
    }
    t.write_all(b"GET /registry/head HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let head = read_head(&mut r);
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "HEAD left no body behind: {head}"
    );

    // HTTP/1.0: close-delimited, bare events.
    let mut t10 = TcpStream::connect(&s.registry).unwrap();
    t10.set_read_timeout(Some(TIMEOUT)).unwrap();
    t10.write_all(b"GET /registry/stream HTTP/1.0\r\n\r\n")
        .unwrap();
    let mut r10 = BufReader::new(t10);
    let head = read_head(&mut r10);
    assert!(!head.contains("Transfer-Encoding"), "{head}");
    let mut line = String::new();
    r10.read_line(&mut line).unwrap();
    assert_eq!(line, "retry: 1000\n");

    // HTTP/1.1: chunked, one chunk per batch, each commit as soon as it lands.
    let mut t = TcpStream::connect(&s.registry).unwrap();
    t.set_read_timeout(Some(TIMEOUT)).unwrap();
    t.write_all(b"GET /registry/stream HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(t);
    let head = read_head(&mut r);
    assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
    let (_, opening) = read_chunk(&mut r);
    assert!(opening.starts_with("retry: 1000\n\n"), "{opening:?}");
    // The fan-out wrote the opening chunk, so the subscriber is in its table: live from HEAD.
    assert!(opening.contains("event: heartbeat\n"), "{opening:?}");
    commit_hosts(&s, &["c1"]);
    let commit = loop {
        let (_, chunk) = read_chunk(&mut r);
        if chunk.contains("event: commit") {
            break chunk;
        }
    };
    assert!(commit.starts_with("event: commit\nid: 1\n"), "{commit:?}");
    assert!(commit.ends_with("\n\n"), "{commit:?}");

    // Shutdown: the final event, then the zero chunk (a proper end, not a cut).
    s.signal(libc::SIGTERM);
    let mut saw_shutdown = false;
    loop {
        let (size, chunk) = read_chunk(&mut r);
        if size == 0 {
            break;
        }
        saw_shutdown |= chunk.contains("event: shutdown\n");
    }
    assert!(saw_shutdown);
    // `read_chunk` took the zero chunk's empty trailer line; then the connection closes.
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn a_last_event_id_that_is_not_a_number_starts_from_head_with_a_reset() {
    let s = TestServer::start(Setup::default());
    commit_hosts(&s, &["r1"]);
    for headers in [
        &[("Last-Event-ID", "not-a-number")][..],
        &[("Last-Event-ID", "-3")][..],
    ] {
        let (head, mut reader) = svc_registry::http::client::open_stream(
            &s.target(),
            "/registry/stream",
            headers,
            TIMEOUT,
        )
        .unwrap();
        assert_eq!(head.status, 200, "{headers:?}");
        let mut text = String::new();
        while !text.contains("event: heartbeat") {
            let mut line = String::new();
            assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended");
            text.push_str(&line);
        }
        assert!(text.contains("event: reset\nid: 1\n"), "{text}");
    }
    // `?since=` garbage too (it used to be a 400, fatal to an EventSource).
    let (head, _) = svc_registry::http::client::open_stream(
        &s.target(),
        "/registry/stream?since=abc",
        &[],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(head.status, 200);
}

/// Start a python SSE reader (`mode`: requests | sseclient) on the stream; it prints `open` and
/// the transfer coding once the head is in, `heartbeat` for the first heartbeat (the
/// subscriber is then live) and `commit ID` per commit event, each flushed at once.
fn python_reader(py: &Path, mode: &str, base: &str) -> (Child, std::sync::mpsc::Receiver<String>) {
    let script = r#"
import sys, requests
mode, base = sys.argv[1], sys.argv[2]
r = requests.get(base + "/registry/stream", stream=True, timeout=30)
print("open", r.headers.get("Transfer-Encoding"), flush=True)
if mode == "requests":
    event, beat = None, False
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            event = line[6:].strip()
            if event == "heartbeat" and not beat:
                beat = True
                print("heartbeat", flush=True)
        elif line.startswith("id:") and event == "commit":
            print("commit", line[3:].strip(), flush=True)
else:
    import sseclient
    beat = False
    for e in sseclient.SSEClient(r).events():
        if e.event == "heartbeat" and not beat:
            beat = True
            print("heartbeat", flush=True)
        if e.event == "commit":
            print("commit", e.id, flush=True)
"#;
    let mut child = Command::new(py)
        .arg("-u")
        .arg("-c")
        .arg(script)
        .args([mode, base])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

#[test]
fn requests_iter_lines_and_sseclient_see_a_commit_within_two_seconds() {
    let py = match python() {
        Ok(py) => py,
        Err(why) => return skip_notice("SSE through requests/sseclient-py", &why),
    };
    let s = TestServer::start(Setup::default());
    let base = format!("http://{}", s.registry);
    let mut readers: Vec<_> = ["requests", "sseclient"]
        .iter()
        .map(|mode| {
            let (child, rx) = python_reader(&py, mode, &base);
            let open = rx
                .recv_timeout(TIMEOUT)
                .expect("the reader opened the stream");
            assert_eq!(open, "open chunked", "{mode}");
            // The opening heartbeat reaches the client at once (it used to wait for 512 bytes).
            let beat = rx.recv_timeout(Duration::from_secs(2));
            assert_eq!(beat.as_deref(), Ok("heartbeat"), "{mode}");
            (mode, child, rx)
        })
        .collect();
    commit_hosts(&s, &["p1"]);
    let committed = Instant::now();
    for (mode, _, rx) in &readers {
        let left = Duration::from_secs(2).saturating_sub(committed.elapsed());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("{mode}: no commit event within 2 s of the commit"));
        assert_eq!(line, "commit 1", "{mode}");
    }
    for (_, child, _) in &mut readers {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn admin_bodies_take_whole_number_floats_and_refuse_nul_paths() {
    let setup = Setup {
        tables: "[chaos]\nenabled = true\n".into(),
        ..Setup::default()
    };
    let s = TestServer::start(setup);
    let r = s.admin(
        "POST",
        "/admin/chaos",
        Some(br#"{"fault": "storage-latency", "ms": 25.0, "for_secs": 60.0}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["ms"], 25);
    for bad in [
        &br#"{"fault": "storage-latency", "ms": 25.5}"#[..],
        br#"{"fault": "storage-latency", "ms": -1.0}"#,
        br#"{"fault": "storage-latency", "ms": "25"}"#,
    ] {
        let r = s.admin("POST", "/admin/chaos", Some(bad));
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    let r = s.admin("POST", "/admin/backup", Some(br#"{"to": "/tmp/a\u0000b"}"#));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(json(&r)["error"], "bad_request");
}

/// A TCP proxy whose upstream can be changed and which can refuse connections (dropping them at
/// once) while `closed`: it keeps a client away from a server for exactly as long as a test
/// wants, whatever the client's backoff.
struct Proxy {
    addr: String,
    upstream: Arc<Mutex<String>>,
    closed: Arc<AtomicBool>,
}

impl Proxy {
    fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let upstream = Arc::new(Mutex::new(upstream.to_string()));
        let closed = Arc::new(AtomicBool::new(false));
        let (up, shut) = (upstream.clone(), closed.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if shut.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection end
                }
                let Ok(server) = TcpStream::connect(&*up.lock().unwrap()) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy {
            addr,
            upstream,
            closed,
        }
    }
}

/// What `tail` printed so far.
#[derive(Clone, Default)]
struct Printed(Arc<Mutex<Vec<u8>>>);

impl Write for Printed {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Printed {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn ronctl_tail_that_saw_no_commit_yet_replays_what_landed_while_it_was_away() {
    let s = TestServer::start(Setup::default());
    let proxy = Proxy::start(&s.registry);
    let printed = Printed::default();
    let target = Target::parse(&format!("http://{}", proxy.addr)).unwrap();
    let mut out = printed.clone();
    let tail = std::thread::spawn(move || {
        let opts = svc_registry::tail::TailOptions {
            from: None,
            json: false,
            heartbeats: true,
            limit: Some(1),
            timeout: Duration::from_secs(30),
        };
        svc_registry::tail::tail(&target, &opts, &mut out)
    });
    // The tail is on the stream (its opening heartbeat is printed) and has seen no commit.
    eventually(TIMEOUT, "the tail's opening heartbeat", || {
        printed.text().contains("heartbeat")
    });
    // The server restarts (new port) while the proxy keeps the tail away; a commit lands.
    proxy.closed.store(true, Ordering::SeqCst);
    let s = s.restart_killed();
    *proxy.upstream.lock().unwrap() = s.registry.clone();
    commit_hosts(&s, &["while-away"]);
    proxy.closed.store(false, Ordering::SeqCst);
    // The tail comes back after the version of its opening heartbeat and shows the commit.
    eventually(Duration::from_secs(20), "the tail shows commit 1", || {
        printed.text().contains("commit version=1 ")
    });
    tail.join().unwrap().unwrap();
}

/// A python `http.server` serving `dir` on 127.0.0.1: a second, real HTTP origin for pages.
struct PageServer {
    child: Child,
    origin: String,
}

impl PageServer {
    fn start(dir: &Path) -> PageServer {
        let mut child = Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41235 (http://127.0.0.1:41235/) ..."
        let port = line
            .split(" port ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("http.server said {line:?}"));
        PageServer {
            child,
            origin: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cors_server(origins: &str) -> TestServer {
    let setup = Setup {
        tables: format!("[http]\ncors_allow_origins = [{origins}]\n"),
        ..Setup::default()
    };
    let s = TestServer::start(setup);
    commit_hosts(&s, &["cors-1"]);
    s
}

#[test]
fn cors_preflights_and_headers_open_reads_to_star_and_writes_to_exact_origins_only() {
    let s = cors_server(r#""*", "http://dash.test:8080""#);
    let get = |path: &str, origin: &str| s.request("GET", path, &[("Origin", origin)], None);
    // Reads: any origin, "*".
    let r = get("/registry/head", "http://elsewhere.test");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.header("vary"), Some("Origin"));
    assert!(r
        .header("access-control-expose-headers")
        .unwrap()
        .contains("ETag"));
    // Writes: never "*"; the exact origin is named, on deferred answers too.
    let body = br#"{"proposal_id":"00"}"#;
    for origin in ["http://elsewhere.test", "http://dash.test:8080"] {
        let r = s.request("POST", "/commit", &[("Origin", origin)], Some(body));
        assert_eq!(r.status, 400);
        let want = (origin == "http://dash.test:8080").then_some(origin);
        assert_eq!(r.header("access-control-allow-origin"), want, "{origin}");
        assert_eq!(r.header("vary"), Some("Origin"));
    }
    let payload = br#"{"registry_id":"test-registry","base_version":1,"ops":[]}"#;
    let r = s.request(
        "POST",
        "/propose",
        &[("Origin", "http://dash.test:8080")],
        Some(payload),
    );
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://dash.test:8080"),
        "{}",
        r.text()
    );
    // Preflights.
    let pre = |path: &str, origin: &str, method: &str| {
        s.request(
            "OPTIONS",
            path,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", method),
                ("Access-Control-Request-Headers", "content-type"),
            ],
            None,
        )
    };
    let r = pre("/registry/stream", "http://elsewhere.test", "GET");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, HEAD, OPTIONS")
    );
    assert_eq!(r.header("access-control-max-age"), Some("600"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Last-Event-ID"));
    let r = pre("/commit", "http://elsewhere.test", "POST");
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (204, None)
    );
    let r = pre("/commit", "http://dash.test:8080", "POST");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("http://dash.test:8080")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    // CORS off (the default): no CORS headers at all.
    let plain = TestServer::start(Setup::default());
    let r = plain.request(
        "GET",
        "/registry/head",
        &[("Origin", "http://a.test")],
        None,
    );
    assert_eq!(
        (r.header("access-control-allow-origin"), r.header("vary")),
        (None, None)
    );
    // A bad origin in the config is refused at start.
    let setup = Setup {
        tables: "[http]\ncors_allow_origins = [\"http://a.test/path\"]\n".into(),
        ..Setup::default()
    };
    assert!(TestServer::try_start(setup).is_err());
}

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| have(b))
}

/// Load `page` in headless Chromium and return the text the page left in `<pre id=out>` once
/// it starts with `RESULT ` (the page's own `done()`), or the whole DOM if it never did.
fn browse(browser: &str, page: &str, profile: &Path) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(page)
        .stderr(Stdio::null())
        .output()
        .expect("run chromium");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    match dom.find("RESULT ") {
        Some(i) => dom[i + 7..]
            .split('<')
            .next()
            .unwrap_or("")
            .replace("&quot;", "\""),
        None => dom,
    }
}

#[test]
fn cors_lets_a_browser_page_on_another_origin_read_the_head_and_the_stream() {
    let Some(browser) = chromium() else {
        return skip_notice(
            "CORS in a real browser",
            "neither chromium nor chromium-browser is installed (.ci/run installs it as root)",
        );
    };
    let pages = tempfile::tempdir().unwrap();
    let page_server = PageServer::start(pages.path());
    // One registry lists the page's origin exactly (reads and writes), one says "*" (reads).
    let exact = cors_server(&format!("{:?}", page_server.origin));
    let star = cors_server(r#""*""#);
    for (name, s, want_write) in [("exact", &exact, "400"), ("star", &star, "blocked")] {
        let html = format!(
            r#"<!doctype html><title>cors</title><pre id="out">pending</pre>
<script>
const reg = "http://{reg}";
const results = {{}};
function done() {{
  if (["head", "sse", "write"].every(k => k in results)) {{
    document.getElementById("out").textContent = "RESULT " + JSON.stringify(results);
  }}
}}
fetch(reg + "/registry/head").then(r => r.json())
  .then(j => {{ results.head = String(j.version); done(); }},
        e => {{ results.head = "blocked"; done(); }});
const es = new EventSource(reg + "/registry/stream");
es.addEventListener("heartbeat", e => {{
  results.sse = String(JSON.parse(e.data).version); es.close(); done();
}});
es.onerror = () => {{ if (!("sse" in results)) {{ results.sse = "blocked"; es.close(); done(); }} }};
fetch(reg + "/commit", {{method: "POST", headers: {{"Content-Type": "application/json"}},
                          body: '{{"proposal_id":"00"}}'}})
  .then(r => {{ results.write = String(r.status); done(); }},
        e => {{ results.write = "blocked"; done(); }});
</script>"#,
            reg = s.registry
        );
        std::fs::write(pages.path().join(format!("{name}.html")), html).unwrap();
        let profile = tempfile::tempdir().unwrap();
        let got = browse(
            browser,
            &format!("{}/{name}.html", page_server.origin),
            profile.path(),
        );
        let want = format!(r#"{{"head":"1","sse":"1","write":"{want_write}"}}"#);
        let got_json: serde_json::Value = serde_json::from_str(got.trim())
            .unwrap_or_else(|_| panic!("{name}: the page did not finish: {got}"));
        let want_json: serde_json::Value = serde_json::from_str(&want).unwrap();
        assert_eq!(got_json, want_json, "{name}");
    }
}
