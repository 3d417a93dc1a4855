//! Framing, and the append side (writer) and durability side (syncer) of the segmented log.
//!
//! # Frame format (all integers little-endian)
//!
//! ```text
//! offset 0   u32 len      payload length in bytes; u32::MAX marks a roll marker (no payload)
//! offset 4   u32 crc      CRC32C over bytes 0..4 (len), 8..16 (durable) and the payload
//! offset 8   u64 durable  the Lsn below which the log was durable when this frame was written
//! offset 16  payload      `len` bytes
//! ```
//!
//! Frames are packed back to back from offset 0 of each segment. The CRC covers the length, so a
//! frame whose length was damaged fails its check, and an all-zero header (what a preallocated
//! segment holds past its data) is never a valid frame: the CRC of twelve zero bytes is not zero.
//!
//! The `durable` mark is what lets recovery tell a torn tail from corruption without a second
//! sync per commit: a damaged frame at position P followed (anywhere later) by an intact frame
//! whose mark is above P was durable before that frame was written, so it was acknowledged and
//! has since changed on disk. If no later frame vouches for P, every byte from P on was written
//! after the last sync that could have covered it, and may be cut. See `recovery.rs`.
//!
//! A record is written into the current segment when `16 + len` bytes are left; otherwise the
//! writer rolls: it reserves the next segment (fallocate, before mapping), then seals the old one
//! with a roll marker if 16 bytes are left, so recovery can tell "the data continues in the next
//! segment" from "the last frames of this segment were lost".
//!
//! # Ownership
//!
//! [`LogWriter`] is owned by the writer thread: it alone writes bytes into the maps, always at or
//! past `appended`. [`Syncer`] (cloned freely) is used by the fsync thread: it only asks the kernel
//! to write back ranges below `appended`, and never touches the bytes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::error::{is_no_space, LogError};
use super::io::{Io, MapSyncer, MapWriter};
use super::Lsn;

/// Bytes in a frame header.
pub const FRAME_HEADER_BYTES: u64 = 16;
/// The `len` value of a roll marker.
pub(crate) const ROLL_MARKER_LEN: u32 = u32::MAX;
/// The smallest segment accepted (tests use tiny segments; the config demands 64 KiB).
pub const SEGMENT_BYTES_MIN: u64 = 4 * FRAME_HEADER_BYTES;

/// The largest payload a segment of `segment_bytes` can hold.
pub fn payload_bytes_max(segment_bytes: u64) -> usize {
    let fits = segment_bytes.saturating_sub(FRAME_HEADER_BYTES);
    fits.min(u64::from(ROLL_MARKER_LEN - 1))
        .try_into()
        .unwrap_or(usize::MAX)
}

pub(crate) fn frame_crc(len: u32, durable: Lsn, payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c(&len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &durable.to_le_bytes());
    crc32c::crc32c_append(crc, payload)
}

/// The 16-byte header of a record frame (or, with `len == ROLL_MARKER_LEN` and no payload, a
/// roll marker).
pub(crate) fn encode_header(len: u32, durable: Lsn, payload: &[u8]) -> [u8; 16] {
    let mut header = [0u8; 16];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..8].copy_from_slice(&frame_crc(len, durable, payload).to_le_bytes());
    header[8..16].copy_from_slice(&durable.to_le_bytes());
    header
}

/// A decoded header; not yet checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub durable: Lsn,
}

pub(crate) fn decode_header(bytes: &[u8]) -> Header {
    assert!(bytes.len() >= 16);
    Header {
        len: u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")),
        crc: u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")),
        durable: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
    }
}

pub(crate) const SEGMENT_PREFIX: &str = "segment-";
pub(crate) const SEGMENT_SUFFIX: &str = ".log";

/// `log_dir/segment-{index:010}.log`
pub fn segment_path(log_dir: &Path, index: u64) -> PathBuf {
    log_dir.join(format!("{SEGMENT_PREFIX}{index:010}{SEGMENT_SUFFIX}"))
}

