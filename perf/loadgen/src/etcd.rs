//! `etcd-puts`: C concurrent clients doing durable puts through etcd's JSON gateway
//! (`POST /v3/kv/put`, keep-alive), the same client code and concurrency as `writes`.

use crate::common::{self, ms, summary_ms, Args};
use crate::http::Conn;
use base64::Engine;
use serde_json::json;
use std::time::{Duration, Instant};

pub fn run(a: &Args) {
    let addr = a.req("addr");
    let clients: usize = a.num("clients", 1);
    let secs: f64 = a.num("secs", 5.0);
    let value_bytes: usize = a.num("value-bytes", 300);
    let b64 = &base64::engine::general_purpose::STANDARD;
    let value = b64.encode(vec![b'x'; value_bytes]);
    // etcd's own CPU (every thread of --pid) and ours over the timed window, per put.
    let pid: u32 = a.num("pid", 0);
    let server0 = (pid > 0).then(|| common::sum_cpu(&common::thread_cpu_ns(pid)));
    let client0 = common::self_cpu_ns();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|ci| {
            let addr = addr.clone();
            let value = value.clone();
            std::thread::spawn(move || {
                let mut c = Conn::new(&addr);
                let mut lat = Vec::new();
                let mut errors = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let key = b64.encode(format!("perf/{ci}/{n}"));
                    let body = json!({"key": key, "value": value}).to_string();
                    let t = Instant::now();
                    match c.post("/v3/kv/put", body.as_bytes()) {
                        Ok(r) if r.status == 200 => lat.push(ms(t.elapsed())),
                        Ok(r) => errors.push(format!("{}: {}", r.status, r.text())),
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    for h in handles {
        let (l, e) = h.join().unwrap();
        lat.extend(l);
        errors.extend(e);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let client_ns = common::self_cpu_ns() - client0;
    let server_ns = server0.map(|s0| common::sum_cpu(&common::thread_cpu_ns(pid)) - s0);
    println!(
        "{}",
        json!({"clients": clients, "puts": lat.len(), "elapsed_s": common::round3(elapsed),
               "server_cpu_us_per_put": server_ns.map(|ns| common::us_per(ns, lat.len())),
               "client_cpu_us_per_put": common::us_per(client_ns, lat.len()),
               "puts_per_s": common::round3(lat.len() as f64 / elapsed),
               "latency": summary_ms(lat), "error_count": errors.len(),
               "errors": errors.iter().take(3).collect::<Vec<_>>()})
    );
}
