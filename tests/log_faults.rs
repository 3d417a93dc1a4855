//! Fault tests of the storage layer (`src/log/`): crash at every write and every sync, injected
//! I/O errors at every call, torn tails at every byte, bit flips, checkpoints, the directory lock
//! and hot backup.
//!
//! Most tests run on `FaultIo` (in memory, models what a power cut keeps); a few run on the real
//! file system in a temp dir where the real thing is the point. The property checked after every
//! fault is the one the service promises: recovery yields a prefix of what was appended that
//! contains everything a sync acknowledged, or refuses with a clear error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use svc_registry::log as storage;
use svc_registry::log::{
    segment_path, FaultIo, FaultKind, LogError, Lsn, Op, Opened, OsIo, StorageOptions,
};

const DATA: &str = "/data";

fn data() -> &'static Path {
    Path::new(DATA)
}

fn opts(segment_bytes: u64) -> StorageOptions {
    StorageOptions {
        segment_bytes,
        checkpoints_kept: 3,
    }
}

fn open_fault(io: &FaultIo, segment_bytes: u64) -> Result<Opened, LogError> {
    storage::open(data(), &opts(segment_bytes), Arc::new(io.clone()))
}

fn open_os(dir: &Path, segment_bytes: u64) -> Result<Opened, LogError> {
    storage::open(dir, &opts(segment_bytes), Arc::new(OsIo))
}

fn seg(index: u64) -> PathBuf {
    segment_path(&storage::log_dir(data()), index)
}

/// Show the storage layer's log lines with `RUST_LOG=warn cargo test -- --nocapture`.
fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

fn payloads(opened: &Opened) -> Vec<Vec<u8>> {
    opened.records.iter().map(|r| r.payload.clone()).collect()
}

/// A small deterministic RNG for workloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Record `i` of workload `seed`: 1..=max_len bytes, content tied to (seed, i).
fn payload(seed: u64, i: usize, max_len: usize) -> Vec<u8> {
    let mut rng = Rng(seed.wrapping_mul(1_000_003) ^ i as u64);
    let len = 1 + rng.below(max_len as u64) as usize;
    (0..len)
        .map(|j| (i as u8).wrapping_mul(31) ^ j as u8)
        .collect()
}

#[derive(Default)]
struct Outcome {
    /// Every append that returned Ok, with the Lsn it returned.
    appended: Vec<(Vec<u8>, Lsn)>,
    /// The highest Lsn a sync returned Ok for.
    acked: Lsn,
    saw_error: bool,
}

/// Appends with a sync after a random group; stops at the first error (the power is off).
fn workload(opened: &mut Opened, seed: u64, records: usize, max_len: usize) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    for i in 0..records {
        let p = payload(seed, i, max_len);
        match opened.writer.append(&p) {
            Ok(lsn) => out.appended.push((p, lsn)),
            Err(_) => {
                out.saw_error = true;
                break;
            }
        }
        if rng.below(3) == 0 || i + 1 == records {
            match opened.syncer.sync_to(opened.writer.end()) {
                Ok(lsn) => out.acked = lsn,
                Err(_) => {
                    out.saw_error = true;
                    break;
                }
            }
        }
    }
    out
}

/// The recovery promise: a prefix of what was appended, with the same Lsns, containing every
/// record a sync acknowledged.
fn check_recovered(opened: &Opened, out: &Outcome, context: &str) {
    let got = &opened.records;
    assert!(
        got.len() <= out.appended.len(),
        "{context}: recovered {} records, only {} were appended",
        got.len(),
        out.appended.len()
    );
    for (i, record) in got.iter().enumerate() {
        assert_eq!(
            record.payload, out.appended[i].0,
            "{context}: record {i} differs"
        );
        assert_eq!(record.lsn, out.appended[i].1, "{context}: record {i} Lsn");
    }
    let acknowledged = out
        .appended
        .iter()
        .take_while(|(_, lsn)| *lsn <= out.acked)
        .count();
    assert!(
        got.len() >= acknowledged,
        "{context}: lost acknowledged records: recovered {} of {acknowledged} (acked lsn {})",
        got.len(),
        out.acked
    );
}

/// After recovery the log must take appends again, and keep them.
fn check_appends_continue(io: &FaultIo, mut opened: Opened, sb: u64, context: &str) {
    let mut expect = payloads(&opened);
    for extra in [&b"after-1"[..], &[7u8; 40][..]] {
        opened
            .writer
            .append(extra)
            .unwrap_or_else(|e| panic!("{context}: append after recovery: {e}"));
        expect.push(extra.to_vec());
    }
    opened.syncer.sync_to(opened.writer.end()).unwrap();
    drop(opened);
    let reopened = open_fault(io, sb).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    assert_eq!(
        payloads(&reopened),
        expect,
        "{context}: after appending more"
    );
    assert!(reopened.truncated_tail.is_none(), "{context}");
}

