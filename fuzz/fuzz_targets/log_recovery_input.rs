//! The `log_recovery` fuzz target's input, run once: shared by the libFuzzer target
//! (`fuzz_targets/log_recovery.rs`) and by `tests/fuzz_corpus.rs`, which replays every committed
//! seed through it in a plain `cargo test` (so the seeds are checked without cargo-fuzz).
//!
//! Log recovery over arbitrary segment files: frame decoding and the recovery scan
//! (`src/log/recovery.rs`), on the in-memory `FaultIo` file system.
//!
//! Input: `[sb selector] [mode] rest…`. Mode 0 cuts `rest` into raw segment images (the last one
//! may be short). Other modes read `rest` as a little program that writes well-formed frames,
//! roll markers, zero gaps, and (only in "dirty" programs) garbage bytes and bit flips, so the
//! fuzzer reaches deep into the decision table without having to forge CRCs.
//!
//! Checked for every input: no panic; on success the log reopens to exactly the same records
//! with nothing more cut (the repair is idempotent) and keeps an appended record. For programs
//! without garbage the recovered records are a prefix of the frames written, a clean program
//! recovers every record, and a frame that vouches for a cut position (durable mark above it)
//! makes recovery refuse rather than cut.

use std::path::Path;
use std::sync::Arc;
use svc_registry::log::{self as storage, FaultIo, Io, LogError, StorageOptions};

const DATA: &str = "/data";
const HEADER: u64 = 16;
const MAX_SEGMENTS: usize = 8;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn frame_crc(len: u32, durable: u64, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &durable.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

fn header(len: u32, durable: u64, payload: &[u8]) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&frame_crc(len, durable, payload).to_le_bytes());
    h[8..16].copy_from_slice(&durable.to_le_bytes());
    h
}

/// A frame the program wrote: its Lsn (start), durable mark, and payload for records.
struct Written {
    position: u64,
    durable: u64,
    payload: Option<Vec<u8>>,
}

#[derive(Default)]
struct Program {
    segments: Vec<Vec<u8>>,
    frames: Vec<Written>,
    /// Garbage bytes or bit flips were written: no oracle beyond "no panic, idempotent".
    dirty: bool,
    /// Zero gaps, segment switches without a marker, a short last segment, invalid marks.
    damaged: bool,
}

impl Program {
    /// Seal the last segment with a roll marker at `offset` (given its durable mark when a
    /// header fits there) and go on in a new segment, as the writer does.
    fn roll(&mut self, sb: u64, offset: u64, position: u64, durable: Option<u64>) {
        if let Some(durable) = durable {
            let last = self.segments.last_mut().expect("a segment");
            last[offset as usize..][..16].copy_from_slice(&header(u32::MAX, durable, &[]));
            self.frames.push(Written {
                position,
                durable,
                payload: None,
            });
        }
        self.segments.push(vec![0u8; sb as usize]);
    }

