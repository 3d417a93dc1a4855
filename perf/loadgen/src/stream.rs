//! `stream`: N subscribers on `/registry/stream` (one mio loop), one committer committing K
//! versions one after another with a pause between them. For every (subscriber, version): the
//! time its `event: commit` / `id: V` arrived, against the committer's send and 200 times.
//! CPU per delivered event is the `sse` thread's (and the whole server's) CPU time over the
//! measured commits divided by the events delivered (`--pid` of the server).

use crate::common::{self, ms, signers, summary_ms, Args};
use crate::http::Conn;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

struct Sub {
    stream: TcpStream,
    buf: Vec<u8>,
    head_done: bool,
    last_event: String,
    got: HashMap<u64, Instant>,
    closed: bool,
}

impl Sub {
    /// Consume complete lines from `buf`.
    fn parse(&mut self, now: Instant) {
        let mut start = 0;
        if !self.head_done {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                self.head_done = true;
                start = i + 4;
            } else {
                return;
            }
        }
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.buf[start..start + nl])
                .trim_end()
                .to_string();
            start += nl + 1;
            if let Some(e) = line.strip_prefix("event:") {
                self.last_event = e.trim().to_string();
            } else if let Some(id) = line.strip_prefix("id:") {
                if self.last_event == "commit" {
                    if let Ok(v) = id.trim().parse::<u64>() {
                        self.got.entry(v).or_insert(now);
                    }
                }
            }
        }
        self.buf.drain(..start);
    }
}

fn commit_one(
    c: &mut Conn,
    registry_id: &str,
    base: u64,
    threshold: usize,
) -> Result<(Instant, Instant, u64), String> {
    let keys = signers(threshold);
    let payload = crate::writes::proposal(registry_id, base, &format!("s{base}"));
    let id = common::sha256_hex(&payload);
    let sigs: Vec<_> = keys
        .iter()
        .map(|k| json!({"keyid": k.keyid, "sig": k.sign(&payload)}))
        .collect();
    let r = c.post("/propose", &payload).map_err(|e| e.to_string())?;
    if r.status != 202 {
        return Err(format!("propose {}: {}", r.status, r.text()));
    }
    let body = serde_json::to_vec(&json!({"proposal_id": id, "signatures": sigs})).unwrap();
    let r = c.post("/approve", &body).map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("approve {}: {}", r.status, r.text()));
    }
    let body = format!(r#"{{"proposal_id":"{id}"}}"#);
    let sent = Instant::now();
    let r = c
        .post("/commit", body.as_bytes())
        .map_err(|e| e.to_string())?;
    let acked = Instant::now();
    if r.status != 200 {
        return Err(format!("commit {}: {}", r.status, r.text()));
    }
    let v = r.json()["version"].as_u64().ok_or("no version")?;
    Ok((sent, acked, v))
}

