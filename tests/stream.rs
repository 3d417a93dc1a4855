//! `/registry/stream`: live events, lossless resume, lag drops, heartbeats, reset, shutdown.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::io::BufRead;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One SSE event.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    event: String,
    id: Option<u64>,
    data: serde_json::Value,
}

struct Stream {
    reader: Box<dyn BufRead + Send>,
}

impl Stream {
    fn open(s: &TestServer, path: &str, headers: &[(&str, &str)]) -> Stream {
        let (head, reader) =
            svc_registry::http::client::open_stream(&s.target(), path, headers, TIMEOUT)
                .expect("open stream");
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-type"), Some("text/event-stream"));
        Stream { reader }
    }

    /// The next event (skipping `retry:` blocks); None at EOF.
    fn next(&mut self) -> Option<Event> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if event.is_empty() {
                    continue;
                }
                return Some(Event {
                    event,
                    id,
                    data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
                });
            }
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ") {
                id = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
    }

    fn next_commit(&mut self) -> Option<Event> {
        loop {
            let e = self.next()?;
            if e.event == "commit" {
                return Some(e);
            }
        }
    }
}

fn commit_n(s: &TestServer, from: u64, n: u64) {
    for v in from..from + n {
        s.commit_ops(v, j!([put("node", &format!("n{v}"), j!({"v": v}))]));
    }
}

#[test]
fn a_commit_reaches_a_live_subscriber_with_matching_id_and_data() {
    let s = TestServer::start(Setup::default());
    let mut st = Stream::open(&s, "/registry/stream", &[]);
    let first = st.next().unwrap();
    assert_eq!(first.event, "heartbeat");
    assert_eq!(first.data, j!({"version": 0}));
    let c = s.commit_ops(0, j!([put("node", "n", j!({}))]));
    let e = st.next_commit().unwrap();
    assert_eq!(e.id, Some(1));
    assert_eq!(e.data["version"], c["version"]);
    assert_eq!(e.data["hash"], c["hash"]);
    assert_eq!(e.data, s.head());
}

#[test]
fn resume_with_last_event_id_and_since_is_gapless_under_concurrent_commits() {
    let s = std::sync::Arc::new(TestServer::start(Setup::default()));
    commit_n(&s, 0, 10);
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || commit_n(&s, 10, 30))
    };
    for (path, headers) in [
        ("/registry/stream", vec![("Last-Event-ID", "3")]),
        ("/registry/stream?since=3", vec![]),
    ] {
        let mut st = Stream::open(&s, path, &headers);
        let mut seen = Vec::new();
        while seen.last() != Some(&40) {
            let e = st.next_commit().expect("stream ended early");
            seen.push(e.id.unwrap());
        }
        assert_eq!(seen, (4..=40).collect::<Vec<_>>(), "{path}");
    }
    writer.join().unwrap();
}

#[test]
fn a_last_event_id_beyond_head_gets_reset_with_the_current_head() {
    let s = TestServer::start(Setup::default());
    commit_n(&s, 0, 2);
    let mut st = Stream::open(&s, "/registry/stream", &[("Last-Event-ID", "99")]);
    let e = st.next().unwrap();
    assert_eq!(e.event, "reset");
    assert_eq!(e.id, Some(2));
    assert_eq!(e.data, s.head());
    s.commit_ops(2, j!([put("node", "z", j!({}))]));
    assert_eq!(st.next_commit().unwrap().id, Some(3));
}