    fn build(sb: u64, input: &mut Input<'_>) -> Program {
        let mut p = Program {
            segments: vec![vec![0u8; sb as usize]],
            ..Program::default()
        };
        let mut offset = 0u64;
        while !input.is_empty() {
            let index = p.segments.len() as u64 - 1;
            let position = index * sb + offset;
            let op = input.u8();
            // The durable mark: mostly a valid one (at most the frame's own position).
            let mark = |input: &mut Input<'_>, p: &mut Program| -> u64 {
                match input.u8() % 8 {
                    0 => 0,
                    1..=3 => position,
                    4 | 5 => position.saturating_sub(u64::from(input.u8()) * 16),
                    6 => {
                        p.damaged = true;
                        position + 1 + u64::from(input.u8())
                    }
                    _ => p.frames.last().map_or(0, |f| f.durable),
                }
            };
            match op % 8 {
                // A record, rolling like the writer does when it does not fit.
                0..=3 => {
                    let len = usize::from(input.u8()) + if op & 0x80 != 0 { 256 } else { 0 };
                    let mut payload = input.take(len);
                    payload.resize(len, b'x');
                    if HEADER + len as u64 > sb {
                        continue;
                    }
                    if offset + HEADER + len as u64 > sb {
                        if p.segments.len() == MAX_SEGMENTS {
                            break;
                        }
                        let durable = (sb - offset >= HEADER).then(|| mark(input, &mut p));
                        p.roll(sb, offset, position, durable);
                        offset = 0;
                        continue;
                    }
                    let durable = mark(input, &mut p);
                    let h = header(len as u32, durable, &payload);
                    let seg = &mut p.segments[index as usize];
                    seg[offset as usize..][..16].copy_from_slice(&h);
                    seg[(offset + HEADER) as usize..][..len].copy_from_slice(&payload);
                    p.frames.push(Written {
                        position,
                        durable,
                        payload: Some(payload),
                    });
                    offset += HEADER + len as u64;
                }
                // Seal the segment with a roll marker and go on in the next one.
                4 => {
                    if p.segments.len() == MAX_SEGMENTS {
                        break;
                    }
                    let durable = (sb - offset >= HEADER).then(|| mark(input, &mut p));
                    p.roll(sb, offset, position, durable);
                    offset = 0;
                }
                // A zero gap (a lost write inside the unsynced suffix).
                5 => {
                    p.damaged = true;
                    offset = (offset + u64::from(input.u8()) + 1).min(sb);
                }
                // Garbage bytes at the cursor.
                6 => {
                    p.dirty = true;
                    let n = usize::from(input.u8() % 64);
                    let bytes = input.take(n);
                    let seg = &mut p.segments[index as usize];
                    let end = (offset as usize + bytes.len()).min(sb as usize);
                    seg[offset as usize..end].copy_from_slice(&bytes[..end - offset as usize]);
                    offset = end as u64;
                }
                // Flip one bit anywhere already written.
                _ => {
                    p.dirty = true;
                    let seg = usize::from(input.u8()) % p.segments.len();
                    let at = (usize::from(input.u8()) << 8 | usize::from(input.u8())) % sb as usize;
                    p.segments[seg][at] ^= 1 << (input.u8() % 8);
                }
            }
        }
        p
    }
}

fn write_segments(io: &FaultIo, segments: &[Vec<u8>]) {
    let log = storage::log_dir(Path::new(DATA));
    io.create_dir_all(&log).unwrap();
    for (i, bytes) in segments.iter().enumerate() {
        let path = storage::segment_path(&log, i as u64);
        let file = io.create(&path).unwrap();
        file.write_at(0, bytes).unwrap();
        file.sync().unwrap();
    }
    io.sync_dir(&log).unwrap();
    io.sync_dir(Path::new(DATA)).unwrap();
}

fn open(io: &FaultIo, sb: u64) -> Result<storage::Opened, LogError> {
    storage::open(
        Path::new(DATA),
        &StorageOptions {
            segment_bytes: sb,
            checkpoints_kept: 2,
        },
        Arc::new(io.clone()),
    )
}

fn records(o: &storage::Opened) -> Vec<(u64, Vec<u8>)> {
    o.records
        .iter()
        .map(|r| (r.lsn, r.payload.clone()))
        .collect()
}