// ---------------------------------------------------------------------------------------------
// Framing, rolls, reopen.

#[test]
fn records_round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sb = 256;
    let mut opened = open_os(dir.path(), sb).unwrap();
    assert!(opened.records.is_empty() && opened.checkpoint.is_none());
    let mut appended = Vec::new();
    for i in 0..40 {
        let p = payload(1, i, 120);
        let lsn = opened.writer.append(&p).unwrap();
        assert_eq!(lsn, opened.writer.end());
        appended.push((p, lsn));
    }
    // An empty payload and one that fills a segment exactly are records too.
    for p in [Vec::new(), vec![0xAB; storage::payload_bytes_max(sb)]] {
        let lsn = opened.writer.append(&p).unwrap();
        appended.push((p, lsn));
    }
    assert_eq!(
        opened.syncer.sync_to(opened.writer.end()).unwrap(),
        opened.writer.end()
    );
    let end = opened.writer.end();
    assert!(end / sb >= 10, "the workload rolled segments");
    drop(opened);

    let mut opened = open_os(dir.path(), sb).unwrap();
    let got: Vec<_> = opened
        .records
        .iter()
        .map(|r| (r.payload.clone(), r.lsn))
        .collect();
    assert_eq!(got, appended);
    assert!(opened.truncated_tail.is_none());
    assert_eq!(opened.writer.end(), end);
    for r in &opened.records {
        assert!(r.path.starts_with(dir.path().join("log")));
        let frame_start = r.lsn - 16 - r.payload.len() as u64;
        assert_eq!(frame_start % sb, r.offset);
    }
    opened.writer.append(b"more").unwrap();
    opened.syncer.sync_to(u64::MAX).unwrap();
    drop(opened);
    let opened = open_os(dir.path(), sb).unwrap();
    assert_eq!(opened.records.len(), appended.len() + 1);
    assert_eq!(opened.records.last().unwrap().payload, b"more");
    // Every segment has the full preallocated length.
    for entry in std::fs::read_dir(dir.path().join("log")).unwrap() {
        assert_eq!(entry.unwrap().metadata().unwrap().len(), sb);
    }
}

