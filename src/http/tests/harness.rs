//! What the server tests share: a handler with one route per behaviour under test, a raw TCP
//! client that reads responses with the crate's own client parser, and polling helpers (every
//! wait polls a condition against a deadline; nothing sleeps and then asserts).

use crate::http::client::{self, ClientResponse};
use crate::http::{
    Handler, Limits, Listener, Outcome, Replier, Request, Response, Server, ServerHandle,
    StreamSocket,
};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use std::io::{self, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) const WAIT: Duration = Duration::from_secs(5);

/// Routes: `/hello`, `/echo`, `/defer?ms=N` (answered from another thread), `/hold`
/// (answered by the test), `/inline` (sent inside `handle`), `/drop` (Replier dropped),
/// `/stream` (socket handed to the test), `/panic`, `/big?mb=N`.
pub(super) struct TestHandler {
    pub(super) held: Mutex<Vec<Replier>>,
    pub(super) dispatched: (Sender<String>, Receiver<String>),
    pub(super) streams: (Sender<StreamSocket>, Receiver<StreamSocket>),
    pub(super) observed: AtomicUsize,
    pub(super) busy: AtomicUsize,
}

impl TestHandler {
    pub(super) fn new() -> Arc<TestHandler> {
        Arc::new(TestHandler {
            held: Mutex::new(Vec::new()),
            dispatched: crossbeam_channel::unbounded(),
            streams: crossbeam_channel::unbounded(),
            observed: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
        })
    }

    /// Wait until the handler got a request for `path`.
    pub(super) fn wait_dispatched(&self, path: &str) {
        loop {
            let got = self
                .dispatched
                .1
                .recv_timeout(WAIT)
                .expect("request never dispatched");
            if got == path {
                return;
            }
        }
    }
}

impl Handler for TestHandler {
    fn handle(&self, req: Request, replier: Replier) -> Outcome {
        let _ = self.dispatched.0.send(req.path.clone());
        let text = |s: String| Response::new(200, s.into_bytes()).route("/test");
        match req.path.as_str() {
            "/hello" => Outcome::Respond(text(format!("hello {}", req.query.unwrap_or_default()))),
            "/echo" => Outcome::Respond(Response::new(200, req.body)),
            "/defer" => {
                let ms = req
                    .query_param("ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(50);
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    replier.send(text("deferred".into()));
                });
                Outcome::Deferred
            }
            "/hold" => {
                self.held.lock().push(replier);
                Outcome::Deferred
            }
            "/inline" => {
                replier.send(Response::new(201, b"inline".to_vec()));
                Outcome::Deferred
            }
            "/drop" => {
                drop(replier);
                Outcome::Deferred
            }
            "/stream" => {
                let tx = self.streams.0.clone();
                Outcome::Stream {
                    head: Response::new(200, Vec::new())
                        .header("Content-Type", "text/event-stream".into()),
                    take: Box::new(move |s| {
                        let _ = tx.send(s);
                    }),
                }
            }
            "/panic" => panic!("test handler panic (expected)"),
            "/big" => {
                let mb = req
                    .query_param("mb")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Outcome::Respond(Response::new(200, vec![b'x'; mb << 20]))
            }
            _ => Outcome::Respond(Response::error(404, "not_found", "no such route")),
        }
    }

    fn observe(&self, _: &'static str, _: u16, _: Duration, _: &str) {
        self.observed.fetch_add(1, Ordering::SeqCst);
    }

    fn rejected_busy(&self) {
        self.busy.fetch_add(1, Ordering::SeqCst);
    }
}

pub(super) fn limits() -> Limits {
    Limits {
        workers: 2,
        max_connections: 1000,
        max_inflight: 64,
        max_header_bytes: 8 * 1024,
        max_headers: 32,
        max_body_bytes: 1024,
        head_timeout: Duration::from_secs(2),
        body_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(2),
    }
}

pub(super) fn start(limits: Limits) -> (ServerHandle, Arc<TestHandler>) {
    let handler = TestHandler::new();
    let listener = Listener::bind_tcp("127.0.0.1:0").unwrap();
    let server = Server::start("test", listener, limits, handler.clone()).unwrap();
    (server, handler)
}

pub(super) struct Client {
    pub(super) stream: TcpStream,
    pub(super) reader: BufReader<TcpStream>,
}

impl Client {
    pub(super) fn connect(server: &ServerHandle) -> Client {
        let stream = TcpStream::connect(server.local_addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Client { stream, reader }
    }

    pub(super) fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).unwrap();
    }

    pub(super) fn get(&mut self, path: &str) -> ClientResponse {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        self.read()
    }

    pub(super) fn read(&mut self) -> ClientResponse {
        client::read_response(&mut self.reader, false).expect("a response")
    }

    pub(super) fn read_head_only(&mut self) -> ClientResponse {
        client::read_response(&mut self.reader, true).expect("a response")
    }

    /// True if the server closes the connection (EOF or reset) within `within`.
    pub(super) fn closed_within(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        self.stream.set_read_timeout(Some(within)).unwrap();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return false,
                Err(_) => return true,
            }
        }
        false
    }
}

pub(super) fn error_code(r: &ClientResponse) -> String {
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON error body");
    v["error"].as_str().unwrap_or("").to_string()
}

pub(super) fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}