pub fn run(a: &Args) {
    let addr = a.req("addr");
    let registry_id = a.str("registry-id", "perf-registry");
    let threshold: usize = a.num("threshold", 1);
    let n: usize = a.num("subscribers", 1);
    let commits: u64 = a.num("commits", 100);
    let interval = Duration::from_millis(a.num("interval-ms", 20));
    let pid: u32 = a.num("pid", 0);

    let mut poll = Poll::new().unwrap();
    let mut subs: Vec<Sub> = Vec::with_capacity(n);
    let sockaddr: std::net::SocketAddr = addr.parse().expect("--addr ip:port");
    let req = format!(
        "GET /registry/stream HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    for i in 0..n {
        let std = std::net::TcpStream::connect(sockaddr).expect("connect");
        std.set_nodelay(true).unwrap();
        (&std)
            .write_all(req.as_bytes())
            .expect("send stream request");
        std.set_nonblocking(true).unwrap();
        let mut stream = TcpStream::from_std(std);
        poll.registry()
            .register(&mut stream, Token(i), Interest::READABLE)
            .unwrap();
        subs.push(Sub {
            stream,
            buf: Vec::new(),
            head_done: false,
            last_event: String::new(),
            got: HashMap::new(),
            closed: false,
        });
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    let mut pump = |subs: &mut Vec<Sub>, poll: &mut Poll, timeout: Duration| {
        poll.poll(&mut events, Some(timeout)).unwrap();
        let now = Instant::now();
        for ev in events.iter() {
            let s = &mut subs[ev.token().0];
            loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => {
                        s.closed = true;
                        break;
                    }
                    Ok(k) => s.buf.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        s.closed = true;
                        break;
                    }
                }
            }
            s.parse(now);
        }
    };

    // Warm-up commit: proves every subscriber is registered with the sse thread.
    let mut c = Conn::new(&addr);
    let head = c.get("/registry/head").unwrap().json()["version"]
        .as_u64()
        .unwrap();
    let connect_deadline = Instant::now() + Duration::from_secs(20);
    while subs.iter().any(|s| !s.head_done && !s.closed) && Instant::now() < connect_deadline {
        pump(&mut subs, &mut poll, Duration::from_millis(50));
    }
    let (_, _, warm) = commit_one(&mut c, &registry_id, head, threshold).expect("warm-up commit");
    let warm_deadline = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|s| !s.got.contains_key(&warm) && !s.closed)
        && Instant::now() < warm_deadline
    {
        pump(&mut subs, &mut poll, Duration::from_millis(50));
    }
    let ready = subs.iter().filter(|s| s.got.contains_key(&warm)).count();

    // Committer thread; the main thread keeps reading.
    let cpu0 = (pid > 0).then(|| common::thread_cpu_ns(pid));
    let (tx, rx) = mpsc::channel();
    let committer = {
        let addr = addr.clone();
        let registry_id = registry_id.clone();
        std::thread::spawn(move || {
            let mut c = Conn::new(&addr);
            let mut base = warm;
            for _ in 0..commits {
                std::thread::sleep(interval);
                match commit_one(&mut c, &registry_id, base, threshold) {
                    Ok((sent, acked, v)) => {
                        base = v;
                        let _ = tx.send(Ok((v, sent, acked)));
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        break;
                    }
                }
            }
        })
    };
    let mut acks: HashMap<u64, (Instant, Instant)> = HashMap::new();
    let mut errors = Vec::new();
    let mut done_at: Option<Instant> = None;
    loop {
        pump(&mut subs, &mut poll, Duration::from_millis(5));
        while let Ok(m) = rx.try_recv() {
            match m {
                Ok((v, s, a)) => {
                    acks.insert(v, (s, a));
                }
                Err(e) => errors.push(e),
            }
        }
        if committer.is_finished() && done_at.is_none() {
            done_at = Some(Instant::now());
        }
        if let Some(d) = done_at {
            let all = subs
                .iter()
                .filter(|s| !s.closed)
                .all(|s| acks.keys().all(|v| s.got.contains_key(v)));
            if all || d.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
    }
    committer.join().unwrap();
    while let Ok(m) = rx.try_recv() {
        if let Ok((v, s, a)) = m {
            acks.insert(v, (s, a));
        }
    }
    let cpu1 = (pid > 0).then(|| common::thread_cpu_ns(pid));
    let mut from_ack = Vec::new();
    let mut from_send = Vec::new();
    let mut missing = 0u64;
    for s in &subs {
        for (v, (sent, acked)) in &acks {
            match s.got.get(v) {
                Some(t) => {
                    // Signed: the event may leave before the 200 (both follow the same publish).
                    let d = if *t >= *acked {
                        ms(*t - *acked)
                    } else {
                        -ms(*acked - *t)
                    };
                    from_ack.push(d);
                    from_send.push(ms(*t - *sent));
                }
                None => missing += 1,
            }
        }
    }
    let commit_ms: Vec<f64> = acks.values().map(|(s, a)| ms(*a - *s)).collect();
    let delivered = from_ack.len() as f64;
    let mut cpu = json!({});
    if let (Some(c0), Some(c1)) = (cpu0, cpu1) {
        let sse =
            c1.get("sse").copied().unwrap_or(0) as f64 - c0.get("sse").copied().unwrap_or(0) as f64;
        let total = common::sum_cpu(&c1) as f64 - common::sum_cpu(&c0) as f64;
        cpu = json!({
            "sse_thread_ms": common::round3(sse / 1e6),
            "process_ms": common::round3(total / 1e6),
            "sse_us_per_event": common::round3(if delivered > 0.0 { sse / 1e3 / delivered } else { f64::NAN }),
            "process_us_per_event": common::round3(if delivered > 0.0 { total / 1e3 / delivered } else { f64::NAN }),
        });
    }
    let out = json!({
        "subscribers": n,
        "subscribers_ready": ready,
        "subscribers_closed": subs.iter().filter(|s| s.closed).count(),
        "commits": acks.len(),
        "events_delivered": delivered,
        "events_missing": missing,
        "ack_to_event": summary_ms(from_ack),
        "send_to_event": summary_ms(from_send),
        "commit_latency": summary_ms(commit_ms),
        "cpu": cpu,
        "errors": errors,
    });
    println!("{out}");
}