/// One input, as libFuzzer gives it (see the module doc for what is checked).
pub fn run(data: &[u8]) {
    let mut input = Input(data);
    let sb = 64 * (1 + u64::from(input.u8() % 16));
    let mode = input.u8();
    let configured = if mode & 0x10 != 0 {
        64 * (1 + u64::from(mode >> 5))
    } else {
        sb
    };
    let io = FaultIo::new();
    let program = if mode % 4 == 0 {
        // Raw segment images.
        let rest = input.take(usize::MAX);
        let segments: Vec<Vec<u8>> = rest
            .chunks(sb as usize)
            .take(MAX_SEGMENTS)
            .map(<[u8]>::to_vec)
            .collect();
        Program {
            segments,
            dirty: true,
            ..Program::default()
        }
    } else {
        let mut p = Program::build(sb, &mut input);
        if mode & 0x08 != 0 {
            // An interrupted preallocation: the last segment is short.
            p.damaged = true;
            let last_index = p.segments.len() as u64 - 1;
            let keep = u64::from(mode >> 5) * sb / 8;
            p.segments
                .last_mut()
                .expect("one segment at least")
                .truncate(keep as usize);
            // Frames that no longer fit in the file are gone.
            p.frames.retain(|f| {
                let len = HEADER + f.payload.as_ref().map_or(0, |p| p.len() as u64);
                f.position + len <= last_index * sb + keep || f.position < last_index * sb
            });
        }
        p
    };
    write_segments(&io, &program.segments);
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "sb {sb} configured {configured} dirty {} damaged {}",
            program.dirty, program.damaged
        );
        for (i, seg) in program.segments.iter().enumerate() {
            eprintln!("segment {i}: {} bytes", seg.len());
        }
        for f in &program.frames {
            eprintln!(
                "frame at {} durable {} {}",
                f.position,
                f.durable,
                f.payload.as_ref().map_or("marker".to_string(), |p| format!(
                    "record {} bytes",
                    p.len()
                ))
            );
        }
    }

    let opened = match open(&io, configured) {
        Ok(o) => o,
        Err(LogError::Corrupt { .. }) => {
            assert!(
                program.dirty || program.damaged || configured != sb,
                "a clean log was refused as corrupt"
            );
            return;
        }
        Err(e) => panic!("recovery of in-memory files failed with {e}"),
    };
    let got = records(&opened);
    let end = opened.writer.end();
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "recovered {} records, end {end}, tail {:?}",
            got.len(),
            opened.truncated_tail
        );
    }
    for pair in got.windows(2) {
        assert!(pair[0].0 < pair[1].0, "record Lsns must grow");
    }
    if !program.dirty {
        let written: Vec<(u64, &Vec<u8>)> = program
            .frames
            .iter()
            .filter_map(|f| {
                f.payload
                    .as_ref()
                    .map(|p| (f.position + HEADER + p.len() as u64, p))
            })
            .collect();
        // Only frames as written can come back, in order, from the first one on.
        assert!(got.len() <= written.len(), "recovery invented records");
        for (g, w) in got.iter().zip(&written) {
            assert_eq!(
                (g.0, &g.1),
                (w.0, w.1),
                "recovered a record that was not written"
            );
        }
        if configured == sb {
            if !program.damaged {
                assert_eq!(got.len(), written.len(), "a clean log lost records");
                assert!(
                    opened.truncated_tail.is_none(),
                    "a clean log had its tail cut"
                );
            }
            // A cut at `end` is only allowed if no intact frame after it vouches for it.
            if opened.truncated_tail.is_some() {
                // (A frame whose own mark is above its position is damage, not a voucher.)
                let intact = |f: &&Written| f.durable <= f.position;
                for f in program
                    .frames
                    .iter()
                    .filter(|f| f.position >= end)
                    .filter(intact)
                {
                    assert!(
                        f.durable <= end,
                        "cut at {end} although the frame at {} says {} was durable",
                        f.position,
                        f.durable
                    );
                }
            }
        }
    }
    let restored = svc_registry::restore::restore("fuzz", None, &opened.records);
    drop(restored);
    drop(opened);

    // The repair is idempotent: the same records, nothing more cut, the same end.
    let mut again = open(&io, configured).expect("a repaired log reopens");
    assert_eq!(records(&again), got, "reopening changed the records");
    assert!(again.truncated_tail.is_none(), "reopening cut more");
    assert_eq!(again.writer.end(), end);
    // And it takes appends again, durably.
    let lsn = match again.writer.append(b"after-recovery") {
        Ok(lsn) => lsn,
        Err(LogError::NoSpace { .. }) => return,
        Err(e) => panic!("append after recovery: {e}"),
    };
    assert_eq!(again.syncer.sync_to(lsn).expect("sync after recovery"), lsn);
    drop(again);
    io.crash(u64::from(data.len() as u32));
    let last = open(&io, configured).expect("reopens after a power cut");
    let mut want = got;
    want.push((lsn, b"after-recovery".to_vec()));
    assert_eq!(records(&last), want, "the appended record did not survive");
}