#[test]
fn too_large_is_refused_without_poisoning() {
    let io = FaultIo::new();
    let mut opened = open_fault(&io, 128).unwrap();
    let max = storage::payload_bytes_max(128);
    match opened.writer.append(&vec![1; max + 1]) {
        Err(LogError::TooLarge { len, max: m }) => assert_eq!((len, m), (max + 1, max)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(!opened.writer.poisoned());
    opened.writer.append(&vec![2; max]).unwrap();
}

#[test]
fn concurrent_writer_and_syncer_threads_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sb = 4096;
    let opened = open_os(dir.path(), sb).unwrap();
    let Opened {
        mut writer,
        syncer,
        lock,
        ..
    } = opened;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Lsn>(64);
    let fsync = std::thread::spawn(move || {
        let mut durable = 0;
        while let Ok(first) = rx.recv() {
            let upto = rx.try_iter().fold(first, u64::max);
            durable = syncer.sync_to(upto).unwrap();
            assert!(durable >= upto);
        }
        durable
    });
    let mut expect = Vec::new();
    for i in 0..3000 {
        let p = payload(9, i, 200);
        let lsn = writer.append(&p).unwrap();
        tx.send(lsn).unwrap();
        expect.push(p);
    }
    drop(tx);
    let durable = fsync.join().unwrap();
    assert_eq!(durable, writer.end());
    drop(writer);
    drop(lock);
    let opened = open_os(dir.path(), sb).unwrap();
    assert_eq!(payloads(&opened), expect);
}

#[test]
fn segment_bytes_on_disk_win_over_a_changed_config() {
    let io = FaultIo::new();
    let mut opened = open_fault(&io, 128).unwrap();
    for i in 0..10 {
        opened.writer.append(&payload(3, i, 50)).unwrap();
    }
    opened.syncer.sync_to(u64::MAX).unwrap();
    let expect = payloads(&{
        drop(opened);
        open_fault(&io, 128).unwrap()
    });
    let mut opened = open_fault(&io, 4096).unwrap();
    assert_eq!(payloads(&opened), expect);
    opened.writer.append(b"x").unwrap();
    opened.syncer.sync_to(u64::MAX).unwrap();
    drop(opened);
    let opened = open_fault(&io, 4096).unwrap();
    assert_eq!(opened.records.len(), expect.len() + 1);
}

// ---------------------------------------------------------------------------------------------
// Torn tails and corruption.

/// Ten 40-byte records in 256-byte segments: 4 per segment (4 * 56 + a 16-byte marker), so
/// segments 0 and 1 hold 4 each and segment 2 holds the last two, at offsets 0 and 56.
/// `sync_each`: sync after every append (so each frame vouches for the one before it).
fn ten_records(io: &FaultIo, sync_each: bool) -> Vec<Vec<u8>> {
    let mut opened = open_fault(io, 256).unwrap();
    let mut all = Vec::new();
    for i in 0..10u8 {
        let p = vec![b'a' + i; 40];
        opened.writer.append(&p).unwrap();
        if sync_each {
            opened.syncer.sync_to(u64::MAX).unwrap();
        }
        all.push(p);
    }
    opened.syncer.sync_to(u64::MAX).unwrap();
    assert_eq!(opened.writer.end(), 2 * 256 + 112);
    all
}

#[test]
fn torn_tail_at_every_byte_of_the_last_two_records_recovers_the_prefix() {
    for cut in 0..=112u64 {
        for garbage in [false, true] {
            let context = format!("cut at {cut}, garbage {garbage}");
            let io = FaultIo::new();
            let all = ten_records(&io, true);
            let rest = if garbage {
                // A torn write: garbage up to the end of the last record, zeros after.
                (cut..112)
                    .map(|i| (i as u8).wrapping_mul(151) | 1)
                    .collect()
            } else {
                vec![0u8; (256 - cut) as usize]
            };
            io.corrupt(&seg(2), cut, &rest);
            let opened = open_fault(&io, 256).unwrap_or_else(|e| panic!("{context}: {e}"));
            let whole = 8 + usize::from(cut >= 56) + usize::from(cut >= 112);
            assert_eq!(payloads(&opened), all[..whole], "{context}");
            let boundary = cut == 0 || cut == 56 || cut == 112;
            match &opened.truncated_tail {
                None => assert!(
                    boundary && !(garbage && cut < 112),
                    "{context}: no tail reported"
                ),
                Some(tail) => {
                    assert_eq!(tail.path, seg(2), "{context}");
                    assert_eq!(tail.offset, if cut >= 56 { 56 } else { 0 }, "{context}");
                    assert!(tail.removed_segments.is_empty());
                }
            }
            // The cut bytes are zero now, so appends resume at the end of the last whole record.
            let resume = 2 * 256
                + if cut >= 112 {
                    112
                } else if cut >= 56 {
                    56
                } else {
                    0
                };
            assert_eq!(opened.writer.end(), resume, "{context}");
            check_appends_continue(&io, opened, 256, &context);
        }
    }
}

#[test]
fn torn_tail_on_real_files_is_cut_and_appends_resume() {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let mut opened = open_os(dir.path(), 4096).unwrap();
    for i in 0..5 {
        opened.writer.append(&payload(4, i, 100)).unwrap();
    }
    opened.syncer.sync_to(u64::MAX).unwrap();
    let end = opened.writer.end();
    let expect = payloads(&{
        drop(opened);
        open_os(dir.path(), 4096).unwrap()
    });
    // Half a frame of something else after the last record, as a crash mid-append leaves it.
    let path = dir.path().join("log/segment-0000000000.log");
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[9, 0, 0, 0, 1, 2, 3, 4, 5], end)
            .unwrap();
    }
    let mut opened = open_os(dir.path(), 4096).unwrap();
    assert_eq!(payloads(&opened), expect);
    let tail = opened.truncated_tail.clone().expect("a torn tail");
    assert_eq!(
        (tail.path.as_path(), tail.offset, tail.zeroed_bytes),
        (path.as_path(), end, 9)
    );
    opened.writer.append(b"next").unwrap();
    opened.syncer.sync_to(u64::MAX).unwrap();
    drop(opened);
    let opened = open_os(dir.path(), 4096).unwrap();
    assert_eq!(opened.records.len(), expect.len() + 1);
    assert!(opened.truncated_tail.is_none());
}

#[test]
fn bit_flip_in_any_acknowledged_record_refuses_with_file_and_offset() {
    // Records 0..9 are each followed by a frame written after they were durable.
    for record in 0..9u64 {
        let (segment, offset) = (record / 4, (record % 4) * 56);
        // Bytes of the length, checksum, durable mark and payload.
        for at in [0, 5, 9, 16, 55] {
            let io = FaultIo::new();
            ten_records(&io, true);
            io.flip_bit(&seg(segment), offset + at, (at % 8) as u8);
            match open_fault(&io, 256) {
                Err(LogError::Corrupt {
                    path,
                    offset: got,
                    reason,
                }) => {
                    assert_eq!(path, seg(segment), "record {record} byte {at}");
                    assert_eq!(got, offset, "record {record} byte {at}: {reason}");
                    let message = LogError::Corrupt {
                        path: path.clone(),
                        offset: got,
                        reason,
                    }
                    .to_string();
                    assert!(message.contains("segment-0000000000") || segment > 0);
                    assert!(message.contains(&format!("offset {offset}")), "{message}");
                }
                other => panic!(
                    "record {record} byte {at}: expected Corrupt, got {:?}",
                    other.map(|o| o.records.len())
                ),
            }
        }
    }
}

