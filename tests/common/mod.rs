//! Test harness: start the real `svc-registry` binary on 127.0.0.1:0 in a temp dir and talk to it
//! over HTTP like a user would.
//!
//! Invariant: a test never asserts on an asynchronous outcome after a fixed sleep. It polls the
//! condition with [`eventually`] (or [`poll`] where it wants the value, or reports failure
//! itself) under a deadline generous enough for a loaded CI machine; sleeps left in tests pace a
//! load or wait out a real server-side deadline the test is about.
//!
//! Skipped parts (a tool that is not installed) are announced with [`skip_notice`], which shows in
//! plain `cargo test` output: see its doc for why `eprintln!` is not enough.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use svc_registry::domain::record::CommitRecord;
pub use svc_registry::http::client::{ClientResponse, Target};

pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`poll`] and [`eventually`] try again: short next to every deadline they are given,
/// long enough not to busy a shared 2-core machine.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Call `f` every [`POLL_INTERVAL`] until it returns `Some`, for at most `deadline` (one last try
/// at the deadline); `None` if it never did. For callers that report a failure themselves.
pub fn poll<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// [`poll`] for a condition: whether `f()` held within `deadline`.
pub fn poll_until(deadline: Duration, mut f: impl FnMut() -> bool) -> bool {
    poll(deadline, || f().then_some(())).is_some()
}

/// Wait until `f()` holds; panic with `what` (what was awaited) once `deadline` passes.
pub fn eventually(deadline: Duration, what: &str, f: impl FnMut() -> bool) {
    assert!(poll_until(deadline, f), "not within {deadline:?}: {what}");
}

/// Wait until `f()` returns `Some` and return its value; panic with `what` once `deadline`
/// passes.
pub fn eventually_some<T>(deadline: Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    poll(deadline, f).unwrap_or_else(|| panic!("not within {deadline:?}: {what}"))
}

