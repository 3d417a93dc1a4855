//! The `checkpoint` fuzz target's committed seeds, checked in a plain `cargo test` (cargo-fuzz
//! and nightly are not needed): every file of `fuzz/corpus/checkpoint/` runs once through the
//! target's own entry point (`fuzz/fuzz_targets/checkpoint_input.rs`, compiled here as is), and
//! the seeds made by the real encoders are what those encoders write today.
//!
//! Invariant: the seeds named `writer-*` are produced by the crate's checkpoint encoders
//! (`restore::checkpoint_payload`, version 2, what the server writes; `restore::checkpoint_bytes…`,
//! version 1, what earlier builds wrote) and its file writer (`log::write_checkpoint`), never
//! typed by hand, so the fuzzer starts inside the version-2 reader. After a deliberate format
//! change, rewrite them with `FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_corpus` and commit them
//! (the other seeds come from `python3 fuzz/seeds.py`).

#[path = "../fuzz/fuzz_targets/common/mod.rs"]
mod common;

#[path = "../fuzz/fuzz_targets/checkpoint_input.rs"]
mod checkpoint_input;

use checkpoint_input::{fixture, run};
use std::path::{Path, PathBuf};
use svc_registry::log::{checkpoints_dir, write_checkpoint, OsIo};
use svc_registry::restore;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/checkpoint")
}

/// Input modes of the target (see `checkpoint_input.rs`).
const PAYLOAD: u8 = 0;
/// A checkpoint file under its right name, its bytes given whole.
const FILE_RAW: u8 = 0x80 | 0x40;
/// A checkpoint file under its right name, framed (header, CRC) by the target.
const FILE_FRAMED: u8 = 0x80 | 0x40 | 0x20;

/// The checkpoint file `log::write_checkpoint` writes for `payload` at `seq`, byte for byte.
fn written_file(seq: u64, payload: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(checkpoints_dir(dir.path())).expect("checkpoints dir");
    let path = write_checkpoint(dir.path(), &OsIo, seq, payload, 1).expect("write a checkpoint");
    std::fs::read(path).expect("read it back")
}

fn input(mode: u8, seq: u64, rest: &[u8]) -> Vec<u8> {
    let mut v = vec![mode, seq as u8];
    v.extend_from_slice(rest);
    v
}

/// The seeds the real writers make, by name, over the target's fixed chain (4 versions: nodes
/// and services put, then a node deleted and a region put at version 4).
fn writer_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let (_, snaps) = fixture();
    let none: &[svc_registry::domain::pending::PendingFrame] = &[];
    let v2_empty = restore::checkpoint_payload(&snaps[0], Some(none));
    let v2_two = restore::checkpoint_payload(&snaps[2], None);
    let v2_all_kinds = restore::checkpoint_payload(&snaps[4], Some(none));
    let v1_three = restore::checkpoint_bytes_with(&snaps[3], Some(none));
    vec![
        // Version 2: the empty state (genesis), nodes and services, then all three kinds.
        ("writer-v2-payload-empty", input(PAYLOAD, 0, &v2_empty)),
        ("writer-v2-payload-seq2", input(PAYLOAD, 2, &v2_two)),
        ("writer-v2-payload-seq4", input(PAYLOAD, 4, &v2_all_kinds)),
        (
            "writer-v2-file-framed-seq4",
            input(FILE_FRAMED, 4, &v2_all_kinds),
        ),
        (
            "writer-v2-file-seq4",
            input(FILE_RAW, 4, &written_file(4, &v2_all_kinds)),
        ),
        (
            "writer-v2-file-empty",
            input(FILE_RAW, 0, &written_file(0, &v2_empty)),
        ),
        // Version 1 (what builds before version 2 wrote, still read), as a whole file.
        (
            "writer-v1-file-seq3",
            input(FILE_RAW, 3, &written_file(3, &v1_three)),
        ),
    ]
}

/// The committed `writer-*` seeds are exactly what the encoders write now (or are rewritten,
/// with `FUZZ_SEEDS_WRITE=1`), and cover the version-2 reader: each parses as the payload
/// version its name says.
#[test]
fn checkpoint_writer_seeds_are_what_the_writers_write() {
    let rewrite = std::env::var_os("FUZZ_SEEDS_WRITE").is_some_and(|v| v == "1");
    for (name, bytes) in writer_seeds() {
        let path = corpus().join(name);
        if rewrite {
            std::fs::write(&path, &bytes).expect("write a seed");
            continue;
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (write the seeds with FUZZ_SEEDS_WRITE=1 cargo test --test fuzz_corpus)",
                path.display()
            )
        });
        assert!(
            committed == bytes,
            "{name} is not what the writer makes now: rewrite with FUZZ_SEEDS_WRITE=1 \
             cargo test --test fuzz_corpus, and commit it"
        );
        // The payload the seed carries, found where the target reads it.
        let (seq, payload) = match bytes[0] {
            PAYLOAD | FILE_FRAMED => (u64::from(bytes[1]), &bytes[2..]),
            _ => (u64::from(bytes[1]), &bytes[2 + 24..bytes.len() - 4]),
        };
        let version = restore::parse_checkpoint(seq, payload)
            .unwrap_or_else(|e| panic!("{name}: the writer's payload does not parse: {e}"))
            .payload_version();
        let want = if name.starts_with("writer-v2") { 2 } else { 1 };
        assert_eq!(version, want, "{name}: payload version");
        // And it is used: the restore starts from it, not from a fallback replay.
        let (recs, _) = fixture();
        let r = restore::restore(common::REGISTRY, Some((seq, payload)), recs)
            .unwrap_or_else(|e| panic!("{name}: does not restore: {e}"));
        assert_eq!(r.from_checkpoint, seq, "{name}");
    }
}

/// Every committed seed of the `checkpoint` target, through the target's entry point: none
/// panics (each checks its own properties, see `checkpoint_input.rs`).
#[test]
fn checkpoint_corpus_replays_through_the_fuzz_target() {
    let mut names: Vec<PathBuf> = std::fs::read_dir(corpus())
        .expect("the checkpoint corpus")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| {
            // libFuzzer's hidden files (`.state` and the like) are not seeds.
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.'))
        })
        .collect();
    names.sort();
    assert!(
        names.iter().any(|p| p.ends_with("writer-v2-payload-seq4")),
        "the corpus has no version-2 seed"
    );
    for path in &names {
        let data = std::fs::read(path).expect("read a seed");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(
            outcome.is_ok(),
            "seed {} fails the checkpoint target",
            path.display()
        );
    }
    assert!(names.len() >= 17, "{} seeds only", names.len());
}
