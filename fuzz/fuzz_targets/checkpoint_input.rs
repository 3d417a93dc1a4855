//! The `checkpoint` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/checkpoint.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Input: `[mode] [seq] rest…`. Mode < 128: `rest` is the checkpoint payload given to
//! `restore` directly (either payload version: `parse_checkpoint` sends a version-2 payload,
//! tag `SVCRST02`, through the streamed binary reader). Mode ≥ 128: `rest` becomes a checkpoint
//! file next to a valid log (raw, or framed with a correct CRC so the payload is what is
//! fuzzed), then the data directory is opened and restored the way `storage::open` does
//! (falling back to a full replay when the checkpoint disagrees with the log). Mode bits of a
//! file: 0x40 named for `seq` (else `seq ^ 1`), 0x20 framed here, 0x10 left as a temp file.
//!
//! Invariant checked: no panic; whatever the checkpoint, a restore that succeeds ends at the
//! log's HEAD with the log's hashes (the log is the source of truth); an honest checkpoint (what
//! either encoder writes for that version) restores exactly the full replay; the file path
//! always restores.

use crate::common::{self, chain_of, Rec, REGISTRY};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use svc_registry::log::{self as storage, FaultIo, Io, StorageOptions};
use svc_registry::restore::{self, Restored};
use svc_registry::snapshot::Snapshot;

pub const VERSIONS: u64 = 4;

pub fn fixture() -> &'static (Vec<Rec>, Vec<Snapshot>) {
    static CHAIN: OnceLock<(Vec<Rec>, Vec<Snapshot>)> = OnceLock::new();
    CHAIN.get_or_init(|| chain_of(VERSIONS))
}

/// The restored state must be the log's chain, whatever the checkpoint said.
fn check_chain(r: &Restored, snaps: &[Snapshot]) {
    let head = &snaps[VERSIONS as usize];
    assert_eq!(r.snapshot.version(), VERSIONS);
    assert_eq!(r.snapshot.head.hash, head.head.hash);
    assert_eq!(r.snapshot.history.len(), snaps.len() as u64);
    for (v, want) in snaps.iter().enumerate() {
        let got = r
            .snapshot
            .record(v as u64)
            .expect("history reads back")
            .expect("every version is in the history");
        assert_eq!(got.hash, want.head.hash);
    }
    assert_eq!(
        r.snapshot.descriptors.len() as u64,
        r.snapshot.head.descriptors,
        "descriptor count disagrees with the head record"
    );
}

pub fn framed(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut bytes = b"SVCRCKP1".to_vec();
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    bytes.extend_from_slice(payload);
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Whether `payload` is what one of the encoders writes for `snap`: version 1 (JSON, what
/// earlier builds wrote) or version 2 (what the server writes), with or without the (here
/// empty) pending frames.
fn honest(snap: &Snapshot, payload: &[u8]) -> bool {
    payload == restore::checkpoint_bytes(snap).as_slice()
        || payload == restore::checkpoint_bytes_with(snap, Some(&[])).as_slice()
        || payload == restore::checkpoint_payload(snap, None).as_slice()
        || payload == restore::checkpoint_payload(snap, Some(&[])).as_slice()
}

/// One fuzz input (see the module doc).
pub fn run(data: &[u8]) {
    let (recs, snaps) = fixture();
    let (mode, seq, rest) = match data {
        [m, s, rest @ ..] => (*m, u64::from(*s % (VERSIONS as u8 + 2)), rest),
        _ => return,
    };
    if mode < 128 {
        if let Ok(r) = restore::restore(REGISTRY, Some((seq, rest)), recs) {
            check_chain(&r, snaps);
            assert_eq!(r.from_checkpoint, seq);
            if honest(&snaps[seq as usize], rest) {
                // An honest checkpoint gives exactly the full replay.
                let full = restore::restore(REGISTRY, None, recs).expect("the chain replays");
                assert_eq!(
                    common::descriptor_lines(&r.snapshot),
                    common::descriptor_lines(&full.snapshot)
                );
            }
        }
        return;
    }

    // The file path: a valid log of the fixed chain plus one fuzzed checkpoint file.
    let io = FaultIo::new();
    let data_dir = Path::new("/data");
    let opts = StorageOptions {
        segment_bytes: 4096,
        checkpoints_kept: 2,
    };
    {
        let mut o = storage::open(data_dir, &opts, Arc::new(io.clone())).expect("fresh log");
        for r in recs {
            o.writer.append(&r.0).expect("append");
        }
        o.syncer.sync_to(u64::MAX).expect("sync");
    }
    let dir = storage::checkpoints_dir(data_dir);
    let name_seq = if mode & 0x40 != 0 { seq } else { seq ^ 1 };
    let bytes = if mode & 0x20 != 0 {
        framed(seq, rest)
    } else {
        rest.to_vec()
    };
    let name = if mode & 0x10 != 0 {
        format!("checkpoint-{name_seq:020}.ckpt.tmp")
    } else {
        format!("checkpoint-{name_seq:020}.ckpt")
    };
    let file = io.create(&dir.join(name)).expect("create checkpoint");
    file.write_at(0, &bytes).expect("write checkpoint");
    file.sync().expect("sync checkpoint");
    io.sync_dir(&dir).expect("sync dir");
    drop(file);

    let opened = storage::open(data_dir, &opts, Arc::new(io.clone())).expect("the log reopens");
    // The genesis record, then versions 1..=VERSIONS.
    assert_eq!(opened.records.len() as u64, VERSIONS + 1);
    let cp = opened
        .checkpoint
        .as_ref()
        .map(|c| (c.seq, c.payload.as_slice()));
    if let Some((s, payload)) = cp {
        assert_eq!(s, name_seq, "a checkpoint loaded under another seq");
        if mode & 0x20 != 0 {
            assert_eq!(
                payload, rest,
                "a checkpoint payload that is not what was framed"
            );
        }
        if s <= VERSIONS && honest(&snaps[s as usize], payload) {
            // What a server wrote for this log is used, never set aside for a replay.
            let r = restore::restore(REGISTRY, cp, &opened.records)
                .expect("an honest checkpoint restores");
            assert_eq!(r.from_checkpoint, s);
        }
    }
    // What storage::open does: the checkpoint, else the whole log.
    let restored = restore::restore(REGISTRY, cp, &opened.records)
        .or_else(|_| restore::restore(REGISTRY, None, &opened.records))
        .expect("the log alone always restores");
    check_chain(&restored, snaps);
}
