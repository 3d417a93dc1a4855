//! Start-up recovery of the real process: torn tails are cut, mid-log corruption refuses with
//! /readyz 503 and the file and offset, a corrupt newest checkpoint falls back to an older one.

#![allow(clippy::field_reassign_with_default)]

mod common;
use common::*;
use serde_json::json as j;
use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

fn durable_setup() -> Setup {
    let mut s = Setup::default();
    s.top = "max_body_bytes = 65536\n".into();
    s.tables = "[storage]\nsegment_bytes = 1048576\ncheckpoint_every_commits = 5\ncheckpoint_interval_secs = 3600\ncheckpoints_kept = 3\n".into();
    s
}

fn commit_n(s: &TestServer, n: u64) {
    for v in 0..n {
        s.commit_ops(v, j!([put("node", &format!("n{v}"), j!({"v": v}))]));
    }
}

fn segment0(s: &TestServer) -> std::path::PathBuf {
    s.data_dir.join("log").join("segment-0000000000.log")
}

/// Byte offset just past the last non-zero byte of a file.
fn data_end(path: &std::path::Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[test]
fn a_torn_tail_is_truncated_with_a_warning_and_everything_before_it_survives() {
    let s = TestServer::start(durable_setup());
    commit_n(&s, 3);
    let head = s.head();
    let s = s.stop();
    // A crash mid-append: a frame header promising more bytes than were written.
    let seg = segment0(&s);
    let end = data_end(&seg);
    let mut f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(end as u64 + 64)).unwrap();
    f.write_all(&[0x40, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3])
        .unwrap();
    drop(f);
    let s = s.restart_killed();
    assert_eq!(s.head(), head);
    assert!(s.logs().contains("torn"), "{}", s.logs());
    // Appends continue after the cut.
    s.commit_ops(3, j!([put("node", "after", j!({}))]));
    assert_eq!(s.head()["version"], 4);
}

#[test]
fn a_bit_flip_mid_log_refuses_to_start_with_the_file_and_offset() {
    let s = TestServer::start(durable_setup());
    commit_n(&s, 4);
    let s = s.stop();
    // Remove checkpoints so start-up must read the damaged record, then flip a bit inside the
    // second record (well before the end).
    for e in std::fs::read_dir(s.data_dir.join("checkpoints")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let seg = segment0(&s);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&seg);
    let target = end / 3;
    bytes[target] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();
    let s = s.restart_unready();
    assert!(
        s.wait_log("state restore failed", Duration::from_secs(10)),
        "{}",
        s.logs()
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 503);
    let body = json(&r);
    assert_eq!(body["ready"], false);
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("segment-0000000000.log"), "{reasons}");
    assert!(s.logs().contains("level=error"), "{}", s.logs());
    assert!(
        !s.logs().contains("role=read-plane"),
        "must not serve a corrupt state"
    );
    // It stays up (healthz) until told to stop.
    assert_eq!(s.admin("GET", "/healthz", None).status, 200);
}

#[test]
fn a_corrupt_newest_checkpoint_falls_back_to_an_older_one() {
    let s = TestServer::start(durable_setup());
    commit_n(&s, 12);
    let head = s.head();
    let all = json(&s.get("/registry/descriptors?limit=100"));
    let s = s.stop();
    let dir = s.data_dir.join("checkpoints");
    let mut cps: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cps.sort();
    assert!(cps.len() >= 2, "{cps:?}");
    let newest = cps.last().unwrap().clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();
    let s = s.restart_killed();
    assert!(
        s.logs().contains("skipping unusable checkpoint"),
        "{}",
        s.logs()
    );
    assert!(
        s.logs().contains("loaded an older checkpoint"),
        "{}",
        s.logs()
    );
    assert_eq!(s.head(), head);
    assert_eq!(json(&s.get("/registry/descriptors?limit=100")), all);
}

#[test]
fn checkpoints_are_written_and_their_age_is_exported() {
    let s = TestServer::start(durable_setup());
    commit_n(&s, 6);
    let dir = s.data_dir.join("checkpoints");
    eventually(
        Duration::from_secs(5),
        "no checkpoint after 6 commits with every_commits = 5",
        || std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) >= 1,
    );
    assert!(s.wait_log("checkpoint written", Duration::from_secs(5)));
    assert!(s
        .admin("GET", "/metrics", None)
        .text()
        .contains("registry_checkpoint_age_seconds "));
}