/// The index of a segment file name, or None if the name is not one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A segment the syncer may still have to write back.
pub(crate) struct SyncSegment {
    pub index: u64,
    pub path: PathBuf,
    pub map: Arc<dyn MapSyncer>,
    /// Has the log directory been fsynced since this segment file was created?
    pub dir_synced: bool,
}

/// State shared by the writer, the syncers and backups.
pub(crate) struct Shared {
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub io: Arc<dyn Io>,
    /// Fixed for the life of the log (taken from the existing segments at open).
    pub segment_bytes: u64,
    /// Lsn just past the last whole frame written. Stored only by the writer thread (Release),
    /// after the frame's bytes are in the map.
    pub appended: AtomicU64,
    /// Everything below this Lsn is durable. Stored only by a syncer holding `sync_lock`.
    pub durable: AtomicU64,
    /// Set by the first failed sync and never cleared (no retry on the same data: fsyncgate).
    pub sync_poisoned: AtomicBool,
    /// Segments that may hold bytes that are not yet durable, oldest first. The writer pushes on
    /// roll; the syncer pops segments once they are durable to their end.
    pub segments: Mutex<VecDeque<SyncSegment>>,
    /// One sync at a time, so `durable` only grows and a failure is seen by every later caller.
    pub sync_lock: Mutex<()>,
    /// The reader's retention lock (`read.rs`): a backup holds it so no segment is dropped
    /// while it copies.
    pub retention_lock: Arc<Mutex<()>>,
}

impl Shared {
    pub(crate) fn segment_of(&self, lsn: Lsn) -> u64 {
        lsn / self.segment_bytes
    }
}

/// The append side of the log. Owned by the writer thread.
pub struct LogWriter {
    shared: Arc<Shared>,
    /// Index of the segment being appended to.
    index: u64,
    /// Next write offset inside it; `segment_bytes` when it is sealed or full.
    offset: u64,
    map: Box<dyn MapWriter>,
    poisoned: bool,
}

impl LogWriter {
    pub(crate) fn new(
        shared: Arc<Shared>,
        index: u64,
        offset: u64,
        map: Box<dyn MapWriter>,
    ) -> LogWriter {
        assert_eq!(
            map.size(),
            shared.segment_bytes,
            "mapped segment has the wrong length"
        );
        assert!(offset <= shared.segment_bytes);
        LogWriter {
            shared,
            index,
            offset,
            map,
            poisoned: false,
        }
    }

    /// Append one record and return the Lsn just past it. Not durable until a [`Syncer`] covers
    /// that Lsn.
    ///
    /// Errors: [`LogError::TooLarge`] and [`LogError::NoSpace`] change nothing and leave the
    /// writer usable (answer 413/507 and carry on). Every other error poisons the writer: bytes
    /// may be half written, so every later call returns [`LogError::Poisoned`]. Once a sync has
    /// failed, appends return `Poisoned` too.
    pub fn append(&mut self, payload: &[u8]) -> Result<Lsn, LogError> {
        if self.poisoned || self.shared.sync_poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let max = payload_bytes_max(self.shared.segment_bytes);
        if payload.len() > max {
            return Err(LogError::TooLarge {
                len: payload.len(),
                max,
            });
        }
        let frame_bytes = FRAME_HEADER_BYTES + payload.len() as u64;
        if self.offset + frame_bytes > self.shared.segment_bytes {
            self.roll()?;
        }
        let durable = self.shared.durable.load(Ordering::Acquire);
        debug_assert!(durable <= self.end());
        let header = encode_header(payload.len() as u32, durable, payload);
        let written = self
            .map
            .write(self.offset + FRAME_HEADER_BYTES, payload)
            .and_then(|()| self.map.write(self.offset, &header));
        if let Err(err) = written {
            return Err(self.poison(LogError::io("append", self.path(), err)));
        }
        self.offset += frame_bytes;
        let end = self.end();
        self.shared.appended.store(end, Ordering::Release);
        Ok(end)
    }

