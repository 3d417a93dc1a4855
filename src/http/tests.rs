//! End-to-end tests of the server: real sockets, real threads, the handler in
//! `tests/harness.rs`. Each test starts its own server on an ephemeral 127.0.0.1 port.

mod harness;

use super::client::{self, Target};
use super::{Limits, Listener, Response, Server};
use harness::{error_code, limits, start, wait_until, Client, TestHandler, WAIT};
use std::io::{self, BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let (server, handler) = start(limits());
    let mut c = Client::connect(&server);
    let r = c.get("/hello?a=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello a=1");
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.header("content-length"), Some("9"));
    let generated = r.header("x-corr-id").unwrap().to_string();
    assert_eq!(generated.len(), 16);
    c.send(b"GET /hello?b=2 HTTP/1.1\r\nHost: t\r\nX-Corr-Id: my-id-42\r\n\r\n");
    let r = c.read();
    assert_eq!(r.body, b"hello b=2");
    assert_eq!(r.header("x-corr-id"), Some("my-id-42"));
    assert_eq!(server.open_connections(), 1);
    wait_until("two observations", || {
        handler.observed.load(Ordering::SeqCst) == 2
    });
    wait_until("in-flight to drop", || server.inflight() == 0);
    assert!(server.shutdown(Instant::now() + WAIT));
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    c.send(
        b"GET /defer?ms=150 HTTP/1.1\r\nHost: t\r\n\r\nGET /hello?n=2 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthreeHEAD /hello?n=4 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /inline HTTP/1.1\r\nHost: t\r\n\r\n",
    );
    assert_eq!(c.read().body, b"deferred");
    assert_eq!(c.read().body, b"hello n=2");
    assert_eq!(c.read().body, b"three");
    let head = c.read_head_only();
    assert_eq!(head.header("content-length"), Some("9"));
    let r = c.read();
    assert_eq!((r.status, &r.body[..]), (201, &b"inline"[..]));
}

#[test]
fn deferred_reply_from_another_thread_and_dropped_replier() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    let r = c.get("/defer?ms=100");
    assert_eq!((r.status, &r.body[..]), (200, &b"deferred"[..]));
    let r = c.get("/drop");
    assert_eq!((r.status, error_code(&r)), (503, "unavailable".into()));
    let r = c.get("/panic");
    assert_eq!((r.status, error_code(&r)), (503, "unavailable".into()));
    // The connection is still fine.
    assert_eq!(c.get("/hello").status, 200);
    wait_until("in-flight to drop", || server.inflight() == 0);
}

#[test]
fn huge_header_is_431_and_closed() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    let mut raw = b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 64 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    c.send(&raw);
    let r = c.read();
    assert_eq!(
        (r.status, error_code(&r)),
        (431, "headers_too_large".into())
    );
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
    // Too many header lines.
    let mut c = Client::connect(&server);
    let mut raw = b"GET /hello HTTP/1.1\r\nHost: t\r\n".to_vec();
    for i in 0..40 {
        raw.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    c.send(&raw);
    assert_eq!(c.read().status, 431);
}

#[test]
fn declared_body_over_cap_is_413_before_the_body() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    c.send(
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n",
    );
    let r = c.read();
    assert_eq!((r.status, error_code(&r)), (413, "too_large".into()));
    assert!(c.closed_within(WAIT));
}

#[test]
fn chunked_body_over_cap_is_413() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n");
    c.send(&[b'x'; 0x200]);
    c.send(b"\r\n300\r\n");
    let r = c.read();
    assert_eq!((r.status, error_code(&r)), (413, "too_large".into()));
    assert!(c.closed_within(WAIT));
}

#[test]
fn chunked_body_and_expect_continue() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nTrailer: 1\r\n\r\n");
    assert_eq!(c.read().body, b"abcde");

    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    let mut line = String::new();
    c.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "HTTP/1.1 100 Continue\r\n");
    line.clear();
    c.reader.read_line(&mut line).unwrap();
    assert_eq!(line, "\r\n");
    c.send(b"hello");
    assert_eq!(c.read().body, b"hello");
}

#[test]
fn malformed_and_http10() {
    let (server, _h) = start(limits());
    let mut c = Client::connect(&server);
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n");
    let r = c.read();
    assert_eq!((r.status, error_code(&r)), (400, "bad_request".into()));
    assert!(c.closed_within(WAIT));

    let mut c = Client::connect(&server);
    c.send(b"GET /hello HTTP/1.0\r\n\r\n");
    let r = c.read();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));

    let mut c = Client::connect(&server);
    c.send(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(c.read().header("connection"), Some("keep-alive"));
    c.send(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read().header("connection"), Some("close"));
    assert!(c.closed_within(WAIT));
}