#[test]
fn a_lost_roll_marker_is_corruption_when_later_frames_vouch_for_it() {
    let io = FaultIo::new();
    ten_records(&io, true);
    io.corrupt(&seg(0), 224, &[0u8; 16]); // the marker sealing segment 0
    match open_fault(&io, 256) {
        Err(LogError::Corrupt { path, offset, .. }) => assert_eq!((path, offset), (seg(0), 224)),
        other => panic!("expected Corrupt, got {:?}", other.map(|o| o.records.len())),
    }
}

#[test]
fn damage_in_the_final_group_commit_is_indistinguishable_from_a_torn_tail() {
    init_logs();
    // All ten records were made durable by one final sync, so no frame vouches for record 5:
    // damage there looks exactly like writes of that batch that never landed, and is cut. This is
    // the documented limit of recovery (recovery.rs); any later sync would have exposed it.
    let io = FaultIo::new();
    let all = ten_records(&io, false);
    io.flip_bit(&seg(1), 56 + 20, 3); // record 5
    let opened = open_fault(&io, 256).unwrap();
    assert_eq!(payloads(&opened), all[..5]);
    let tail = opened.truncated_tail.as_ref().unwrap();
    assert_eq!((tail.path.clone(), tail.offset), (seg(1), 56));
    assert_eq!(tail.removed_segments, vec![seg(2)]);
    assert!(io.read_file(&seg(2)).is_none());
    check_appends_continue(&io, opened, 256, "after cutting across segments");
}

#[test]
fn a_missing_segment_is_corruption() {
    let io = FaultIo::new();
    ten_records(&io, true);
    use storage::Io;
    io.remove(&seg(1)).unwrap();
    match open_fault(&io, 256) {
        Err(e @ LogError::Corrupt { .. }) => {
            let LogError::Corrupt { path, .. } = &e else {
                unreachable!()
            };
            assert_eq!(path, &seg(1));
            assert!(e.to_string().contains("missing"), "{e}");
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|o| o.records.len())),
    }
}

#[test]
fn an_interrupted_preallocation_is_removed() {
    init_logs();
    let io = FaultIo::new();
    let all = ten_records(&io, true);
    {
        use storage::Io;
        let file = io.create(&seg(3)).unwrap();
        file.write_at(0, &[0u8; 100]).unwrap();
        file.sync().unwrap();
    }
    let opened = open_fault(&io, 256).unwrap();
    assert_eq!(payloads(&opened), all);
    assert!(io.read_file(&seg(3)).is_none());
    check_appends_continue(&io, opened, 256, "after removing a short segment");
}

// ---------------------------------------------------------------------------------------------
// Crashes.

const SB_SMALL: u64 = 256;
const RECORDS: usize = 24;
const LEN_MAX: usize = 60;

/// Mutating calls the workload of `seed` makes after open.
fn mutations_of(seed: u64) -> u64 {
    let io = FaultIo::new();
    let mut opened = open_fault(&io, SB_SMALL).unwrap();
    let before = io.mutations();
    let out = workload(&mut opened, seed, RECORDS, LEN_MAX);
    assert!(!out.saw_error);
    io.mutations() - before
}

#[test]
fn power_cut_at_every_write_and_sync_recovers_a_prefix_with_everything_acknowledged() {
    let mut cases = 0;
    for seed in 0..200u64 {
        // Each seed changes the workload (record sizes, where the syncs fall) and how each
        // pending write lands.
        let total = mutations_of(seed);
        for point in 0..=total {
            let context = format!("seed {seed}, power cut before mutation {point} of {total}");
            let io = FaultIo::new();
            let mut opened = open_fault(&io, SB_SMALL).unwrap();
            io.crash_at_mutation(point);
            let out = workload(&mut opened, seed, RECORDS, LEN_MAX);
            assert_eq!(out.saw_error, point < total, "{context}");
            drop(opened);
            io.crash(seed.wrapping_mul(7919) ^ point);
            let reopened = open_fault(&io, SB_SMALL)
                .unwrap_or_else(|e| panic!("{context}: open refused: {e}"));
            check_recovered(&reopened, &out, &context);
            check_appends_continue(&io, reopened, SB_SMALL, &context);
            cases += 1;
        }
    }
    assert!(cases > 10_000, "{cases}");
}

