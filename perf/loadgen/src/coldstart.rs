//! `coldstart`: spawn the server, time spawn → the `ready=1 … role=read-plane` log line and
//! spawn → the first `200` from `GET /registry/head` (with the expected version, if given), then
//! measure RSS and threads once idle, and stop it with SIGTERM (waiting for its exit).

use crate::common::{round3, Args};
use crate::http::Conn;
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn field(line: &str, key: &str) -> Option<String> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .map(str::to_string)
}

pub fn run(a: &Args) {
    let bin = a.req("bin");
    let config = a.req("config");
    let extra: Vec<String> = a
        .str("flags", "")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let expect: Option<u64> = a.str("expect-version", "").parse().ok();
    let idle_ms: u64 = a.num("idle-ms", 500);
    let started = Instant::now();
    let mut child = Command::new(&bin)
        .arg("--config")
        .arg(&config)
        .args(&extra)
        .env_remove("RUST_LOG")
        .env_remove("REGISTRY_ADDR")
        .env_remove("METRICS_ADDR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let pid = child.id();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("role=read-plane") {
                let _ = tx.send((Instant::now(), line));
            }
        }
    });
    let (ready_at, line) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("no ready line within 120 s");
    let addr = field(&line, "registry_addr").expect("registry_addr");
    let startup_ms_logged: Option<f64> = field(&line, "startup_ms").and_then(|v| v.parse().ok());
    let mut c = Conn::new(&addr);
    let (head_at, head) = loop {
        if let Ok(r) = c.get("/registry/head") {
            if r.status == 200 {
                let head = r.json();
                if expect.is_none_or(|v| head["version"].as_u64() == Some(v)) {
                    break (Instant::now(), head);
                }
            }
        }
        if started.elapsed() > Duration::from_secs(120) {
            panic!("head not served within 120 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    drop(c);
    std::thread::sleep(Duration::from_millis(idle_ms));
    let rss_kb = status_field(pid, "VmRSS");
    let hwm_kb = status_field(pid, "VmHWM");
    let threads = status_field(pid, "Threads");
    let stop = Instant::now();
    // SAFETY: kill(2) on the PID of the child we spawned and have not reaped.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("wait");
    println!(
        "{}",
        json!({
            "ready_line_ms": round3((ready_at - started).as_secs_f64() * 1000.0),
            "startup_ms_logged": startup_ms_logged,
            "first_head_ms": round3((head_at - started).as_secs_f64() * 1000.0),
            "version": head["version"],
            "descriptors": head["descriptors"],
            "idle_rss_kb": rss_kb,
            "peak_rss_kb": hwm_kb,
            "threads": threads,
            "stop_ms": round3(stop.elapsed().as_secs_f64() * 1000.0),
            "exit_ok": status.success(),
        })
    );
}