    /// The Lsn just past everything written (including a roll marker, if the segment is sealed).
    pub fn end(&self) -> Lsn {
        self.index * self.shared.segment_bytes + self.offset
    }

    /// Has an error stopped this writer?
    pub fn poisoned(&self) -> bool {
        self.poisoned || self.shared.sync_poisoned.load(Ordering::Acquire)
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.shared.log_dir, self.index)
    }

    fn poison(&mut self, err: LogError) -> LogError {
        log::error!("msg=\"log writer stopped\" error=\"{err}\"");
        self.poisoned = true;
        err
    }

    /// Move to a fresh segment. On `NoSpace` nothing has changed (the new file is not left behind
    /// and the old segment is not sealed), so a later append may retry.
    fn roll(&mut self) -> Result<(), LogError> {
        let sb = self.shared.segment_bytes;
        let next = self.index + 1;
        let path = segment_path(&self.shared.log_dir, next);
        // Reserve before mapping: a full disk is an error here, never a SIGBUS later.
        if let Err(err) = self.shared.io.create_preallocated(&path, sb) {
            if is_no_space(&err) {
                log::warn!(
                    "msg=\"no space for a new log segment\" path={} bytes={sb}",
                    path.display()
                );
                return Err(LogError::NoSpace { path });
            }
            return Err(self.poison(LogError::io("fallocate", path, err)));
        }
        let (map, map_syncer) = match self.shared.io.map(&path) {
            Ok(halves) => halves,
            Err(err) => return Err(self.poison(LogError::io("mmap", path, err))),
        };
        assert_eq!(map.size(), sb, "new segment has the wrong length");
        if sb - self.offset >= FRAME_HEADER_BYTES {
            let durable = self.shared.durable.load(Ordering::Acquire);
            let marker = encode_header(ROLL_MARKER_LEN, durable, &[]);
            if let Err(err) = self.map.write(self.offset, &marker) {
                return Err(self.poison(LogError::io("append", self.path(), err)));
            }
        }
        // Pushed before `appended` moves into the new segment (Release), so a syncer that sees
        // the new Lsn also finds the segment.
        self.shared.segments.lock().push_back(SyncSegment {
            index: next,
            path,
            map: map_syncer,
            dir_synced: false,
        });
        self.index = next;
        self.offset = 0;
        self.map = map;
        Ok(())
    }
}

/// The durability side of the log: used by the fsync thread (and by backups). Cheap to clone.
///
/// Durability is `msync(MS_SYNC)` of exactly the range written since the last sync, segment by
/// segment (`MmapRaw::flush_range`). On Linux that is `vfs_fsync_range(datasync)`: the written
/// pages plus whatever metadata is needed to read them back (e.g. the conversion of preallocated
/// extents), i.e. a ranged fdatasync without a separate fd.
#[derive(Clone)]
pub struct Syncer {
    pub(crate) shared: Arc<Shared>,
}