#[test]
fn process_crash_then_power_cut_keeps_what_recovery_accepted() {
    // A process crash (no power cut) leaves unsynced appends in the page cache; recovery accepts
    // them, so it must make them durable before the caller builds on them.
    for seed in 0..40u64 {
        let total = mutations_of(seed);
        for point in 0..=total {
            let context = format!("seed {seed}, kill before mutation {point}");
            let io = FaultIo::new();
            let mut opened = open_fault(&io, SB_SMALL).unwrap();
            io.crash_at_mutation(point);
            let out = workload(&mut opened, seed, RECORDS, LEN_MAX);
            drop(opened);
            io.kill();
            let first = open_fault(&io, SB_SMALL).unwrap_or_else(|e| panic!("{context}: {e}"));
            check_recovered(&first, &out, &context);
            let seen = payloads(&first);
            drop(first);
            io.crash(seed ^ point);
            let second = open_fault(&io, SB_SMALL).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(
                payloads(&second),
                seen,
                "{context}: recovery's records did not survive"
            );
        }
    }
}

/// A log whose last group commit is damaged in segment 0 (so recovery has to zero bytes and
/// remove two later segments), plus a checkpoint. Returns the records recovery must yield.
fn damaged_log(io: &FaultIo) -> Vec<Vec<u8>> {
    let all = ten_records(io, false);
    storage::write_checkpoint(data(), io, 1, b"state-1", 3).unwrap();
    io.flip_bit(&seg(0), 112 + 20, 3);
    all[..2].to_vec()
}

