//! `conncheck`: per-connection service under load. N keep-alive connections in one mio loop,
//! each sending `GET path` again as soon as its previous response is complete, for S seconds.
//! Reports total responses/s and the distribution of responses per connection (a starved
//! connection is one with none). wrk cannot say this: its Lua API has no connection identity.

use crate::common::{pct, round3, Args};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

struct C {
    s: TcpStream,
    buf: Vec<u8>,
    count: u64,
    errors: u64,
    non2xx: u64,
    dead: bool,
}

/// If `buf` starts with a complete response, its length and status.
fn complete(buf: &[u8]) -> Option<(usize, u16)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut len = 0usize;
    for l in head.lines() {
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().ok()?;
            }
        }
    }
    (buf.len() >= end + len).then_some((end + len, status))
}

pub fn run(a: &Args) {
    let addr: std::net::SocketAddr = a.req("addr").parse().expect("--addr ip:port");
    let path = a.str("path", "/registry/head");
    let n: usize = a.num("conns", 64);
    let secs: f64 = a.num("secs", 3.0);
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes();
    let mut poll = Poll::new().unwrap();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let std = std::net::TcpStream::connect(addr).expect("connect");
        std.set_nodelay(true).unwrap();
        std.set_nonblocking(true).unwrap();
        let mut s = TcpStream::from_std(std);
        poll.registry()
            .register(&mut s, Token(i), Interest::READABLE)
            .unwrap();
        conns.push(C {
            s,
            buf: Vec::new(),
            count: 0,
            errors: 0,
            non2xx: 0,
            dead: false,
        });
    }
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    for c in conns.iter_mut() {
        if c.s.write_all(&req).is_err() {
            c.dead = true;
        }
    }
    let mut events = Events::with_capacity(4096);
    let mut rbuf = vec![0u8; 64 * 1024];
    while Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(20)))
            .unwrap();
        for ev in events.iter() {
            let c = &mut conns[ev.token().0];
            if c.dead {
                continue;
            }
            loop {
                match c.s.read(&mut rbuf) {
                    Ok(0) => {
                        c.dead = true;
                        c.errors += 1;
                        break;
                    }
                    Ok(k) => c.buf.extend_from_slice(&rbuf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.dead = true;
                        c.errors += 1;
                        break;
                    }
                }
            }
            while let Some((len, status)) = complete(&c.buf) {
                c.buf.drain(..len);
                c.count += 1;
                if !(200..300).contains(&status) {
                    c.non2xx += 1;
                }
                // Small request on an idle socket: the write completes at once.
                if Instant::now() < deadline && c.s.write_all(&req).is_err() {
                    c.dead = true;
                    c.errors += 1;
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut counts: Vec<f64> = conns.iter().map(|c| c.count as f64).collect();
    counts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let total: f64 = counts.iter().sum();
    let out = json!({
        "path": path,
        "conns": n,
        "secs": round3(elapsed),
        "rps": round3(total / elapsed),
        "per_conn_min": counts.first().copied().unwrap_or(0.0),
        "per_conn_p50": pct(&counts, 50.0),
        "per_conn_max": counts.last().copied().unwrap_or(0.0),
        "starved": counts.iter().filter(|&&c| c == 0.0).count(),
        "min_over_median": round3(counts.first().copied().unwrap_or(0.0) / pct(&counts, 50.0).max(1.0)),
        "errors": conns.iter().map(|c| c.errors).sum::<u64>(),
        "non2xx": conns.iter().map(|c| c.non2xx).sum::<u64>(),
    });
    println!("{out}");
}
