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
    assert!(s.wait_log("torn", Duration::from_secs(5)), "{}", s.logs());
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
    assert!(
        s.wait_log("level=error", Duration::from_secs(5)),
        "{}",
        s.logs()
    );
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
        s.wait_log("skipping unusable checkpoint", Duration::from_secs(5)),
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

/// A data directory whose newest checkpoint is payload version 1 (the JSON payload builds before
/// version 2 wrote; docs/FORMATS.md §7), made here by the crate's own version-1 encoder
/// (`restore::checkpoint_bytes_with`) from the state the log restores to, and its file writer:
/// the server starts from it (not from a replay of the whole log), serves the same HEAD,
/// descriptors and pending proposal, and rewrites it at once as version 2, which the next start
/// loads.
#[test]
fn a_version_1_checkpoint_is_loaded_and_rewritten_as_version_2() {
    let s = TestServer::start(durable_setup());
    let ops = [
        j!([
            put("node", "n1", j!({"addr": "10.0.0.1:9000"})),
            put("region", "eu-1", j!({}))
        ]),
        j!([
            put("service", "s1", j!({"port": 80})),
            put("node", "n2", j!({"v": [1, 2]}))
        ]),
        j!([{"op": "delete", "kind": "node", "id": "n1"}, put("service", "s2", j!({}))]),
    ];
    for (base, ops) in ops.into_iter().enumerate() {
        s.commit_ops(base as u64, ops);
    }
    // A proposal left pending after HEAD: its frame follows the checkpoint's record in the log.
    let payload = serde_json::to_vec(&j!({
        "registry_id": s.setup.registry_id,
        "base_version": 3,
        "ops": [put("region", "us-1", j!({}))],
    }))
    .unwrap();
    let r = s.post("/propose", &payload);
    assert_eq!(r.status, 202, "{}", r.text());
    let pending_id = json(&r)["proposal_id"].as_str().unwrap().to_string();
    let head = s.head();
    let all = json(&s.get("/registry/descriptors?limit=100"));
    assert_eq!(all["descriptors"].as_array().unwrap().len(), 4, "{all}");
    let s = s.stop();

    // The stop wrote a version-2 checkpoint at HEAD: replace it with the version-1 payload of
    // the same state, built over the real log (so its `log_end` is where record 3 ends).
    let seq = head["version"].as_u64().unwrap();
    let file = s
        .data_dir
        .join("checkpoints")
        .join(format!("checkpoint-{seq:020}.ckpt"));
    assert!(
        payload_of(&file).starts_with(b"SVCRST02"),
        "the server writes version 2"
    );
    {
        let opts = svc_registry::log::StorageOptions {
            segment_bytes: 1 << 20,
            checkpoints_kept: 3,
        };
        let opened = match svc_registry::storage::open_with(
            &s.data_dir,
            &s.setup.registry_id,
            &opts,
            &mut || Err("the log exists".to_string()),
        ) {
            Ok(o) => o,
            Err(_) => panic!("the stopped server's data dir opens"),
        };
        let snap = &opened.restored.snapshot;
        assert_eq!(snap.version(), seq);
        // No frame is carried: the pending proposal's frame comes after the record's end.
        let v1 = svc_registry::restore::checkpoint_bytes_with(snap, Some(&[]));
        assert!(v1.starts_with(b"{\"registry_id\""), "a version-1 payload");
        svc_registry::log::write_checkpoint(&s.data_dir, &svc_registry::log::OsIo, seq, &v1, 3)
            .unwrap();
    }
    let v1_file = std::fs::read(&file).unwrap();

    // Restored from checkpoint `seq`, with the same HEAD and descriptors as before the kill.
    let restored = format!("from_checkpoint={seq} ");
    let same_state = |s: &TestServer, which: &str| {
        assert!(
            s.logs()
                .lines()
                .any(|l| l.contains("msg=\"state restored\"") && l.contains(&restored)),
            "not restored from the {which} checkpoint:\n{}",
            s.logs()
        );
        assert_eq!(s.head(), head);
        assert_eq!(json(&s.get("/registry/descriptors?limit=100")), all);
    };
    let s = s.restart_killed();
    same_state(&s, "version-1");
    let r = s.get(&format!("/proposals/{pending_id}"));
    assert_eq!(r.status, 200, "the pending proposal survives: {}", r.text());

    // Rewritten at once (no commit in between): the same version, payload version 2.
    eventually(
        TIMEOUT,
        "the version-1 checkpoint rewritten as version 2",
        || payload_of(&file).starts_with(b"SVCRST02"),
    );
    let rewritten = payload_of(&file);
    let cp = svc_registry::restore::parse_checkpoint(seq, &rewritten).expect("it parses");
    assert_eq!(cp.payload_version(), 2);
    assert_ne!(std::fs::read(&file).unwrap(), v1_file);

    // And the next start loads the rewritten one.
    let s = s.restart_killed();
    same_state(&s, "rewritten version-2");
}

/// The payload of a checkpoint file whose CRC checks (empty while it is missing, short or being
/// replaced).
fn payload_of(path: &std::path::Path) -> Vec<u8> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    if bytes.len() < 28 {
        return Vec::new();
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body).to_le_bytes() != crc {
        return Vec::new();
    }
    body[24..].to_vec()
}
