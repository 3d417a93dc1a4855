//! Hostile clients against the real binary, each with a measured bound (docs/API.md).

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn tight() -> Setup {
    let mut s = Setup::default();
    s.top = "max_body_bytes = 65536\n".into();
    s.tables = "[http]\nhead_timeout_ms = 1000\nbody_timeout_ms = 1000\nwrite_timeout_ms = 1000\nidle_timeout_secs = 30\nmax_header_bytes = 16384\nmax_headers = 32\n".into();
    s
}

fn connect(s: &TestServer) -> TcpStream {
    let t = TcpStream::connect(&s.registry).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    t
}

/// Read until EOF or error; returns the bytes and when the peer closed.
fn read_to_close(t: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match t.read(&mut buf) {
            Ok(0) | Err(_) => return (out, Instant::now()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn slowloris_one_header_byte_per_second_is_cut_off_at_the_head_deadline() {
    let s = TestServer::start(tight());
    let mut t = connect(&s);
    let started = Instant::now();
    let request = b"GET /registry/head HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n\r\n";
    let mut cut_off_after = None;
    for &b in request.iter() {
        if t.write_all(&[b]).is_err() {
            cut_off_after = Some(started.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    let (bytes, closed_at) = read_to_close(&mut t);
    let closed = cut_off_after.unwrap_or(closed_at - started);
    assert!(
        closed < Duration::from_millis(3000),
        "slow client held the connection {closed:?}"
    );
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("200 OK"),
        "a slowloris request must not be served: {text}"
    );
    // The server still answers others.
    assert_eq!(s.get("/registry/head").status, 200);
}

#[test]
fn a_64_kib_header_gets_431_and_memory_does_not_grow() {
    let s = TestServer::start(tight());
    let rss_before = s.proc_status("VmRSS");
    for _ in 0..50 {
        let mut t = connect(&s);
        let mut req = b"GET /registry/head HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.extend(std::iter::repeat_n(b'a', 64 * 1024));
        req.extend_from_slice(b"\r\n\r\n");
        let _ = t.write_all(&req);
        let (bytes, _) = read_to_close(&mut t);
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 431"), "{text}");
        assert!(text.contains("headers_too_large"));
    }
    // Too many header lines, each small.
    let mut t = connect(&s);
    let mut req = b"GET /registry/head HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..100 {
        req.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    t.write_all(&req).unwrap();
    let (bytes, _) = read_to_close(&mut t);
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 431"));
    let rss_after = s.proc_status("VmRSS");
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} kB to {rss_after} kB"
    );
}

#[test]
fn a_body_over_the_cap_gets_413_before_it_is_sent() {
    let s = TestServer::start(tight());
    let mut t = connect(&s);
    // Declare 10 MB and send none of it: the answer must come anyway.
    t.write_all(b"POST /propose HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        .unwrap();
    let (bytes, _) = read_to_close(&mut t);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("too_large"));
    // Chunked: refused while reading, once the cap is crossed.
    let mut t = connect(&s);
    t.write_all(b"POST /propose HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16384, "a".repeat(16384));
    for _ in 0..8 {
        if t.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let (bytes, _) = read_to_close(&mut t);
    assert!(String::from_utf8_lossy(&bytes).starts_with("HTTP/1.1 413"));
}

#[test]
fn a_thousand_idle_keepalive_connections_cost_few_threads_and_little_memory() {
    let s = TestServer::start(tight());
    let threads_before = s.proc_status("Threads");
    let rss_before = s.proc_status("VmRSS");
    let mut idle = Vec::new();
    for _ in 0..1000 {
        let mut t = connect(&s);
        // Each makes one request and keeps the connection open.
        t.write_all(b"GET /registry/head HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = t.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        idle.push(t);
    }
    let threads = s.proc_status("Threads");
    let rss = s.proc_status("VmRSS");
    assert!(
        threads < 256 && threads <= threads_before + 2,
        "threads {threads_before} -> {threads}"
    );
    // Documented bound (docs/PERFORMANCE.md): under 16 MiB of growth for 1,000 idle connections.
    assert!(
        rss < rss_before + 16 * 1024,
        "RSS {rss_before} kB -> {rss} kB"
    );
    let started = Instant::now();
    assert_eq!(s.get("/registry/head").status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a new reader waited {:?}",
        started.elapsed()
    );
    eprintln!("1000 idle connections: threads {threads_before} -> {threads}, RSS {rss_before} kB -> {rss} kB");
    drop(idle);
}

#[test]
fn a_client_that_never_reads_is_cut_off_at_the_write_timeout() {
    let s = TestServer::start(tight());
    let fds_idle = s.fd_count();
    // Make /registry/log pages large: 200 commits.
    for v in 0..200u64 {
        s.commit_ops(
            v,
            serde_json::json!([put(
                "node",
                &format!("n{v}"),
                serde_json::json!({"pad": "x".repeat(200)})
            )]),
        );
    }
    // The setup's connections close behind their answers (a close may linger up to 1 s): wait
    // until the server holds no more descriptors than before them.
    eventually(
        Duration::from_secs(5),
        "the setup's connections closed",
        || s.fd_count() <= fds_idle,
    );
    let fds_before = s.fd_count();
    let mut t = s.connect_small_window();
    // Pipeline many big responses and never read.
    let req = b"GET /registry/log?from=0&limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n";
    for _ in 0..200 {
        if t.write_all(req).is_err() {
            break;
        }
    }
    eventually(TIMEOUT, "the stuck connection is open", || {
        s.fd_count() == fds_before + 1
    });
    // Others are served meanwhile.
    let started = Instant::now();
    assert_eq!(s.get("/registry/head").status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Past the write timeout (1 s, checked every 100 ms) it is gone.
    eventually(
        Duration::from_secs(5),
        "the stuck connection was not closed",
        || s.fd_count() == fds_before,
    );
    drop(t);
}

#[test]
fn garbage_and_malformed_requests_get_400_and_never_crash_the_server() {
    let s = TestServer::start(tight());
    for junk in [
        &b"\x00\x01\x02garbage\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"POST /propose HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /propose HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /propose HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /registry/head HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n",
    ] {
        let mut t = connect(&s);
        let _ = t.write_all(junk);
        let (bytes, _) = read_to_close(&mut t);
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with("HTTP/1.1 400") || text.is_empty(),
            "{:?} -> {text}",
            String::from_utf8_lossy(junk)
        );
    }
    // Issue 17 (RFC 9112 §2.3): a major version other than 1 is 505, no longer a plain 400.
    let mut t = connect(&s);
    let _ = t.write_all(b"GET / HTTP/9.9\r\n\r\n");
    let (bytes, _) = read_to_close(&mut t);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 505"), "{text}");
    assert_eq!(s.get("/registry/head").status, 200);
}

/// Regression (found by the `http_head` fuzz target): a client that sent part of a request and
/// then closed its side was only noticed at the head (or body) deadline — the data and the FIN
/// arrived in one edge-triggered wake-up, the short read cleared `readable`, and no later edge
/// came — so the connection sat in CLOSE_WAIT for `head_timeout_ms` and got a 408 nobody read.
/// It must be closed as soon as the end of stream is seen.
#[test]
fn regression_half_closed_partial_request_is_closed_at_eof_not_at_the_deadline() {
    let mut setup = tight();
    setup.tables = "[http]\nhead_timeout_ms = 10000\nbody_timeout_ms = 10000\n".into();
    let s = TestServer::start(setup);
    for partial in [
        &b"GET /registry/head HTT"[..],
        b"POST /propose HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"registry_id\"",
        b"POST /propose HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
    ] {
        let mut t = connect(&s);
        t.write_all(partial).unwrap();
        t.shutdown(std::net::Shutdown::Write).unwrap();
        let started = Instant::now();
        let (bytes, _) = read_to_close(&mut t);
        let waited = started.elapsed();
        assert!(
            waited < Duration::from_secs(2),
            "{:?}: closed only after {waited:?} ({:?})",
            String::from_utf8_lossy(partial),
            String::from_utf8_lossy(&bytes)
        );
    }
    assert_eq!(s.get("/registry/head").status, 200);
}

/// Regression (found by the `proposal` fuzz target): a put body holding a lone UTF-16 surrogate
/// escape (`"\udc00"`) used to be accepted and, once committed, made every descriptor listing
/// that included it answer 503 (the handler panicked re-reading the body) and showed signers
/// `"proposed": null` in the diff. Now the proposal is refused and the listing keeps working.
#[test]
fn regression_lone_surrogate_body_is_refused_and_listings_keep_working() {
    let s = TestServer::start(tight());
    s.commit_ops(
        0,
        serde_json::json!([put("node", "ok", serde_json::json!({"a": 1}))]),
    );
    let payload = br#"{"registry_id":"test-registry","base_version":1,"ops":[{"op":"put","kind":"node","id":"bad","body":{"k":"\udc00"}}]}"#;
    let r = s.post("/propose", payload);
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.get("/registry/descriptors?kind=node");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(s.get("/registry/descriptors").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Issue 8: pipelined garbage, 10,000 abandoned connections, stream clients that never read —
// each with the server's RSS, thread count and a concurrent reader's latency measured
// throughout (`cargo test --release --test hostile -- --nocapture` prints the figures).

/// Samples the server's RSS and threads and times a concurrent reader (`GET /registry/head` on
/// a fresh connection every 20 ms) until stopped.
struct Probe {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<ProbeReport>>,
}

#[derive(Debug, Default)]
struct ProbeReport {
    rss_max_kb: u64,
    threads_max: u64,
    reads: usize,
    errors: usize,
    latency_p50: Duration,
    latency_p99: Duration,
    latency_max: Duration,
}

impl Probe {
    fn start(s: &TestServer) -> Probe {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (pid, target) = (s.pid(), s.target());
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut r = ProbeReport::default();
            let mut latencies = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                r.rss_max_kb = r.rss_max_kb.max(proc_status_of(pid, "VmRSS"));
                r.threads_max = r.threads_max.max(proc_status_of(pid, "Threads"));
                let started = Instant::now();
                match svc_registry::http::client::request(
                    &target,
                    "GET",
                    "/registry/head",
                    &[],
                    None,
                    Duration::from_secs(5),
                ) {
                    Ok(resp) if resp.status == 200 => latencies.push(started.elapsed()),
                    _ => r.errors += 1,
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            latencies.sort();
            r.reads = latencies.len();
            if !latencies.is_empty() {
                let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
                r.latency_p50 = at(0.5);
                r.latency_p99 = at(0.99);
                r.latency_max = *latencies.last().unwrap();
            }
            r
        });
        Probe {
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> ProbeReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Warm the server up (its first requests allocate the workers' buffers), then measure its
/// baseline: (fds, RSS kB, threads).
fn warmed_baseline(s: &TestServer) -> (usize, u64, u64) {
    for _ in 0..20 {
        assert_eq!(s.get("/registry/head").status, 200);
    }
    (
        s.fd_count(),
        s.proc_status("VmRSS"),
        s.proc_status("Threads"),
    )
}

/// The server process is running (not exited, not a zombie).
fn alive(s: &TestServer) -> bool {
    std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
        .map(|t| {
            !t.lines()
                .any(|l| l.starts_with("State:") && l.contains('Z'))
        })
        .unwrap_or(false)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| w == &needle)
        .count()
}

#[test]
fn pipelined_requests_then_garbage_are_answered_in_order_then_refused() {
    let s = TestServer::start(tight());
    // Three good requests, garbage, a fourth good one, all in one write: three 200s in order,
    // one 400, then the connection closes (the request after the garbage is never read).
    let mut t = connect(&s);
    let get = b"GET /registry/head HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.extend_from_slice(get);
    }
    burst.extend_from_slice(b"\x00\x01\x02 NOT HTTP\r\n\r\n");
    burst.extend_from_slice(get);
    t.write_all(&burst).unwrap();
    let (bytes, _) = read_to_close(&mut t);
    assert_eq!(
        count(&bytes, b"HTTP/1.1 200"),
        3,
        "{}",
        String::from_utf8_lossy(&bytes)
    );
    assert_eq!(count(&bytes, b"HTTP/1.1 400"), 1);
    assert_eq!(count(&bytes, b"HTTP/1.1 "), 4);
    let first_400 = bytes
        .windows(12)
        .position(|w| w == b"HTTP/1.1 400")
        .unwrap();
    let last_200 = bytes
        .windows(12)
        .rposition(|w| w == b"HTTP/1.1 200")
        .unwrap();
    assert!(last_200 < first_400, "answers out of order");

    // A thousand pipelined requests in one write are all answered, in one connection.
    let mut t = connect(&s);
    let mut burst = Vec::new();
    for _ in 0..999 {
        burst.extend_from_slice(get);
    }
    burst.extend_from_slice(b"GET /registry/head HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    t.write_all(&burst).unwrap();
    let (bytes, _) = read_to_close(&mut t);
    assert_eq!(count(&bytes, b"HTTP/1.1 200"), 1000);

    // 64 connections at once, each pipelining good requests with seeded garbage spliced in, while
    // a reader is timed: nothing panics, nothing exits, the reader is served throughout.
    let probe = Probe::start(&s);
    let threads_before = s.proc_status("Threads");
    let workers: Vec<_> = (0..64u64)
        .map(|i| {
            let addr = s.registry.clone();
            std::thread::spawn(move || {
                let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ i;
                let mut next = move || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                for _ in 0..20 {
                    let Ok(mut t) = TcpStream::connect(&addr) else {
                        continue;
                    };
                    let _ = t.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut burst = Vec::new();
                    for _ in 0..(next() % 8) {
                        burst.extend_from_slice(b"GET /registry/head HTTP/1.1\r\nHost: t\r\n\r\n");
                    }
                    let junk: Vec<u8> = (0..next() % 300).map(|_| next() as u8).collect();
                    let at = (next() as usize) % (burst.len() + 1);
                    burst.splice(at..at, junk);
                    let _ = t.write_all(&burst);
                    let _ = t.shutdown(std::net::Shutdown::Write);
                    let _ = read_to_close(&mut t);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let report = probe.stop();
    eprintln!("pipelined garbage (64 clients x 20 connections): {report:?}");
    assert!(alive(&s), "the server exited");
    assert_eq!(report.errors, 0, "the reader failed: {report:?}");
    // A starvation bound, not a performance figure (those are printed above and in
    // docs/RELIABILITY.md): generous, because CI machines are shared.
    assert!(report.latency_max < READER_STARVED, "{report:?}");
    assert!(report.threads_max <= threads_before + 2, "{report:?}");
    assert!(!s.logs().contains("panicked"), "{}", s.logs());
    assert_eq!(s.get("/registry/head").status, 200);
}

/// Raise this process's soft `RLIMIT_NOFILE` towards `want` (children inherit it); returns
/// what it is now.
/// A concurrent reader waiting this long for one answer was starved.
const READER_STARVED: Duration = Duration::from_secs(5);

fn raise_nofile(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

#[test]
fn ten_thousand_connections_opened_and_abandoned_cost_nothing_once_gone() {
    // The test holds every client socket and the server (a child: same limit) every accepted
    // one, each plus a few dozen of its own.
    let wanted = 10_000u64;
    let limit = raise_nofile(wanted + 512);
    let n = if limit >= wanted + 512 {
        wanted
    } else {
        let n = limit.saturating_sub(512).max(100);
        eprintln!("RLIMIT_NOFILE is {limit}: scaling 10,000 connections down to {n}");
        n
    };
    let mut setup = tight();
    // Deadlines far beyond the time it takes to open a wave, even on a loaded machine: the
    // connections must still be open when they are counted (deadlines have their own tests).
    setup.tables = setup
        .tables
        .replace("head_timeout_ms = 1000", "head_timeout_ms = 60000")
        .replace("body_timeout_ms = 1000", "body_timeout_ms = 60000");
    setup.tables.push_str("max_connections = 12000\n");
    let s = TestServer::start(setup);
    let (fds_before, rss_before, threads_before) = warmed_baseline(&s);
    let probe = Probe::start(&s);
    // Three waves: memory must plateau (capacity kept for reuse), never grow wave after wave.
    let mut rss_after_waves = Vec::new();
    for wave in 0..3 {
        let started = Instant::now();
        let mut held = Vec::with_capacity(n as usize);
        for i in 0..n {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.connect(&s.registry.parse::<std::net::SocketAddr>().unwrap().into())
                .unwrap();
            if i % 2 == 0 {
                // Half leave with a reset instead of a FIN (no TIME_WAIT left on this side).
                sock.set_linger(Some(Duration::ZERO)).unwrap();
            }
            let mut t: TcpStream = sock.into();
            match i % 4 {
                0 => {} // silent
                1 => {
                    let _ = t.write_all(b"GET /registry/head HTTP/1.1\r\nHost: x\r\nX-Partial");
                }
                2 => {
                    // A whole request whose answer is never read.
                    let _ = t.write_all(b"GET /registry/head HTTP/1.1\r\nHost: t\r\n\r\n");
                }
                _ => {
                    let _ = t.write_all(
                        b"POST /propose HTTP/1.1\r\nHost: t\r\nContent-Length: 500\r\n\r\n{",
                    );
                }
            }
            held.push(t);
        }
        let opened_in = started.elapsed();
        let open_ok = poll_until(Duration::from_secs(10), || {
            s.fd_count() as u64 >= fds_before as u64 + n * 9 / 10
        });
        let fds_open = s.fd_count();
        let rss_open = s.proc_status("VmRSS");
        let threads_open = s.proc_status("Threads");
        drop(held);
        let closed = poll_until(Duration::from_secs(10), || s.fd_count() <= fds_before + 2);
        let closed_in = started.elapsed() - opened_in;
        let rss_after = rss_after_wave(s.pid(), rss_before, &rss_after_waves);
        rss_after_waves.push(rss_after);
        eprintln!(
            "wave {wave}: {n} connections opened in {opened_in:.1?} and abandoned: server fds \
             {fds_before} -> {fds_open} -> {}, RSS {rss_before} kB -> {rss_open} kB -> \
             {rss_after} kB, threads {threads_before} -> {threads_open}, all closed within \
             {closed_in:.1?}",
            s.fd_count(),
        );
        assert!(
            open_ok,
            "the server held only {fds_open} fds of {n} connections"
        );
        assert!(
            closed,
            "abandoned connections are still open: {} fds",
            s.fd_count()
        );
        assert!(threads_open <= threads_before + 2);
        // Per open connection the server keeps a slot and no buffer: well under 4 KiB each.
        assert!(
            rss_open < rss_before + n * 4,
            "RSS {rss_before} kB -> {rss_open} kB for {n} connections"
        );
    }
    let report = probe.stop();
    eprintln!(
        "10,000-connection waves: reader {} reads, p50 {:.1?} p99 {:.1?} max {:.1?}, {} errors, \
         threads max {}, RSS after each wave {rss_after_waves:?} kB (baseline {rss_before} kB)",
        report.reads,
        report.latency_p50,
        report.latency_p99,
        report.latency_max,
        report.errors,
        report.threads_max
    );
    assert!(alive(&s), "the server exited");
    assert_eq!(report.errors, 0, "the reader failed during the flood");
    // A starvation bound, not a performance figure (those are printed above and in
    // docs/RELIABILITY.md): generous, because CI machines are shared.
    assert!(report.latency_max < READER_STARVED, "{report:?}");
    assert!(report.threads_max <= threads_before + 2, "{report:?}");
    assert_rss_flat_across_waves(rss_before, &rss_after_waves);
    assert_eq!(s.get("/registry/head").status, 200);
}

#[test]
fn stream_clients_that_never_read_are_dropped_and_do_not_slow_commits() {
    let mut setup = tight();
    setup
        .tables
        .push_str("[sse]\nbuffer_events = 16\nheartbeat_secs = 1\n");
    let s = TestServer::start(setup);
    let (fds_before, rss_before, threads_before) = warmed_baseline(&s);
    let subscribers = 200;
    let mut stuck = Vec::new();
    for _ in 0..subscribers {
        let mut t = s.connect_small_window();
        t.write_all(
            b"GET /registry/stream HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
        )
        .unwrap();
        stuck.push(t); // never read
    }
    eventually(
        Duration::from_secs(5),
        "every stuck subscriber registered",
        || s.metric("sse_subscribers") >= subscribers as f64,
    );
    // A well-behaved follower alongside.
    let (head, mut follower) = svc_registry::http::client::open_stream(
        &s.target(),
        "/registry/stream",
        &[],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(head.status, 200);
    let probe = Probe::start(&s);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let commits = 400u64;
    for v in 0..commits {
        let t = Instant::now();
        s.commit_ops(
            v,
            serde_json::json!([put(
                "node",
                &format!("n{}", v % 50),
                serde_json::json!({"v": v})
            )]),
        );
        slowest = slowest.max(t.elapsed());
    }
    let elapsed = started.elapsed();
    // The follower sees every commit, in order, while the stuck ones are cut loose.
    let mut seen = 0u64;
    let mut line = String::new();
    while seen < commits {
        line.clear();
        use std::io::BufRead;
        assert!(
            follower.read_line(&mut line).unwrap() > 0,
            "follower stream ended"
        );
        if let Some(id) = line.trim_end().strip_prefix("id: ") {
            seen = id.parse().unwrap();
        }
    }
    let dropped = poll_until(Duration::from_secs(10), || {
        s.metric("sse_subscribers") <= 1.0 && s.fd_count() <= fds_before + 1 + 2
    });
    let report = probe.stop();
    let rss_after = s.proc_status("VmRSS");
    eprintln!(
        "{subscribers} never-reading stream clients + {commits} commits in {elapsed:.1?} \
         (slowest commit {slowest:.1?}): lagged {} dropped, subscribers left {}, fds {fds_before} \
         -> {}, RSS {rss_before} kB -> peak {} kB -> {rss_after} kB, threads {threads_before} -> \
         {}; reader {} reads p50 {:.1?} p99 {:.1?} max {:.1?}",
        s.metric("bus_lagged_total"),
        s.metric("sse_subscribers"),
        s.fd_count(),
        report.rss_max_kb,
        report.threads_max,
        report.reads,
        report.latency_p50,
        report.latency_p99,
        report.latency_max
    );
    assert!(dropped, "never-reading subscribers were not dropped");
    assert!(s.metric("bus_lagged_total") >= subscribers as f64);
    assert!(
        slowest < Duration::from_secs(1),
        "a commit took {slowest:?}"
    );
    assert_eq!(report.errors, 0);
    // A starvation bound, not a performance figure (those are printed above and in
    // docs/RELIABILITY.md): generous, because CI machines are shared.
    assert!(report.latency_max < READER_STARVED, "{report:?}");
    assert!(report.threads_max <= threads_before + 2, "{report:?}");
    assert!(
        rss_after < rss_before + 16 * 1024,
        "RSS {rss_before} kB -> {rss_after} kB"
    );
    assert!(alive(&s));
    drop(stuck);
}