#[test]
fn heartbeats_carry_the_head_version() {
    let mut setup = Setup::default();
    setup.tables = "[sse]\nheartbeat_secs = 1\n".into();
    let s = TestServer::start(setup);
    commit_n(&s, 0, 1);
    let mut st = Stream::open(&s, "/registry/stream", &[]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut heartbeats = 0;
    while heartbeats < 2 && Instant::now() < deadline {
        let e = st.next().unwrap();
        if e.event == "heartbeat" {
            assert_eq!(e.data, j!({"version": 1}));
            heartbeats += 1;
        }
    }
    assert_eq!(heartbeats, 2);
}

#[test]
fn stuck_subscribers_are_dropped_and_counted_while_writes_and_reads_go_on() {
    let mut setup = Setup::default();
    setup.tables = "[sse]\nbuffer_events = 4\n[http]\nwrite_timeout_ms = 500\n".into();
    let s = TestServer::start(setup);
    // 20 subscribers that never read a byte, with tiny receive buffers.
    let stuck: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut t = s.connect_small_window();
            use std::io::Write;
            t.write_all(b"GET /registry/stream HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            t
        })
        .collect();
    eventually(TIMEOUT, "20 stuck subscribers registered", || {
        s.metric("sse_subscribers") == 20.0
    });
    // Commit until every stuck subscriber has been dropped: each holds at most its socket
    // buffers plus 64 KiB before it lags more than 4 events behind or hits the write timeout.
    let mut v = 0u64;
    let started = Instant::now();
    while s.metric("bus_lagged_total") < 20.0 {
        assert!(
            v < 5000 && started.elapsed() < Duration::from_secs(120),
            "still {} lagged after {v} commits",
            s.metric("bus_lagged_total")
        );
        let c = s.commit_ops(v, j!([put("node", &format!("n{v}"), j!({}))]));
        assert_eq!(c["version"], v + 1);
        v += 1;
        if v % 50 == 0 {
            assert_eq!(s.get("/registry/head").status, 200);
        }
    }
    eventually(TIMEOUT, "every stuck subscriber deregistered", || {
        s.metric("sse_subscribers") == 0.0
    });
    drop(stuck);
}

#[test]
fn two_hundred_subscribers_all_get_the_commit_and_workers_stay_free() {
    let s = TestServer::start(Setup::default());
    let mut streams: Vec<Stream> = (0..200)
        .map(|_| Stream::open(&s, "/registry/stream", &[]))
        .collect();
    // Workers are not pinned: reads answer while 200 streams are open on 2 workers.
    assert_eq!(s.get("/registry/head").status, 200);
    // Registered by the SSE thread after the response head went out.
    eventually(TIMEOUT, "200 subscribers registered", || {
        s.metric("sse_subscribers") == 200.0
    });
    let c = s.commit_ops(0, j!([put("node", "n", j!({}))]));
    for st in streams.iter_mut() {
        let e = st.next_commit().unwrap();
        assert_eq!(e.data["hash"], c["hash"]);
    }
}

#[test]
fn subscribers_over_the_cap_get_429() {
    let mut setup = Setup::default();
    setup.tables = "[sse]\nmax_subscribers = 2\n".into();
    let s = TestServer::start(setup);
    let _a = Stream::open(&s, "/registry/stream", &[]);
    let _b = Stream::open(&s, "/registry/stream", &[]);
    let r = s.get("/registry/stream");
    assert_eq!(r.status, 429);
    assert_eq!(json(&r)["error"], "busy");
}

#[test]
fn sigterm_ends_streams_with_a_final_event() {
    let mut s = TestServer::start(Setup::default());
    let mut st = Stream::open(&s, "/registry/stream", &[]);
    assert_eq!(st.next().unwrap().event, "heartbeat");
    s.signal(libc::SIGTERM);
    let e = st.next().expect("a final event before close");
    assert_eq!(e.event, "shutdown");
    assert!(st.next().is_none(), "the stream closes");
    let status = s.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success());
    assert!(s.wait_log("shutdown_complete=1", Duration::from_secs(5)));
}

#[test]
fn the_bus_socket_streams_commit_events_as_json_lines_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("bus.sock");
    let mut setup = Setup::default();
    setup.tables = format!("[bus]\nsocket = {:?}\n", sock.display().to_string());
    let mut s = TestServer::start(setup);
    let mut bus = BusClient::connect(&sock);
    let (v, c) = bus.commit_until_subscribed(&s, 0);
    assert_eq!(
        v,
        j!({"type": "commit", "version": c["version"], "hash": c["hash"]})
    );
    s.signal(libc::SIGTERM);
    let line = bus.next_line().unwrap();
    assert_eq!(line, r#"{"type":"shutdown"}"#);
    assert!(s.wait_exit(Duration::from_secs(10)).unwrap().success());
    assert!(!sock.exists(), "the socket file is removed at exit");
}
