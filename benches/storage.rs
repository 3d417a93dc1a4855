//! Storage micro-benchmarks: commit-record encode/decode with the frame CRC, appends into the
//! mapped log, and the cost of making a batch of 1 / 8 / 64 records durable on the real disk
//! (a temp dir on the file system `tempfile` picks, normally /tmp).
//!
//! Run: `cargo bench --bench storage` (figures in docs/PERFORMANCE.md).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::sync::Arc;
use std::time::{Duration, Instant};
use svc_registry::domain::record::CommitRecord;
use svc_registry::domain::{chain, dsse, sha256_hex};
use svc_registry::log::{self as rlog, OsIo, StorageOptions};

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

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = codec, append, sync_batches
}
criterion_main!(benches);
