//! History served from the log (issue 14), through HTTP against the real binary: the bytes of
//! `/registry/{version}` are the log's frame payloads as stored, a record that changed on disk
//! under a running server is refused (503, counted) rather than served, a broken chain before the
//! checkpoint (which start-up no longer re-hashes) is found by the background check and reported
//! without taking readiness away, and `--amnesia` serves history through the same path.

mod common;
use common::*;
use serde_json::json;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One record frame of a log segment: its offset in the file and its payload.
struct Frame {
    offset: u64,
    payload: Vec<u8>,
}

/// The commit record frames of segment 0 (format: docs/FORMATS.md, src/log/segment.rs), up to
/// the first all-zero header: the genesis record (the first frame) and pending frames (proposals
/// and approvals awaiting commit) are left out, so `frames(..)[v - 1]` is version `v`.
fn frames(data_dir: &Path) -> Vec<Frame> {
    let bytes = std::fs::read(segment0(data_dir)).expect("segment 0");
    let mut out = Vec::new();
    let mut at = 0usize;
    while at + 16 <= bytes.len() && bytes[at..at + 16].iter().any(|&b| b != 0) {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
        assert_ne!(len, u32::MAX, "no roll in these short logs");
        let payload = bytes[at + 16..at + 16 + len as usize].to_vec();
        if at > 0 && !payload.starts_with(b"{\"pending\":") {
            out.push(Frame {
                offset: at as u64,
                payload,
            });
        }
        at += 16 + len as usize;
    }
    out
}

fn segment0(data_dir: &Path) -> PathBuf {
    data_dir.join("log").join("segment-0000000000.log")
}

/// Rewrite the payload of the frame at `offset` (same length) with a valid CRC: a change no
/// frame check can see.
fn rewrite_frame(data_dir: &Path, offset: u64, payload: &[u8]) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment0(data_dir))
        .unwrap();
    let mut header = [0u8; 16];
    file.read_exact_at(&mut header, offset).unwrap();
    let len = u32::from_le_bytes(header[0..4].try_into().unwrap());
    assert_eq!(len as usize, payload.len());
    let crc = crc32c::crc32c(&header[0..4]);
    let crc = crc32c::crc32c_append(crc, &header[8..16]);
    let crc = crc32c::crc32c_append(crc, payload);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    file.write_all_at(payload, offset + 16).unwrap();
    file.write_all_at(&header, offset).unwrap();
    file.sync_all().unwrap();
}

fn commit_n(s: &TestServer, n: u64) {
    for v in 1..=n {
        let r = s.commit_ops(
            v - 1,
            json!([put("node", &format!("n{v}"), json!({"v": v}))]),
        );
        assert_eq!(r["version"], v);
    }
}

#[test]
fn records_are_served_as_the_log_stores_them_and_a_chain_broken_before_the_checkpoint_is_reported_in_the_background(
) {
    let s = TestServer::start(Setup::default());
    commit_n(&s, 5);
    let stored = frames(&s.data_dir);
    assert_eq!(stored.len(), 5);
    for (i, frame) in stored.iter().enumerate() {
        let r = s.get(&format!("/registry/{}", i + 1));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            frame.payload,
            "version {} is not the stored bytes",
            i + 1
        );
    }
    let page = json(&s.get("/registry/log?from=0&limit=4"));
    assert_eq!(page["head"], 5);
    assert_eq!(page["next"], 4);
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[0]["version"], 0);
    for v in 1..4 {
        let want: serde_json::Value = serde_json::from_slice(&stored[v - 1].payload).unwrap();
        assert_eq!(records[v], want);
    }
    let last = json(&s.get("/registry/log?from=4"));
    assert_eq!(last["next"], serde_json::Value::Null);
    assert_eq!(last["records"].as_array().unwrap().len(), 2);
    assert_eq!(
        s.metric("registry_background_verify_failures_total"),
        0.0,
        "a sound chain"
    );

    // A clean stop writes a checkpoint at 5, so start-up reads only from version 5 on. Version
    // 2's hash is changed, with a valid frame around it: nothing at start-up can see it.
    let s = s.stop();
    assert!(
        std::fs::read_dir(s.data_dir.join("checkpoints"))
            .unwrap()
            .count()
            > 0
    );
    let mut payload = stored[1].payload.clone();
    let at = String::from_utf8_lossy(&payload)
        .find("\"hash\":\"")
        .unwrap()
        + 8;
    payload[at] = if payload[at] == b'0' { b'1' } else { b'0' };
    rewrite_frame(&s.data_dir, stored[1].offset, &payload);
    let s = s.restart_killed();
    assert_eq!(s.head()["version"], 5);
    eventually(
        std::time::Duration::from_secs(20),
        "the background check reports the broken chain",
        || s.metric("registry_background_verify_failures_total") == 1.0,
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 200, "the check never takes readiness away");
    let text = r.text();
    assert!(
        text.contains("background history check failed") && text.contains("version 2"),
        "{text}"
    );
}

