//! Storage micro-benchmarks: commit-record encode/decode with the frame CRC, appends into the
//! mapped log, and the cost of making a batch of 1 / 8 / 64 records durable on the real disk
//! (a temp dir on the file system `tempfile` picks, normally /tmp), and the checkpoint thread's
//! gathering of pending frames: read back from the log, or fed by the writer (issue 20).
//!
//! Run: `cargo bench --bench storage` (figures in docs/PERFORMANCE.md).

use criterion::{
    black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use svc_registry::domain::pending::{PendingApproval, PendingFrame, PendingFrames};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::{chain, dsse, sha256_hex};
use svc_registry::log::{self as rlog, OsIo, StorageOptions};
use svc_registry::roles::checkpoint::PendingCarry;

const PROPOSAL: &[u8] = br#"{"registry_id":"bench","base_version":41,"ops":[{"op":"put","kind":"node","id":"node-7","body":{"addr":"10.0.0.7:9000","zone":"eu-1","weight":10}}],"note":"a typical single-op proposal of about three hundred bytes, padded with a note to look like the real thing"}"#;

/// A 2-of-3 commit record like the writer appends (≈ 900 bytes of JSON).
fn record() -> CommitRecord {
    let payload: Arc<[u8]> = Arc::from(PROPOSAL);
    let pid = sha256_hex(&payload);
    let sigs = vec![
        ("a".to_string(), dsse::encode_sig(&[7u8; 64])),
        ("b".to_string(), dsse::encode_sig(&[8u8; 64])),
    ];
    let prev = chain::genesis_hash("bench");
    CommitRecord {
        version: 42,
        hash: chain::commit_hash("bench", 42, &prev, &pid, &sigs),
        prev_hash: prev,
        committed_at_ms: 1_767_225_600_123,
        proposal_id: pid,
        payload,
        signatures: sigs,
        descriptors: 1000,
        genesis_signers: None,
    }
}

/// The frame CRC of src/log/segment.rs: CRC32C over len, the durable mark and the payload.
fn frame_crc(len: u32, durable: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &durable.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

fn codec(c: &mut Criterion) {
    let rec = record();
    let bytes = rec.to_json();
    let crc = frame_crc(bytes.len() as u32, 4096, &bytes);
    let mut g = c.benchmark_group("record");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("encode_json_crc", |b| {
        b.iter(|| {
            let payload = black_box(&rec).to_json();
            let crc = frame_crc(payload.len() as u32, 4096, &payload);
            black_box((payload, crc))
        })
    });
    g.bench_function("decode_crc_json", |b| {
        b.iter(|| {
            let payload = black_box(&bytes);
            assert_eq!(frame_crc(payload.len() as u32, 4096, payload), crc);
            black_box(CommitRecord::from_json(payload).unwrap())
        })
    });
    g.bench_function("decode_crc_json_verify_link", |b| {
        b.iter(|| {
            let payload = black_box(&bytes);
            assert_eq!(frame_crc(payload.len() as u32, 4096, payload), crc);
            let r = CommitRecord::from_json(payload).unwrap();
            assert!(r.verify_link("bench", &r.prev_hash));
            black_box(r)
        })
    });
    g.bench_function("crc32c_only", |b| {
        b.iter(|| frame_crc(bytes.len() as u32, 4096, black_box(&bytes)))
    });
    g.finish();
}

fn opts() -> StorageOptions {
    StorageOptions {
        segment_bytes: 64 * 1024 * 1024,
        checkpoints_kept: 3,
    }
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opened = rlog::open(dir.path(), &opts(), Arc::new(OsIo)).expect("open log");
    let bytes = record().to_json();
    let mut g = c.benchmark_group("log");
    g.throughput(Throughput::Bytes(bytes.len() as u64 + 16));
    // No sync: the memcpy into the map plus framing. Segment rolls (fallocate + fsync of a new
    // 64 MiB file every ~70k records) are included, amortized, as in production.
    g.bench_function("append_mapped_no_sync", |b| {
        b.iter(|| opened.writer.append(black_box(&bytes)).unwrap())
    });
    g.finish();
    drop(opened);
}

fn sync_batches(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opened = rlog::open(dir.path(), &opts(), Arc::new(OsIo)).expect("open log");
    let bytes = record().to_json();
    let mut g = c.benchmark_group("log_append_then_sync_batch");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    for batch in [1usize, 8, 64] {
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &n| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut lsn = 0;
                    for _ in 0..n {
                        lsn = opened.writer.append(&bytes).unwrap();
                    }
                    opened.syncer.sync_to(lsn).unwrap();
                    total += started.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    drop(opened);
}

/// Commits per gathering: the checkpoint thread gathers every `checkpoint_every_commits`
/// (10,000 by default); 1,000 keeps a sample short and the cost is per frame either way.
const CARRY_COMMITS: u64 = 1_000;

/// The pending frames of `CARRY_COMMITS` three-step 2-of-3 commits (a proposal frame and two
/// approvals frames each, as `/propose` and two `/approve`s append them), with where each
/// ends in a log that holds them and the commit records, and that log's end.
fn three_step_log(opened: &mut rlog::Opened) -> (Vec<(u64, PendingFrame, Option<u64>)>, u64) {
    let record = record().to_json();
    let approval = |id: &str, seed: u8| PendingFrame::Approvals {
        proposal_id: id.to_string(),
        approvals: vec![PendingApproval {
            keyid: format!("signer-{seed}"),
            public_key: hex::encode([seed; 32]),
            sig: dsse::encode_sig(&[seed; 64]),
        }],
    };
    let mut frames = Vec::new();
    let mut end = 0;
    for base in 0..CARRY_COMMITS {
        let payload = String::from_utf8_lossy(PROPOSAL)
            .replace("\"base_version\":41", &format!("\"base_version\":{base}"));
        let id = sha256_hex(payload.as_bytes());
        let proposal = PendingFrame::Proposal {
            proposal_id: id.clone(),
            payload: dsse::b64(payload.as_bytes()),
            expires_at: 1_767_225_600,
        };
        for (frame, base) in [
            (proposal, Some(base)),
            (approval(&id, 1), None),
            (approval(&id, 2), None),
        ] {
            let at = opened.writer.append(&frame.to_bytes()).unwrap();
            frames.push((at, frame, base));
        }
        end = opened.writer.append(&record).unwrap();
    }
    (frames, end)
}

fn pending_carry(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opened = rlog::open(dir.path(), &opts(), Arc::new(OsIo)).expect("open log");
    let start = opened.writer.end();
    let (frames, end) = three_step_log(&mut opened);
    // Every proposal committed: the head is past every base, as at a checkpoint.
    let head = CARRY_COMMITS + 1;
    let carry = |reader: &Arc<rlog::LogReader>| PendingCarry {
        reader: reader.clone(),
        scanned_to: start,
        frames: PendingFrames::default(),
        feed: None,
    };
    let mut g = c.benchmark_group("pending_carry_per_commit");
    g.throughput(Throughput::Elements(CARRY_COMMITS));
    // Before issue 20's change: every frame read back, parsed, its payload decoded and hashed.
    g.bench_function("read_back", |b| {
        b.iter(|| {
            let mut c = carry(&opened.reader);
            assert!(c.carried(end, head, 0).unwrap().is_empty());
        })
    });
    // The floor of any pre-filter that still reads the log: the frames read and checked,
    // nothing parsed.
    g.bench_function("read_back_floor_no_parse", |b| {
        b.iter(|| {
            let mut n = 0;
            opened
                .reader
                .scan(start, end, b"{\"pending\":", &mut |_, p| n += p.len())
                .unwrap();
            black_box(n)
        })
    });
    // A pre-filter by base version: each frame parsed, a proposal's payload decoded and its
    // base_version read, nothing hashed or kept.
    g.bench_function("read_back_prefilter_base_version", |b| {
        #[derive(serde::Deserialize)]
        struct Base {
            base_version: u64,
        }
        b.iter(|| {
            let mut live = 0;
            opened
                .reader
                .scan(start, end, b"{\"pending\":", &mut |_, p| {
                    if let Ok(PendingFrame::Proposal { payload, .. }) = PendingFrame::from_bytes(&p)
                    {
                        let bytes = dsse::unb64(&payload).unwrap();
                        let base: Base = serde_json::from_slice(&bytes).unwrap();
                        live += usize::from(base.base_version >= head);
                    }
                })
                .unwrap();
            assert_eq!(live, 0);
        })
    });
    // After: the checkpoint thread takes the writer's frames from the feed.
    g.bench_function("fed", |b| {
        b.iter_batched(
            || {
                let mut c = carry(&opened.reader);
                let feed = c.feed(frames.len());
                for (at, frame, base) in frames.iter().cloned() {
                    feed.send(at, frame, base);
                }
                (c, feed)
            },
            |(mut c, feed)| {
                assert!(c.carried(end, head, 0).unwrap().is_empty());
                (c, feed)
            },
            BatchSize::LargeInput,
        )
    });
    // The writer's side of the feed: three sends per commit.
    g.bench_function("feed_send_writer_side", |b| {
        b.iter_batched(
            || {
                let mut c = carry(&opened.reader);
                let feed = c.feed(frames.len());
                (c, feed, frames.clone())
            },
            |(c, feed, frames)| {
                for (at, frame, base) in frames {
                    feed.send(at, frame, base);
                }
                (c, feed)
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
    drop(opened);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, append, sync_batches, pending_carry
}
criterion_main!(benches);
