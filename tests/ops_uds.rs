//! `--uds-only` against the real process: no TCP registry port, reads and a full commit over the
//! socket (our client, ronctl --unix, and curl --unix-socket when installed), a stale socket file
//! replaced at start, mode 0660, the file removed at exit; the metrics listener stays on TCP.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use svc_registry::http::client;

/// Inodes of the TCP sockets `pid` has in LISTEN state.
fn listening_tcp_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
    {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.display().to_string();
            if let Some(inode) = link
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
            {
                inodes.insert(inode.to_string());
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // local_address is col 1 (HEXIP:HEXPORT), st col 3 (0A = LISTEN), inode col 9.
            if cols.len() > 9 && cols[3] == "0A" && inodes.contains(cols[9]) {
                let port = cols[1].rsplit(':').next().unwrap();
                ports.push(u16::from_str_radix(port, 16).unwrap());
            }
        }
    }
    ports
}

fn call(sock: &Path, method: &str, path: &str, body: Option<&[u8]>) -> ClientResponse {
    client::request(
        &Target::Unix(sock.to_path_buf()),
        method,
        path,
        &[("Content-Type", "application/json")],
        body,
        TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{method} {path} over {}: {e}", sock.display()))
}

#[test]
fn uds_only_serves_reads_and_a_full_commit_on_the_socket_and_no_tcp_registry_port() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    // A stale socket file from a previous run (bound, then abandoned).
    let sock = data_dir.join("registry.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());

    let mut setup = Setup::default();
    setup.flags.push("--uds-only".into());
    setup.data_dir = Some(data_dir.clone());
    let mut s = TestServer::start(setup);
    assert_eq!(
        Path::new(&s.registry),
        sock,
        "the ready line names the socket"
    );
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // Only the metrics listener listens on TCP.
    let metrics_port: u16 = s.metrics.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(listening_tcp_ports(s.pid()), [metrics_port]);
    assert_eq!(s.admin("GET", "/readyz", None).status, 200);

    // Reads.
    let r = call(&sock, "GET", "/registry/head", None);
    assert_eq!(r.status, 200);
    assert_eq!(json(&r)["version"], 0);

    // A full commit: propose → approve ×2 → commit.
    let payload = serde_json::to_vec(&j!({
        "registry_id": "test-registry", "base_version": 0,
        "ops": [put("node", "over-uds", j!({"addr": "10.0.0.1:1"}))],
    }))
    .unwrap();
    let r = call(&sock, "POST", "/propose", Some(&payload));
    assert_eq!(r.status, 202, "{}", r.text());
    let id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let body = s.setup.approve_body(&id, &payload);
    assert_eq!(call(&sock, "POST", "/approve", Some(&body)).status, 200);
    let r = call(
        &sock,
        "POST",
        "/commit",
        Some(format!(r#"{{"proposal_id":"{id}"}}"#).as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(json(&r)["version"], 1);
    let r = call(&sock, "GET", "/registry/descriptors/node/over-uds", None);
    assert_eq!(json(&r)["body"]["addr"], "10.0.0.1:1");

    // ronctl --unix.
    let out = ronctl_ok(&["--unix", sock.to_str().unwrap(), "registry", "head"]);
    let head: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(head["version"], 1);

    // curl --unix-socket, as docs/OPERATIONS.md shows it.
    if have("curl") {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--unix-socket",
                sock.to_str().unwrap(),
                "http://localhost/registry/head",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        let head: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(head["version"], 1);
        let out = Command::new("curl")
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--unix-socket",
                    sock.to_str().unwrap(),
                    "-H",
                    "Content-Type: application/json",
                    "--data-binary",
                    r#"{"registry_id": "test-registry", "base_version": 1, "ops": [{"op": "delete", "kind": "node", "id": "over-uds"}]}"#,
                    "http://localhost/propose",
                ])
                .output()
                .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "202");
    } else {
        skip_notice(
            "uds_only_serves_reads_and_a_full_commit_on_the_socket_and_no_tcp_registry_port (its curl --unix-socket part)",
            "curl is not installed",
        );
    }

    // At exit the socket file is removed.
    s.signal(libc::SIGTERM);
    assert!(s
        .wait_exit(Duration::from_secs(10))
        .expect("exits")
        .success());
    assert!(!sock.exists(), "socket file left behind");
}

#[test]
fn uds_only_without_uds_path_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let text = Setup::default()
        .config_text(&dir.path().join("data"))
        .lines()
        .filter(|l| !l.starts_with("uds_path"))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&config, text).unwrap();
    let out = Command::new(bin())
        .args(["--config", config.to_str().unwrap(), "--uds-only"])
        .env_remove("RON_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("uds_path"));
}