#[test]
fn slowloris_is_cut_off_by_the_head_deadline() {
    let (server, _h) = start(Limits {
        head_timeout: Duration::from_secs(1),
        ..limits()
    });
    let mut c = Client::connect(&server);
    let started = Instant::now();
    // One byte, then one more every 250 ms: activity must not extend the deadline.
    let mut writer = c.stream.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        for b in b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaa".iter() {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}"
    );
    assert!(
        rest.starts_with(b"HTTP/1.1 408 "),
        "{:?}",
        String::from_utf8_lossy(&rest)
    );
    let _ = dripper.join();
    wait_until("the connection to close", || server.open_connections() == 0);
}

#[test]
fn idle_keep_alive_connections_are_closed() {
    let (server, _h) = start(Limits {
        idle_timeout: Duration::from_millis(500),
        ..limits()
    });
    let mut c = Client::connect(&server);
    assert_eq!(c.get("/hello").status, 200);
    let started = Instant::now();
    assert!(c.closed_within(Duration::from_secs(3)));
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A connection that never sends anything too.
    let mut c = Client::connect(&server);
    assert!(c.closed_within(Duration::from_secs(3)));
    wait_until("no connection open", || server.open_connections() == 0);
}

#[test]
fn stray_crlf_between_requests_keeps_the_connection_idle() {
    let (server, _h) = start(Limits {
        head_timeout: Duration::from_millis(300),
        ..limits()
    });
    let mut c = Client::connect(&server);
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nok\r\n");
    assert_eq!(c.read().body, b"ok");
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(c.get("/hello").status, 200);
}

#[test]
fn max_inflight_answers_429_with_retry_after() {
    let (server, handler) = start(Limits {
        max_inflight: 1,
        ..limits()
    });
    let mut a = Client::connect(&server);
    a.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    handler.wait_dispatched("/hold");
    assert_eq!(server.inflight(), 1);
    let mut b = Client::connect(&server);
    let r = b.get("/hello");
    assert_eq!((r.status, error_code(&r)), (429, "busy".into()));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(handler.busy.load(Ordering::SeqCst), 1);
    let replier = handler.held.lock().pop().unwrap();
    replier.send(Response::new(200, b"held".to_vec()));
    assert_eq!(a.read().body, b"held");
    wait_until("in-flight to drop", || server.inflight() == 0);
    assert_eq!(b.get("/hello").status, 200);
}

