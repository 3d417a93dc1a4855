//! The `http_head` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/http_head.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! The HTTP transport (`src/http/conn.rs` parser + `server.rs` state machine) fed arbitrary
//! bytes: request heads, bodies (declared and chunked), pipelined requests, garbage.
//!
//! The parser is crate-private, so this drives the public entry point: a real `Server` started
//! in-process on a Unix socket with tight limits, and a handler that checks what reaches it.
//! Each input is written to a fresh connection in pieces (the first byte picks the piece size,
//! exercising incremental parsing), then the write side is shut.
//!
//! Checked: no panic (libFuzzer aborts on a panic in any thread, the workers included); every
//! request a handler sees honours the limits (body ≤ max_body_bytes, headers ≤ max_headers,
//! lower-case names, a sane corr id); every response is a well-formed HTTP/1.1 status line with a
//! known status; and the server closes the connection once the client has shut its side
//! (nothing can hold a connection open after EOF).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use svc_registry::http::{
    Handler, Limits, Listener, Outcome, Replier, Request, Response, Server, ServerHandle,
};

const MAX_BODY: usize = 4096;
const MAX_HEADERS: usize = 16;

struct Checker;

impl Handler for Checker {
    fn handle(&self, r: Request, _replier: Replier) -> Outcome {
        assert!(r.body.len() <= MAX_BODY, "body of {} bytes", r.body.len());
        assert!(
            r.headers.len() <= MAX_HEADERS,
            "{} headers",
            r.headers.len()
        );
        for (name, _) in &r.headers {
            assert!(!name.bytes().any(|b| b.is_ascii_uppercase()), "{name:?}");
        }
        assert!(
            !r.corr_id.is_empty()
                && r.corr_id.len() <= 64
                && r.corr_id.bytes().all(|b| b.is_ascii_graphic()),
            "corr id {:?}",
            r.corr_id
        );
        let body = format!("{:?} {} {:?} {}", r.method, r.path, r.query, r.body.len());
        Outcome::Respond(Response::new(200, body.into_bytes()))
    }
}

fn server() -> &'static (ServerHandle, PathBuf) {
    static S: OnceLock<(ServerHandle, PathBuf)> = OnceLock::new();
    S.get_or_init(|| {
        remove_dead_runs_dirs();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let limits = Limits {
            workers: 1,
            max_connections: 64,
            max_inflight: 16,
            max_header_bytes: 2048,
            max_headers: MAX_HEADERS,
            max_body_bytes: MAX_BODY,
            // Long deadlines: the server must close at the client's end of stream, not at a
            // deadline (a hang here is the bug `regression_half_closed_partial_request_…`).
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        };
        let listener = Listener::bind_unix(&path).unwrap();
        let handle = Server::start("fuzz", listener, limits, Arc::new(Checker)).unwrap();
        (handle, path)
    })
}

/// The per-process directory of the server's socket, under the temp dir, ends in the pid.
const DIR_PREFIX: &str = "svc-registry-fuzz-http-";

/// The server lives as long as the process (a static), so its directory cannot be removed when
/// the run ends: each run removes the ones of processes that are gone instead (a fuzz run or a
/// `cargo test` of `tests/fuzz_corpus.rs` would otherwise leave one behind each time).
fn remove_dead_runs_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

const KNOWN: &[u16] = &[100, 200, 400, 408, 413, 429, 431, 501, 503, 505];

/// Check every status line in a response stream (heads and bodies are not re-parsed: a body may
/// contain anything, so only the first line of each response is certain).
fn check_responses(out: &[u8]) {
    if out.is_empty() {
        return;
    }
    assert!(
        out.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(out)
    );
    let code: u16 = std::str::from_utf8(&out[9..12.min(out.len())])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {:?}", String::from_utf8_lossy(out)));
    assert!(KNOWN.contains(&code), "unexpected status {code}");
}

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let (_, path) = server();
    let Some((&piece, input)) = data.split_first() else {
        return;
    };
    let piece = usize::from(piece).max(1) * 16;
    let mut s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    for chunk in input.chunks(piece) {
        if let Err(e) = s.write_all(chunk) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                break; // the server refused and closed: fine
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            // libFuzzer's timers interrupt blocking calls.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("the server kept a half-closed connection open: {e}"),
        }
    }
    check_responses(&out);
}