/// Say that (part of) a test was skipped, visibly in plain `cargo test` output.
///
/// libtest captures what a passing test prints, but only through the `print!`/`eprint!` family
/// (std's output-capture hook): `eprintln!` shows only with `--nocapture`, so a skip would pass
/// silently in CI. A write through the `std::io::Stderr` handle bypasses that hook and goes to
/// the process's real stderr, tty or not (checked with `cargo test 2>&1 | cat` and stdin closed,
/// as in CI; a child process inheriting stderr shows as well, `/dev/tty` does not exist in CI).
///
/// The line goes out in one write and on a line of its own: stderr is unbuffered and libtest's
/// own "test NAME ... ok" lines on stdout may be half written when it comes.
pub fn skip_notice(test: &str, why: &str) {
    let line = format!("\nSKIPPED {test}: {why}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Whether `tool --version` runs and succeeds (the tool is installed).
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A field of /proc/PID/status (e.g. "Threads", "VmRSS"), as the leading number; 0 once the
/// process is gone.
pub fn proc_status_of(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The server's RSS once the connections of a wave have left, in kB: polled (5 s at most)
/// until it is under `rss_before` + 8 MiB and within 2 MiB of the first wave's figure, because
/// the workers give freed memory back in their 100 ms sweep, a step per halving of their
/// connections, and a sample taken at once can precede it (a CI run sampled
/// [20308, 22844, 22844] kB that way: the first wave trimmed, the next two not yet). A figure
/// that never settles is returned as it stands, for [`assert_rss_flat_across_waves`] to refuse.
pub fn rss_after_wave(pid: u32, rss_before: u64, earlier: &[u64]) -> u64 {
    let first = earlier.first().copied();
    poll(Duration::from_secs(5), || {
        let rss = proc_status_of(pid, "VmRSS");
        let settled = rss < rss_before + 8 * 1024 && first.is_none_or(|f| rss <= f + 2 * 1024);
        settled.then_some(rss)
    })
    .unwrap_or_else(|| proc_status_of(pid, "VmRSS"))
}

/// Once a flood's connections are gone, memory is near the baseline (the connection slab
/// keeps its capacity) and does not grow wave after wave.
pub fn assert_rss_flat_across_waves(rss_before: u64, waves: &[u64]) {
    let (first, last) = (waves[0], *waves.last().unwrap());
    assert!(
        last < rss_before + 8 * 1024,
        "RSS {rss_before} kB -> {last} kB after the connections left"
    );
    assert!(
        last <= first + 2 * 1024,
        "RSS grows wave after wave: {waves:?} kB"
    );
}

/// A signer of the test registry.
pub struct Signer {
    pub keyid: String,
    pub key: SigningKey,
}

impl Signer {
    pub fn new(keyid: &str, seed: u8) -> Signer {
        Signer {
            keyid: keyid.to_string(),
            key: SigningKey::from_bytes(&[seed; 32]),
        }
    }
    pub fn public_hex(&self) -> String {
        hex::encode(self.key.verifying_key().as_bytes())
    }
    /// A DSSE approval of `payload`, standard base64.
    pub fn sign(&self, payload: &[u8]) -> String {
        svc_registry::domain::dsse::encode_sig(&svc_registry::domain::signers::sign_payload(
            &self.key, payload,
        ))
    }
}

/// What the config of a test server holds.
pub struct Setup {
    pub registry_id: String,
    pub threshold: usize,
    pub signers: Vec<Signer>,
    /// Top-level TOML lines (before any table).
    pub top: String,
    /// Extra tables appended at the end (`[http]`, `[storage]` …).
    pub tables: String,
    pub flags: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Reuse this data dir (restart tests); a fresh temp dir otherwise.
    pub data_dir: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            registry_id: "test-registry".into(),
            threshold: 2,
            signers: vec![
                Signer::new("a", 1),
                Signer::new("b", 2),
                Signer::new("c", 3),
            ],
            top: String::new(),
            tables: String::new(),
            flags: Vec::new(),
            env: Vec::new(),
            data_dir: None,
        }
    }
}

impl Setup {
    /// The `POST /approve` body carrying the first `threshold` signers' signatures of `payload`.
    pub fn approve_body(&self, proposal_id: &str, payload: &[u8]) -> Vec<u8> {
        let sigs: Vec<serde_json::Value> = self.signers[..self.threshold]
            .iter()
            .map(|k| serde_json::json!({"keyid": k.keyid, "sig": k.sign(payload)}))
            .collect();
        serde_json::to_vec(&serde_json::json!({"proposal_id": proposal_id, "signatures": sigs}))
            .unwrap()
    }

    pub fn config_text(&self, data_dir: &Path) -> String {
        let mut text = format!(
            "registry_id = {:?}\nregistry_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = {:?}\nuds_path = {:?}\nworkers = 2\n{}\n[signers]\nthreshold = {}\n",
            self.registry_id,
            data_dir.display().to_string(),
            data_dir.join("registry.sock").display().to_string(),
            self.top,
            self.threshold
        );
        for s in &self.signers {
            text.push_str(&format!(
                "[[signers.keys]]\nkeyid = {:?}\npublic_key = {:?}\n",
                s.keyid,
                s.public_hex()
            ));
        }
        text.push_str(&self.tables);
        text
    }
}

pub struct TestServer {
    pub child: Child,
    pub registry: String,
    pub metrics: String,
    pub dir: Arc<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub setup: Setup,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_svc-registry")
}

pub fn ronctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ronctl")
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

impl TestServer {
    pub fn start(setup: Setup) -> TestServer {
        Self::try_start(setup).unwrap_or_else(|(logs, status)| {
            panic!(
                "server did not become ready (exit {status:?}):\n{}",
                logs.join("\n")
            )
        })
    }

    /// Start and wait for the read-plane ready line; on failure the captured log lines and the
    /// exit status.
    pub fn try_start(setup: Setup) -> Result<TestServer, (Vec<String>, Option<ExitStatus>)> {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let data_dir = setup
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, setup.config_text(&data_dir)).expect("write config");
        Self::spawn(setup, dir, data_dir, config_path)
    }

    /// Start and wait for a log line containing `marker` (e.g. "metrics listener bound" for a
    /// server expected to come up not ready: `registry` is empty then).
    pub fn start_until(setup: Setup, marker: &'static str) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let data_dir = setup
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, setup.config_text(&data_dir)).expect("write config");
        Self::spawn_until(setup, dir, data_dir, config_path, marker).unwrap_or_else(
            |(logs, status)| panic!("start failed (exit {status:?}):\n{}", logs.join("\n")),
        )
    }

    fn spawn(
        setup: Setup,
        dir: Arc<tempfile::TempDir>,
        data_dir: PathBuf,
        config_path: PathBuf,
    ) -> Result<TestServer, (Vec<String>, Option<ExitStatus>)> {
        Self::spawn_until(setup, dir, data_dir, config_path, "role=read-plane")
    }

    /// Restart (after a SIGKILL or an exit) and wait only for the metrics listener, for servers
    /// expected to come up not ready. `registry` is empty in the result.
    pub fn restart_unready(self) -> TestServer {
        self.restart_until("metrics listener bound")
    }

    /// Stop (SIGKILL; nothing to do if it has already exited) and start again on the same data
    /// dir and config.
    pub fn restart_killed(self) -> TestServer {
        self.restart_until("role=read-plane")
    }

    fn restart_until(self, marker: &'static str) -> TestServer {
        let mut me = self;
        let _ = me.child.kill();
        let _ = me.child.wait();
        let setup = std::mem::take(&mut me.setup);
        let (dir, data_dir, config_path) =
            (me.dir.clone(), me.data_dir.clone(), me.config_path.clone());
        Self::spawn_until(setup, dir, data_dir, config_path, marker).unwrap_or_else(
            |(logs, status)| panic!("restart failed (exit {status:?}):\n{}", logs.join("\n")),
        )
    }

    /// SIGTERM, and insist on a clean exit within the drain deadline.
    pub fn stop(mut self) -> TestServer {
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(10))
            .expect("exits after SIGTERM");
        assert!(status.success(), "exit {status:?}:\n{}", self.logs());
        self
    }

    fn spawn_until(
        setup: Setup,
        dir: Arc<tempfile::TempDir>,
        data_dir: PathBuf,
        config_path: PathBuf,
        ready_marker: &'static str,
    ) -> Result<TestServer, (Vec<String>, Option<ExitStatus>)> {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(&config_path)
            .args(&setup.flags)
            .env_remove("RUST_LOG")
            .env_remove("REGISTRY_ADDR")
            .env_remove("METRICS_ADDR")
            .env_remove("RON_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in &setup.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn svc-registry");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains(ready_marker) {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => {
                    let registry = field(&line, "registry_addr").unwrap_or("").to_string();
                    let metrics = field(&line, "metrics_addr").unwrap_or("").to_string();
                    return Ok(TestServer {
                        child,
                        registry,
                        metrics,
                        dir,
                        data_dir,
                        config_path,
                        logs,
                        setup,
                    });
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        // The last lines are still in the pipe: wait for the reader's EOF (its
                        // end drops the sender) so the error carries all of them.
                        poll(Duration::from_secs(5), || {
                            matches!(
                                rx.try_recv(),
                                Err(std::sync::mpsc::TryRecvError::Disconnected)
                            )
                            .then_some(())
                        });
                        let lines = logs.lock().unwrap().clone();
                        return Err((lines, Some(status)));
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let lines = logs.lock().unwrap().clone();
                        return Err((lines, None));
                    }
                }
            }
        }
    }

    pub fn target(&self) -> Target {
        Target::Tcp(self.registry.clone())
    }

    pub fn metrics_target(&self) -> Target {
        Target::Tcp(self.metrics.clone())
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> ClientResponse {
        svc_registry::http::client::request(&self.target(), method, path, headers, body, TIMEOUT)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> ClientResponse {
        self.request("GET", path, &[], None)
    }

    pub fn post(&self, path: &str, body: &[u8]) -> ClientResponse {
        self.request(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
    }

    pub fn admin(&self, method: &str, path: &str, body: Option<&[u8]>) -> ClientResponse {
        svc_registry::http::client::request(
            &self.metrics_target(),
            method,
            path,
            &[],
            body,
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Run `ronctl` against this server (both listeners, a clean environment); returns
    /// (success, stdout, stderr).
    pub fn ronctl(&self, args: &[&str]) -> (bool, String, String) {
        let out = std::process::Command::new(ronctl_bin())
            .args([
                "--url",
                &format!("http://{}", self.registry),
                "--admin-url",
                &format!("http://{}", self.metrics),
            ])
            .args(args)
            .env_remove("RON_REGISTRY_URL")
            .env_remove("RON_ADMIN_URL")
            .env_remove("RON_CONFIG")
            .env_remove("REGISTRY_ADDR")
            .env_remove("METRICS_ADDR")
            .env_remove("RON_BUS_SOCK")
            .output()
            .expect("run ronctl");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// Wait until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        poll_until(timeout, || self.logs().contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        poll(timeout, || self.child.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A field of /proc/PID/status (e.g. "Threads", "VmRSS"), as the leading number.
    pub fn proc_status(&self, key: &str) -> u64 {
        proc_status_of(self.pid(), key)
    }

    /// How many file descriptors the server holds (listeners, log files, connections).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The value of a metric line starting with `series` (e.g. `rejected_total{reason="busy"}`).
    pub fn metric(&self, series: &str) -> f64 {
        let body = self.admin("GET", "/metrics", None).body;
        let text = String::from_utf8_lossy(&body);
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .filter(|rest| rest.starts_with(' '))
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn head(&self) -> serde_json::Value {
        json(&self.get("/registry/head"))
    }

    /// Assert that HEAD is at or past every acknowledged version, that each is there with its
    /// hash, and that the whole chain verifies with every quorum signature. Returns HEAD.
    pub fn assert_holds_acked(&self, acked: &std::collections::BTreeMap<u64, String>) -> u64 {
        let head = self.head()["version"].as_u64().unwrap();
        let max_acked = acked.keys().next_back().copied().unwrap_or(0);
        assert!(
            head >= max_acked,
            "HEAD {head} is behind the last acknowledged version {max_acked}"
        );
        let records = self.records_from(0);
        for (v, hash) in acked {
            assert_eq!(
                &records[*v as usize].hash, hash,
                "acknowledged version {v} changed or vanished"
            );
        }
        let signers =
            svc_registry::cli::signers_from_json(&json(&self.get("/registry/signers?version=0")))
                .unwrap();
        svc_registry::domain::audit::verify_chain(&self.setup.registry_id, &records, &signers)
            .expect("the chain verifies");
        head
    }

    /// A connection to the registry listener with a 4 KiB receive buffer, for clients that
    /// never read: the server's writes back up after a few KiB.
    pub fn connect_small_window(&self) -> std::net::TcpStream {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        sock.connect(
            &self
                .registry
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .expect("connect");
        sock.into()
    }

    /// Every commit record from version `from` on, page by page through `GET /registry/log`.
    pub fn records_from(&self, from: u64) -> Vec<CommitRecord> {
        let mut records = Vec::new();
        let mut from = from;
        loop {
            let page = json(&self.get(&format!("/registry/log?from={from}&limit=1000")));
            for r in page["records"].as_array().unwrap() {
                records.push(CommitRecord::from_value(r.clone()).unwrap());
            }
            match page["next"].as_u64() {
                Some(n) => from = n,
                None => return records,
            }
        }
    }

    /// propose → approve with the first `threshold` signers → commit. Returns the commit JSON.
    pub fn commit_ops(&self, base_version: u64, ops: serde_json::Value) -> serde_json::Value {
        let payload = serde_json::to_vec(&serde_json::json!({
            "registry_id": self.setup.registry_id,
            "base_version": base_version,
            "ops": ops,
        }))
        .unwrap();
        self.commit_payload(&payload)
    }

    pub fn commit_payload(&self, payload: &[u8]) -> serde_json::Value {
        let r = self.post("/propose", payload);
        assert_eq!(r.status, 202, "propose: {}", r.text());
        let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
        let r = self.post("/approve", &self.setup.approve_body(&id, payload));
        assert_eq!(r.status, 200, "approve: {}", r.text());
        let r = self.post("/commit", format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes());
        assert_eq!(r.status, 200, "commit: {}", r.text());
        json(&r)
    }
}

impl Default for Signer {
    fn default() -> Self {
        Signer::new("a", 1)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn json(r: &ClientResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): status {} {}", r.status, r.text()))
}

pub trait Text {
    fn text(&self) -> String;
}

impl Text for ClientResponse {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A put op for `commit_ops`.
pub fn put(kind: &str, id: &str, body: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"op": "put", "kind": kind, "id": id, "body": body})
}

/// A client of the JSON-lines bus socket (`[bus] socket`), one event per line.
pub struct BusClient {
    reader: BufReader<std::os::unix::net::UnixStream>,
    /// A line being read: kept across read timeouts so a line split by one is not lost.
    line: String,
}

impl BusClient {
    pub fn connect(sock: &Path) -> BusClient {
        let client = std::os::unix::net::UnixStream::connect(sock).expect("connect to the bus");
        client.set_read_timeout(Some(TIMEOUT)).unwrap();
        BusClient {
            reader: BufReader::new(client),
            line: String::new(),
        }
    }

    /// The next line, without its newline; None at EOF. Panics after [`TIMEOUT`] without one.
    pub fn next_line(&mut self) -> Option<String> {
        self.read_line().expect("a bus event within the timeout")
    }

    /// The next event; panics at EOF or after [`TIMEOUT`].
    pub fn next(&mut self) -> serde_json::Value {
        let line = self.next_line().expect("a bus event, not EOF");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bus line {line:?}: {e}"))
    }

    /// Ok(None) at EOF, Err on a read timeout (the partial line is kept).
    fn read_line(&mut self) -> std::io::Result<Option<String>> {
        if self.reader.read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        let line = std::mem::take(&mut self.line);
        Ok(Some(line.trim_end_matches('\n').to_string()))
    }

    /// The server registers a bus subscription asynchronously after the connect, and a
    /// subscriber sees only what is published after that: commit (one put per commit, from
    /// HEAD `base`) until a commit event shows, then read up to the event of the last commit
    /// made. Returns that event and the last commit's JSON; the next event read is whatever
    /// follows that commit.
    pub fn commit_until_subscribed(
        &mut self,
        s: &TestServer,
        base: u64,
    ) -> (serde_json::Value, serde_json::Value) {
        let stream = self.reader.get_ref().try_clone().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut version = base;
        let mut last_commit = serde_json::Value::Null;
        let first = eventually_some(TIMEOUT, "a commit event on the bus", || {
            last_commit = s.commit_ops(
                version,
                serde_json::json!([put(
                    "node",
                    &format!("bus-{version}"),
                    serde_json::json!({})
                )]),
            );
            version += 1;
            self.read_line().ok().map(|l| l.expect("the bus closed"))
        });
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut event: serde_json::Value = serde_json::from_str(&first).unwrap();
        while event["version"] != last_commit["version"] {
            assert_eq!(event["type"], "commit", "{event}");
            event = self.next();
        }
        (event, last_commit)
    }
}

/// The signers of a test-vector file (its `keys`: keyid, seed_hex, public_key), each checked
/// against the public key the file publishes.
pub fn vector_signers(v: &serde_json::Value) -> Vec<Signer> {
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let seed: [u8; 32] = hex::decode(k["seed_hex"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap();
            let signer = Signer {
                keyid: k["keyid"].as_str().unwrap().into(),
                key: SigningKey::from_bytes(&seed),
            };
            assert_eq!(signer.public_hex(), k["public_key"].as_str().unwrap());
            signer
        })
        .collect()
}

/// Run `ronctl` with `args` alone (no server URLs added), insist that it succeeds, and return
/// its stdout.
pub fn ronctl_ok(args: &[&str]) -> String {
    let out = Command::new(ronctl_bin())
        .args(args)
        .output()
        .expect("run ronctl");
    assert!(
        out.status.success(),
        "ronctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A release server started by a perf harness (perf/*_measure.rs): `cmd` is spawned with
/// `RUST_LOG=warn,svc_registry=info`, its stderr read on a thread that echoes warnings and errors
/// (`LOG …`), and its read-plane ready line awaited for at most `ready_within`. Returns the child
/// and the addresses that line names (`metrics_addr` empty when the config has none).
pub fn spawn_measured(
    cmd: &mut Command,
    ready_within: Duration,
) -> (Child, /* registry */ String, /* metrics */ String) {
    let mut child = cmd
        .env("RUST_LOG", "warn,svc_registry=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn svc-registry");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("role=read-plane") {
                let _ = tx.send(l.clone());
            }
            if l.contains("level=warn") || l.contains("level=error") {
                eprintln!("LOG {l}");
            }
        }
    });
    let line = rx
        .recv_timeout(ready_within)
        .expect("the server's read-plane ready line");
    let field = |key: &str| {
        line.split(' ')
            .find_map(|kv| kv.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    };
    let registry = field("registry_addr=");
    assert!(!registry.is_empty(), "no registry_addr in {line}");
    (child, registry, field("metrics_addr="))
}