#[test]
fn stream_outcome_hands_the_socket_over() {
    let (server, handler) = start(limits());
    let mut c = Client::connect(&server);
    c.send(b"GET /stream HTTP/1.1\r\nHost: t\r\nX-Corr-Id: s1\r\n\r\n");
    let mut s = handler.streams.1.recv_timeout(WAIT).unwrap();
    assert_eq!(s.corr_id, "s1");
    let head = String::from_utf8(s.pending.clone()).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream\r\n"));
    assert!(head.contains("Connection: close\r\n"));
    assert!(head.contains("X-Corr-Id: s1\r\n"));
    assert!(!head.contains("Content-Length"));
    wait_until("the hand-off to be uncounted", || {
        server.open_connections() == 0
    });
    let mut out = std::mem::take(&mut s.pending);
    out.extend_from_slice(b"data: hi\n\n");
    let mut written = 0;
    while written < out.len() {
        match s.socket.write(&out[written..]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(s);
    let r = c.read(); // no Content-Length: the body runs to EOF
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"data: hi\n\n");
    // The server is unaffected.
    assert_eq!(Client::connect(&server).get("/hello").status, 200);
}

#[test]
fn shutdown_drains_a_deferred_request() {
    let (server, handler) = start(limits());
    let mut a = Client::connect(&server);
    a.send(b"GET /defer?ms=300 HTTP/1.1\r\nHost: t\r\n\r\n");
    handler.wait_dispatched("/defer");
    let mut idle = Client::connect(&server);
    wait_until("both connections open", || server.open_connections() == 2);
    let addr = server.local_addr();
    assert!(server.shutdown(Instant::now() + WAIT), "drained in time");
    let r = a.read();
    assert_eq!((r.status, &r.body[..]), (200, &b"deferred"[..]));
    assert_eq!(r.header("connection"), Some("close"));
    assert!(a.closed_within(WAIT));
    assert!(idle.closed_within(WAIT));
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}

#[test]
fn shutdown_past_the_deadline_force_closes() {
    let (server, handler) = start(limits());
    let mut a = Client::connect(&server);
    a.send(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    handler.wait_dispatched("/hold");
    assert!(!server.shutdown(Instant::now() + Duration::from_millis(300)));
    assert!(a.closed_within(WAIT));
    // A late answer for a dead worker goes nowhere.
    handler
        .held
        .lock()
        .pop()
        .unwrap()
        .send(Response::new(200, Vec::new()));
}

#[test]
fn max_connections_closes_new_connections_at_accept() {
    let (server, _h) = start(Limits {
        max_connections: 2,
        ..limits()
    });
    let mut a = Client::connect(&server);
    let mut b = Client::connect(&server);
    assert_eq!(a.get("/hello").status, 200);
    assert_eq!(b.get("/hello").status, 200);
    let mut c = Client::connect(&server);
    assert!(c.closed_within(WAIT));
    drop(a);
    wait_until("a slot to free", || server.open_connections() == 1);
    assert_eq!(Client::connect(&server).get("/hello").status, 200);
}

#[test]
fn write_timeout_closes_a_client_that_does_not_read() {
    let (server, handler) = start(Limits {
        write_timeout: Duration::from_millis(300),
        ..limits()
    });
    let mut c = Client::connect(&server);
    c.send(b"GET /big?mb=64 HTTP/1.1\r\nHost: t\r\n\r\n");
    // The connection must be counted first, or the wait below would pass before the server
    // even accepted it. It stays counted while the response is stuck in its write phase.
    handler.wait_dispatched("/big");
    wait_until("the connection to be counted", || {
        server.open_connections() == 1
    });
    wait_until("the stalled connection to close", || {
        server.open_connections() == 0
    });
}

#[test]
fn many_idle_connections_then_shutdown() {
    let (server, _h) = start(limits());
    let clients: Vec<Client> = (0..200).map(|_| Client::connect(&server)).collect();
    wait_until("all accepted", || server.open_connections() == 200);
    let started = Instant::now();
    assert!(server.shutdown(Instant::now() + WAIT));
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(clients);
}

#[test]
fn client_over_tcp_and_unix() {
    let (server, _h) = start(limits());
    let target = Target::parse(&format!("http://{}", server.local_addr())).unwrap();
    let r = client::request(
        &target,
        "POST",
        "/echo",
        &[("X-Corr-Id", "c1")],
        Some(b"{}"),
        WAIT,
    )
    .unwrap();
    assert_eq!((r.status, &r.body[..]), (200, &b"{}"[..]));
    assert_eq!(r.header("X-Corr-Id"), Some("c1"));
    let r = client::request(&target, "HEAD", "/hello", &[], None, WAIT).unwrap();
    assert!(r.body.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    std::fs::write(&path, b"").unwrap();
    assert!(
        Listener::bind_unix(&path).is_err(),
        "a regular file is not replaced"
    );
    std::fs::remove_file(&path).unwrap();
    drop(Listener::bind_unix(&path).unwrap()); // leaves a stale socket file behind
    let listener = Listener::bind_unix(&path).unwrap();
    assert_eq!(listener.local_addr(), path.display().to_string());
    let handler = TestHandler::new();
    let unix = Server::start("unix", listener, limits(), handler.clone()).unwrap();
    let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
    let r = client::request(&target, "GET", "/hello?u", &[], None, WAIT).unwrap();
    assert_eq!(r.body, b"hello u");

    // A stream over the Unix socket, read with the client.
    let t = target.clone();
    let reader = std::thread::spawn(move || {
        let (head, mut body) = client::open_stream(&t, "/stream", &[], WAIT).unwrap();
        let mut line = String::new();
        body.read_line(&mut line).unwrap();
        (head, line)
    });
    let mut s = handler.streams.1.recv_timeout(WAIT).unwrap();
    let mut out = std::mem::take(&mut s.pending);
    out.extend_from_slice(b"event: commit\n");
    s.socket.write_all(&out).unwrap();
    let (head, line) = reader.join().unwrap();
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    assert_eq!(line, "event: commit\n");
    drop(s);

    assert!(unix.shutdown(Instant::now() + WAIT));
    assert!(!path.exists(), "the socket file is removed at shutdown");
}