#[test]
fn a_record_that_changed_on_disk_under_a_running_server_is_refused_not_served() {
    let s = TestServer::start(Setup::default());
    commit_n(&s, 2);
    let stored = frames(&s.data_dir);
    // Flip one payload byte in place (the file keeps its length: no SIGBUS for the writer's
    // map): the frame's CRC no longer matches.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment0(&s.data_dir))
        .unwrap();
    let at = stored[0].offset + 16 + 10;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    let r = s.get("/registry/1");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(!r.text().contains(".log"), "no server path in the answer");
    assert_eq!(s.metric("registry_history_read_failures_total"), 1.0);
    assert_eq!(s.get("/registry/log?from=0").status, 503);
    assert_eq!(s.get("/registry/2").status, 200, "the rest is served");
    // Put the byte back so the data dir is sound for the harness's clean-up.
    file.write_all_at(&b, at).unwrap();
    assert_eq!(s.get("/registry/1").status, 200);
}

#[test]
fn an_amnesiac_node_serves_history_through_the_same_read_path() {
    let s = TestServer::start(Setup {
        flags: vec!["--amnesia".into()],
        ..Setup::default()
    });
    commit_n(&s, 4);
    let acked = (1..=4)
        .map(|v| {
            let r = json(&s.get(&format!("/registry/{v}")));
            (v, r["hash"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(s.assert_holds_acked(&acked), 4);
    assert!(
        !s.data_dir.join("log").exists(),
        "nothing is written to disk"
    );
}

#[test]
fn a_payload_damaged_below_the_checkpoint_is_never_served() {
    let s = TestServer::start(Setup::default());
    commit_n(&s, 4);
    let s = s.stop();
    let stored = frames(&s.data_dir);
    // Version 2's payload changes on disk (its CRC no longer matches). The scan checks records
    // below the checkpoint's `log_end` by header only, but restore reads the recent versions
    // back (their proposal ids) through the CRC-checking reader: start-up refuses, naming the
    // file and offset, as it does without a checkpoint (tests/recovery.rs). Damage older than
    // what start-up reads is the background check's (the first test).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment0(&s.data_dir))
        .unwrap();
    let at = stored[1].offset + 16 + 20;
    let mut b = [0u8; 1];
    file.read_exact_at(&mut b, at).unwrap();
    file.write_all_at(&[b[0] ^ 0x01], at).unwrap();
    file.sync_all().unwrap();
    let s = s.restart_unready();
    assert!(
        s.wait_log("state restore failed", std::time::Duration::from_secs(10)),
        "{}",
        s.logs()
    );
    assert!(
        s.wait_log("trusted_end=", Duration::from_secs(5)),
        "{}",
        s.logs()
    );
    let r = s.admin("GET", "/readyz", None);
    assert_eq!(r.status, 503);
    let reasons = r.text();
    assert!(
        reasons.contains(&format!("segment-0000000000.log:{}", stored[1].offset)),
        "{reasons}"
    );
    assert!(!s.logs().contains("role=read-plane"), "{}", s.logs());
}