#[test]
fn power_cut_at_every_write_of_recovery_itself() {
    let probe = FaultIo::new();
    let expect = damaged_log(&probe);
    let before = probe.mutations();
    drop(open_fault(&probe, 256).unwrap());
    let total = probe.mutations() - before;
    assert!(total > 5);
    for point in 0..=total {
        for seed in 0..10 {
            let context = format!("power cut before recovery mutation {point}, seed {seed}");
            let io = FaultIo::new();
            damaged_log(&io);
            io.crash_at_mutation(point);
            let first = open_fault(&io, 256);
            assert_eq!(first.is_err(), point < total, "{context}");
            drop(first);
            io.crash(seed);
            let opened = open_fault(&io, 256).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(payloads(&opened), expect, "{context}");
            assert_eq!(opened.checkpoint.as_ref().unwrap().payload, b"state-1");
            check_appends_continue(&io, opened, 256, &context);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Injected errors.

fn kinds_for(op: Op) -> Vec<FaultKind> {
    let mut kinds = vec![FaultKind::Eio, FaultKind::Enospc];
    if op.is_sync() {
        kinds.extend([FaultKind::SyncFailedPersisted, FaultKind::SyncFailedLost]);
    }
    kinds
}

/// Like `workload`, but carries on after errors, checking that each one surfaces as the right
/// kind and poisons what it must.
fn faulty_workload(opened: &mut Opened, seed: u64, context: &str) -> Outcome {
    let mut rng = Rng(seed);
    let mut out = Outcome::default();
    let mut writer_failed = false;
    let mut sync_failed = false;
    for i in 0..RECORDS {
        let p = payload(seed, i, LEN_MAX);
        match opened.writer.append(&p) {
            Ok(lsn) => {
                assert!(
                    !writer_failed && !sync_failed,
                    "{context}: append after poison"
                );
                out.appended.push((p, lsn));
            }
            Err(LogError::NoSpace { .. }) => {
                out.saw_error = true;
                assert!(
                    !opened.writer.poisoned(),
                    "{context}: NoSpace must not poison"
                );
            }
            Err(LogError::Poisoned) => {
                assert!(
                    writer_failed || sync_failed,
                    "{context}: Poisoned without a cause"
                );
                assert!(opened.writer.poisoned());
            }
            Err(e) => {
                out.saw_error = true;
                writer_failed = true;
                assert!(
                    opened.writer.poisoned(),
                    "{context}: {e} did not poison the writer"
                );
            }
        }
        if rng.below(3) == 0 || i + 1 == RECORDS {
            match opened.syncer.sync_to(opened.writer.end()) {
                Ok(lsn) => {
                    assert!(!sync_failed, "{context}: sync after a failed sync");
                    out.acked = lsn;
                }
                Err(LogError::Poisoned) => assert!(sync_failed, "{context}"),
                Err(e) => {
                    out.saw_error = true;
                    sync_failed = true;
                    assert!(opened.syncer.poisoned(), "{context}: {e}");
                    assert!(matches!(
                        opened.syncer.sync_to(u64::MAX),
                        Err(LogError::Poisoned)
                    ));
                    assert!(matches!(
                        opened.writer.append(b"x"),
                        Err(LogError::Poisoned)
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn an_error_at_any_call_surfaces_poisons_and_loses_nothing_acknowledged() {
    let seed = 11;
    let calls: Vec<(Op, u64)> = {
        let io = FaultIo::new();
        let mut opened = open_fault(&io, SB_SMALL).unwrap();
        let before: Vec<u64> = Op::ALL.iter().map(|&op| io.calls(op)).collect();
        workload(&mut opened, seed, RECORDS, LEN_MAX);
        Op::ALL
            .iter()
            .zip(before)
            .map(|(&op, b)| (op, io.calls(op) - b))
            .collect()
    };
    assert!(calls.iter().any(|&(op, n)| op == Op::Preallocate && n > 1));
    for (op, count) in calls {
        for kind in kinds_for(op) {
            for nth in 0..count {
                for power_cut in [false, true] {
                    let context = format!("{kind:?} at {op:?} call {nth}, power cut {power_cut}");
                    let io = FaultIo::new();
                    let mut opened = open_fault(&io, SB_SMALL).unwrap();
                    io.inject(op, nth, kind);
                    let out = faulty_workload(&mut opened, seed, &context);
                    assert!(out.saw_error, "{context}: the error did not surface");
                    drop(opened);
                    if power_cut {
                        io.crash(nth);
                    } else {
                        io.kill();
                    }
                    let reopened = open_fault(&io, SB_SMALL)
                        .unwrap_or_else(|e| panic!("{context}: open refused: {e}"));
                    check_recovered(&reopened, &out, &context);
                }
            }
        }
    }
}

#[test]
fn no_space_for_a_new_segment_is_an_answer_not_a_failure() {
    let io = FaultIo::new();
    let mut opened = open_fault(&io, 128).unwrap();
    io.inject(Op::Preallocate, 0, FaultKind::Enospc);
    let mut expect = Vec::new();
    let mut refused = 0;
    for i in 0..10 {
        let p = vec![i as u8; 50];
        match opened.writer.append(&p) {
            Ok(_) => expect.push(p),
            Err(LogError::NoSpace { path }) => {
                refused += 1;
                assert_eq!(path, seg(1));
                assert!(io.read_file(&seg(1)).is_none(), "no half-made segment left");
            }
            Err(e) => panic!("{e}"),
        }
        opened.syncer.sync_to(u64::MAX).unwrap();
    }
    assert_eq!(refused, 1);
    assert!(!opened.writer.poisoned());
    drop(opened);
    io.crash(1);
    assert_eq!(payloads(&open_fault(&io, 128).unwrap()), expect);
}

#[test]
fn an_error_during_open_fails_it_cleanly() {
    let probe = FaultIo::new();
    let expect = damaged_log(&probe);
    let before: Vec<u64> = Op::ALL.iter().map(|&op| probe.calls(op)).collect();
    drop(open_fault(&probe, 256).unwrap());
    for (i, &op) in Op::ALL.iter().enumerate() {
        for kind in kinds_for(op) {
            for nth in 0..probe.calls(op) - before[i] {
                let context = format!("{kind:?} at {op:?} call {nth} during open");
                let io = FaultIo::new();
                damaged_log(&io);
                io.inject(op, nth, kind);
                let opened = match open_fault(&io, 256) {
                    Ok(opened) => opened,
                    Err(LogError::Poisoned) => panic!("{context}: Poisoned from open"),
                    Err(_) => {
                        io.crash(nth);
                        open_fault(&io, 256).unwrap_or_else(|e| panic!("{context}: {e}"))
                    }
                };
                assert_eq!(payloads(&opened), expect, "{context}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checkpoints.

#[test]
fn checkpoints_keep_the_newest_and_fall_back_past_corrupt_ones() {
    init_logs();
    let io = FaultIo::new();
    drop(open_fault(&io, 256).unwrap());
    let dir = storage::checkpoints_dir(data());
    let mut paths = Vec::new();
    for seq in 1..=4u64 {
        paths.push(
            storage::write_checkpoint(data(), &io, seq, format!("state-{seq}").as_bytes(), 3)
                .unwrap(),
        );
    }
    let mut names = io.files_in(&dir);
    names.sort();
    assert_eq!(
        names,
        [
            "checkpoint-00000000000000000002.ckpt",
            "checkpoint-00000000000000000003.ckpt",
            "checkpoint-00000000000000000004.ckpt"
        ]
    );
    let checkpoint = open_fault(&io, 256).unwrap().checkpoint.unwrap();
    assert_eq!(
        (checkpoint.seq, checkpoint.payload.as_slice()),
        (4, &b"state-4"[..])
    );
    assert_eq!(checkpoint.path, paths[3]);

    io.flip_bit(&paths[3], 30, 0);
    let checkpoint = open_fault(&io, 256).unwrap().checkpoint.unwrap();
    assert_eq!(
        (checkpoint.seq, checkpoint.payload.as_slice()),
        (3, &b"state-3"[..])
    );

    io.corrupt(&paths[2], 0, b"NOTMAGIC");
    io.corrupt(&paths[1], 8, &99u64.to_le_bytes());
    assert!(open_fault(&io, 256).unwrap().checkpoint.is_none());
    // The unusable files are left for an operator.
    assert_eq!(io.files_in(&dir).len(), 3);
}

#[test]
fn power_cut_at_every_step_of_a_checkpoint_leaves_the_old_or_the_new_one() {
    let probe = FaultIo::new();
    drop(open_fault(&probe, 256).unwrap());
    storage::write_checkpoint(data(), &probe, 1, b"old", 2).unwrap();
    let before = probe.mutations();
    storage::write_checkpoint(data(), &probe, 2, b"new", 1).unwrap();
    let total = probe.mutations() - before;
    for point in 0..=total {
        for seed in 0..20 {
            let io = FaultIo::new();
            drop(open_fault(&io, 256).unwrap());
            storage::write_checkpoint(data(), &io, 1, b"old", 2).unwrap();
            io.crash_at_mutation(point);
            let result = storage::write_checkpoint(data(), &io, 2, b"new", 1);
            io.crash(seed);
            let checkpoint = open_fault(&io, 256).unwrap().checkpoint;
            let got = checkpoint.map(|c| (c.seq, c.payload));
            if result.is_ok() && point >= total {
                assert_eq!(got, Some((2, b"new".to_vec())), "point {point} seed {seed}");
            } else {
                assert!(
                    got == Some((1, b"old".to_vec())) || got == Some((2, b"new".to_vec())),
                    "point {point} seed {seed}: {got:?}"
                );
            }
            // The temp file never survives an open.
            assert!(io
                .files_in(&storage::checkpoints_dir(data()))
                .iter()
                .all(|n| !n.ends_with(".tmp")));
        }
    }
}

#[test]
fn an_error_at_any_call_of_a_checkpoint_leaves_the_old_or_the_new_one() {
    let probe = FaultIo::new();
    drop(open_fault(&probe, 256).unwrap());
    storage::write_checkpoint(data(), &probe, 1, b"old", 1).unwrap();
    let before: Vec<u64> = Op::ALL.iter().map(|&op| probe.calls(op)).collect();
    storage::write_checkpoint(data(), &probe, 2, b"new", 1).unwrap();
    for (i, &op) in Op::ALL.iter().enumerate() {
        for kind in kinds_for(op) {
            for nth in 0..probe.calls(op) - before[i] {
                let context = format!("{kind:?} at {op:?} call {nth} of a checkpoint");
                let io = FaultIo::new();
                drop(open_fault(&io, 256).unwrap());
                storage::write_checkpoint(data(), &io, 1, b"old", 1).unwrap();
                io.inject(op, nth, kind);
                let result = storage::write_checkpoint(data(), &io, 2, b"new", 1);
                if op == Op::Remove {
                    // Pruning an old checkpoint is best effort: logged, not returned.
                    result.as_ref().unwrap();
                } else {
                    assert!(result.is_err(), "{context}: the error did not surface");
                }
                if kind == FaultKind::Enospc && op != Op::Remove {
                    assert!(
                        matches!(
                            result,
                            Err(LogError::NoSpace { .. }) | Err(LogError::Io { .. })
                        ),
                        "{context}"
                    );
                }
                io.crash(nth);
                let got = open_fault(&io, 256)
                    .unwrap()
                    .checkpoint
                    .map(|c| (c.seq, c.payload));
                assert!(
                    got == Some((1, b"old".to_vec())) || got == Some((2, b"new".to_vec())),
                    "{context}: {got:?}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Lock.

#[test]
fn a_second_open_of_a_locked_dir_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = open_os(dir.path(), 4096).unwrap();
    match open_os(dir.path(), 4096) {
        Err(e @ LogError::Locked { .. }) => {
            assert!(e.to_string().contains("LOCK"), "{e}");
            assert!(e.to_string().contains("locked by another process"), "{e}");
        }
        other => panic!("expected Locked, got {:?}", other.map(|o| o.records.len())),
    }
    drop(first);
    open_os(dir.path(), 4096).unwrap();

    let io = FaultIo::new();
    let first = open_fault(&io, 256).unwrap();
    assert!(matches!(open_fault(&io, 256), Err(LogError::Locked { .. })));
    drop(first);
    open_fault(&io, 256).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Backup.

#[test]
fn backup_holds_exactly_the_synced_records_and_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (live, copy) = (dir.path().join("live"), dir.path().join("copy"));
    let sb = 512;
    let mut opened = open_os(&live, sb).unwrap();
    let mut synced = Vec::new();
    for i in 0..30 {
        let p = payload(5, i, 90);
        opened.writer.append(&p).unwrap();
        synced.push(p);
    }
    opened.syncer.sync_to(opened.writer.end()).unwrap();
    storage::write_checkpoint(&live, &OsIo, 30, b"snapshot-30", 3).unwrap();
    opened.writer.append(b"appended, not synced").unwrap();
    let upto = opened.syncer.backup(&copy).unwrap();
    assert!(upto < opened.writer.end());
    for i in 0..10 {
        opened.writer.append(&payload(6, i, 90)).unwrap();
    }
    opened.syncer.sync_to(u64::MAX).unwrap();
    assert!(
        matches!(opened.syncer.backup(&copy), Err(LogError::Io { .. })),
        "target must be new"
    );

    let restored = open_os(&copy, sb).unwrap();
    assert_eq!(payloads(&restored), synced);
    assert!(restored.truncated_tail.is_none());
    let checkpoint = restored.checkpoint.as_ref().unwrap();
    assert_eq!(
        (checkpoint.seq, checkpoint.payload.as_slice()),
        (30, &b"snapshot-30"[..])
    );
    assert_eq!(restored.writer.end(), upto);
}

#[test]
fn backup_under_load_has_everything_synced_before_it_began() {
    let dir = tempfile::tempdir().unwrap();
    let (live, copy) = (dir.path().join("live"), dir.path().join("copy"));
    let opened = open_os(&live, 4096).unwrap();
    let Opened {
        mut writer,
        syncer,
        lock,
        ..
    } = opened;
    let background = syncer.clone();
    let load = std::thread::spawn(move || {
        let mut all = Vec::new();
        for i in 0..2000 {
            let p = payload(8, i, 150);
            let lsn = writer.append(&p).unwrap();
            background.sync_to(lsn).unwrap();
            all.push(p);
        }
        all
    });
    while syncer.durable() < 20_000 {
        std::thread::yield_now();
    }
    let durable_before = syncer.durable();
    let upto = syncer.backup(&copy).unwrap();
    assert!(upto >= durable_before);
    let all = load.join().unwrap();
    drop(lock);
    let restored = open_os(&copy, 4096).unwrap();
    let got = payloads(&restored);
    assert_eq!(got, all[..got.len()]);
    assert_eq!(restored.writer.end(), upto);
}

/// The retention window's drop (`LogReader::drop_segments_below`, SPEC §14): removes of the
/// oldest segments, oldest first, then a directory fsync. A power cut (any seed) or a process
/// crash before each of those mutations must leave a log that opens, starts at a segment at or
/// below the cut, has no gap, and holds exactly the records of the segments still there — the
/// newest ones all included.
#[test]
fn power_cut_or_kill_at_every_step_of_a_segment_drop_leaves_a_gap_free_suffix() {
    const SB: u64 = 256;
    const CUT: u64 = 5;
    let mut cases = 0;
    for seed in 0..40u64 {
        for power_cut in [true, false] {
            for point in 0.. {
                let context =
                    format!("seed {seed}, power cut {power_cut}, before mutation {point}");
                let io = FaultIo::new();
                let mut opened = open_fault(&io, SB).unwrap();
                let mut appended = Vec::new();
                for i in 0..80 {
                    let p = payload(seed, i, 40);
                    let lsn = opened.writer.append(&p).unwrap();
                    appended.push((p, lsn));
                }
                opened.syncer.sync_to(opened.writer.end()).unwrap();
                assert!(
                    opened.writer.end() / SB > CUT + 1,
                    "{context}: log too short"
                );
                io.crash_at_mutation(point);
                let dropped = opened.reader.drop_segments_below(CUT);
                let finished = dropped.is_ok() && !io.powered_off();
                drop(opened);
                if power_cut {
                    io.crash(seed.wrapping_mul(31) ^ point);
                } else {
                    io.kill();
                }
                let reopened =
                    open_fault(&io, SB).unwrap_or_else(|e| panic!("{context}: open refused: {e}"));
                let first = reopened.first_segment;
                assert!(first <= CUT, "{context}: starts at segment {first}");
                if finished {
                    assert_eq!(first, CUT, "{context}: a finished drop is durable");
                }
                let want: Vec<Vec<u8>> = appended
                    .iter()
                    .filter(|(p, lsn)| (lsn - p.len() as u64 - 16) / SB >= first)
                    .map(|(p, _)| p.clone())
                    .collect();
                assert_eq!(payloads(&reopened), want, "{context}");
                cases += 1;
                if finished {
                    break;
                }
            }
        }
    }
    assert!(cases > 200, "{cases}");
}