impl Syncer {
    /// Make everything appended below `lsn` durable; returns the Lsn actually covered (at most
    /// what has been appended; at least what was already durable). Pass values returned by
    /// [`LogWriter::append`].
    ///
    /// Sticky failure: the first error poisons the syncer and every later call returns
    /// [`LogError::Poisoned`]. A failed sync is never retried on the same data: after a failed
    /// write-back the kernel may have marked the pages clean, and a second sync would "succeed"
    /// without writing them (the fsyncgate studies, 2018-2020).
    pub fn sync_to(&self, lsn: Lsn) -> Result<Lsn, LogError> {
        let shared = &self.shared;
        if shared.sync_poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let _one_at_a_time = shared.sync_lock.lock();
        if shared.sync_poisoned.load(Ordering::Acquire) {
            return Err(LogError::Poisoned);
        }
        let from = shared.durable.load(Ordering::Acquire);
        let target = lsn.min(shared.appended.load(Ordering::Acquire));
        if target <= from {
            return Ok(from);
        }
        let sb = shared.segment_bytes;
        let first = shared.segment_of(from);
        let last = shared.segment_of(target - 1);
        // Collect the work, then sync without the lock: the writer may roll meanwhile.
        let mut work = Vec::new();
        let mut new_files = false;
        {
            let segments = shared.segments.lock();
            for index in first..=last {
                let segment = segments
                    .iter()
                    .find(|s| s.index == index)
                    .expect("every segment not yet durable is in the sync queue");
                let start = if index == first { from - index * sb } else { 0 };
                let end = if index == last {
                    target - index * sb
                } else {
                    sb
                };
                new_files |= !segment.dir_synced;
                work.push((segment.path.clone(), segment.map.clone(), start, end));
            }
        }
        if new_files {
            // IMPORTANT: a new segment's directory entry is durable only once the directory is
            // fsynced; without this a power cut could lose the whole file, synced data and all.
            if let Err(err) = shared.io.sync_dir(&shared.log_dir) {
                return Err(self.poison(LogError::io("fsync dir", &shared.log_dir, err)));
            }
        }
        for (path, map, start, end) in work {
            if end > start {
                if let Err(err) = map.sync_range(start, end - start) {
                    return Err(self.poison(LogError::io("msync", path, err)));
                }
            }
        }
        {
            let mut segments = shared.segments.lock();
            for segment in segments.iter_mut() {
                if segment.index <= last {
                    segment.dir_synced = true;
                }
            }
            // A segment durable to its end will not be written again (the writer is past it).
            while segments
                .front()
                .is_some_and(|s| (s.index + 1) * sb <= target)
            {
                segments.pop_front();
            }
        }
        shared.durable.store(target, Ordering::Release);
        Ok(target)
    }

    /// Everything below this Lsn is durable.
    pub fn durable(&self) -> Lsn {
        self.shared.durable.load(Ordering::Acquire)
    }

    /// Has a sync failed?
    pub fn poisoned(&self) -> bool {
        self.shared.sync_poisoned.load(Ordering::Acquire)
    }

    fn poison(&self, err: LogError) -> LogError {
        log::error!(
            "msg=\"log sync failed; no write is acknowledged from now on\" error=\"{err}\""
        );
        self.shared.sync_poisoned.store(true, Ordering::Release);
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let payload = b"hello";
        let bytes = encode_header(payload.len() as u32, 77, payload);
        let header = decode_header(&bytes);
        assert_eq!(header.len, 5);
        assert_eq!(header.durable, 77);
        assert_eq!(header.crc, frame_crc(5, 77, payload));
        assert_ne!(header.crc, frame_crc(5, 78, payload), "the mark is covered");
        assert_ne!(
            header.crc,
            frame_crc(6, 77, payload),
            "the length is covered"
        );
    }

    #[test]
    fn an_all_zero_header_is_never_a_valid_frame() {
        // Recovery relies on this: preallocated zeros cannot be mistaken for an empty record.
        assert_ne!(frame_crc(0, 0, &[]), 0);
    }

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/d/log");
        for index in [0, 1, 9_999_999_999, 10_000_000_000, u64::MAX] {
            let path = segment_path(dir, index);
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(parse_segment_name(name), Some(index), "{name}");
        }
        assert_eq!(parse_segment_name("segment-1.log"), None);
        assert_eq!(parse_segment_name("segment-000000000x.log"), None);
        assert_eq!(parse_segment_name("segment-0000000001.log.tmp"), None);
    }

    #[test]
    fn payload_limit() {
        assert_eq!(payload_bytes_max(64), 48);
        assert_eq!(payload_bytes_max(1 << 40), (u32::MAX - 1) as usize);
    }
}
