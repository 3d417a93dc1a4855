//! Reading records back from the log while it is open: the read path of history
//! (`/registry/{version}`, `/registry/log`, stream replay) and of start-up restore.
//!
//! Reads are positioned reads (`pread` through the [`Io`] seam), never slices of a map: sealed
//! segments then cost the process no resident memory at all (the kernel's page cache holds them,
//! outside RSS), the writer's map stays the only one, and no reader can ever touch a page past a
//! file's end (no SIGBUS). Every read checks the frame's CRC and length, so a record that changed
//! on disk is an error naming file and offset, never wrong bytes served.
//!
//! Retention (SPEC §14): [`LogReader::drop_segments_below`] deletes the oldest sealed segments,
//! oldest first, then fsyncs the directory. A reader holding a segment's handle keeps reading it
//! (an unlinked file lives while an fd is open); one that opens it after the delete gets an
//! error, which history turns into "expired" because the floor was raised before the delete.
//!
//! Invariant: callers only ask for locations of whole frames that were appended before (their
//! Lsns come from [`super::LogWriter::append`] or from recovery); the writer only ever writes past
//! them, so a read never races a write of the same bytes. No lock here is held across I/O: the
//! handle cache is locked only to look up or insert a handle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::io::{read_full, FileHandle, Io};
use super::segment::{decode_header, frame_crc, segment_path, FRAME_HEADER_BYTES, ROLL_MARKER_LEN};
use super::{LogError, Lsn};

/// Reads frames of an open log. Cheap to share (`Arc`) between threads.
pub struct LogReader {
    io: Arc<dyn Io>,
    log_dir: PathBuf,
    segment_bytes: u64,
    /// Open handles by segment index, at most [`HANDLES_MAX`]: a long log does not hold a
    /// descriptor per segment. Segments are removed only by a retention drop, which forgets
    /// their handles.
    files: RwLock<HashMap<u64, Arc<dyn FileHandle>>>,
    /// The oldest segment still on disk; raised only by [`LogReader::drop_segments_below`] (one
    /// caller at a time: the checkpoint thread).
    first_segment: AtomicU64,
    /// Held by a drop and by a hot backup (`backup.rs`), so a backup never copies checkpoints
    /// whose records a drop then deletes before the log is copied.
    pub(crate) retention_lock: Arc<parking_lot::Mutex<()>>,
}

/// Segment handles kept open for readers.
const HANDLES_MAX: usize = 16;

impl LogReader {
    /// A reader of the log in `log_dir`. The segment the writer continues in is opened now, so
    /// the descriptors a running server holds do not change on its first history read.
    pub(crate) fn new(
        io: Arc<dyn Io>,
        log_dir: PathBuf,
        segment_bytes: u64,
        active: u64,
    ) -> LogReader {
        let reader = LogReader {
            io,
            log_dir,
            segment_bytes,
            files: RwLock::new(HashMap::new()),
            first_segment: AtomicU64::new(0),
            retention_lock: Arc::new(parking_lot::Mutex::new(())),
        };
        // A failure here is met again (and reported) by the first read of that segment.
        let _ = reader.file(active);
        reader
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    pub(crate) fn set_first_segment(&self, index: u64) {
        self.first_segment.store(index, Ordering::SeqCst);
    }

    /// The oldest segment still on disk.
    pub fn first_segment(&self) -> u64 {
        self.first_segment.load(Ordering::SeqCst)
    }

    /// The storage seam this reader reads through.
    pub fn io(&self) -> &Arc<dyn Io> {
        &self.io
    }

    /// The log directory this reader reads.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    /// Delete every segment below `index` that is still on disk, oldest first (a crash part way
    /// leaves the log starting at a later segment, never a gap), then fsync the directory.
    /// Returns the bytes deleted. The caller guarantees that `index` is at most the segment
    /// holding the oldest record still served, and below the writer's segment.
    ///
    /// Crash points (docs/ARCHITECTURE.md): before the first remove, the whole log is there;
    /// between removes, a prefix of the dropped segments is gone; before the directory fsync,
    /// any prefix of the removes may be undone by a power cut. Every case is a log that starts
    /// at a segment at or below `index` with no gap, which recovery accepts.
    pub fn drop_segments_below(&self, index: u64) -> Result<u64, LogError> {
        let _no_backup_meanwhile = self.retention_lock.lock();
        let from = self.first_segment();
        if index <= from {
            return Ok(0);
        }
        let mut dropped = 0u64;
        for i in from..index {
            let path = segment_path(&self.log_dir, i);
            self.files.write().remove(&i);
            match self.io.remove(&path) {
                Ok(()) => dropped += self.segment_bytes,
                // Already gone: a drop before a crash removed it but its directory entry's
                // removal was durable only in part; nothing to do.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", &path, e)),
            }
            // Raised per segment so a failure part way leaves the reader's view exact.
            self.first_segment.store(i + 1, Ordering::SeqCst);
        }
        // IMPORTANT: the removals are durable only once the directory is fsynced; until then a
        // power cut may undo some of them, but a journaling file system lands a directory's
        // operations in order, so what survives is a prefix of the removals: still no gap.
        self.io
            .sync_dir(&self.log_dir)
            .map_err(|e| LogError::io("fsync dir", &self.log_dir, e))?;
        Ok(dropped)
    }

    fn file(&self, index: u64) -> Result<Arc<dyn FileHandle>, LogError> {
        if let Some(f) = self.files.read().get(&index) {
            return Ok(f.clone());
        }
        let path = segment_path(&self.log_dir, index);
        let file: Arc<dyn FileHandle> = Arc::from(
            self.io
                .open(&path)
                .map_err(|e| LogError::io("open", &path, e))?,
        );
        let mut files = self.files.write();
        if files.len() >= HANDLES_MAX && !files.contains_key(&index) {
            // Evict the oldest segment's handle: reads favour recent history.
            if let Some(oldest) = files.keys().min().copied() {
                files.remove(&oldest);
            }
        }
        Ok(files.entry(index).or_insert(file).clone())
    }

    /// The payload of the record whose frame ends at `end` (the Lsn `append` returned for it)
    /// and whose payload is `len` bytes long, after checking its frame.
    pub fn read(&self, end: Lsn, len: u32) -> Result<Vec<u8>, LogError> {
        let frame = FRAME_HEADER_BYTES + u64::from(len);
        let start = end
            .checked_sub(frame)
            .ok_or_else(|| LogError::corrupt(&self.log_dir, end, "record location before 0"))?;
        let index = start / self.segment_bytes;
        let offset = start % self.segment_bytes;
        let path = segment_path(&self.log_dir, index);
        if offset + frame > self.segment_bytes {
            return Err(LogError::corrupt(
                path,
                offset,
                format!("record location of {frame} bytes crosses the segment's end"),
            ));
        }
        let file = self.file(index)?;
        let mut buf = vec![0u8; frame as usize];
        let got =
            read_full(&*file, offset, &mut buf).map_err(|e| LogError::io("read", &path, e))?;
        if got < buf.len() {
            return Err(LogError::corrupt(path, offset, "short read of a record"));
        }
        let header = decode_header(&buf[..FRAME_HEADER_BYTES as usize]);
        let payload = &buf[FRAME_HEADER_BYTES as usize..];
        if header.len != len || header.crc != frame_crc(header.len, header.durable, payload) {
            return Err(LogError::corrupt(
                path,
                offset,
                format!(
                    "the record read back does not check (length {} expected {len}, or CRC \
                     mismatch): it changed on disk",
                    header.len
                ),
            ));
        }
        buf.drain(..FRAME_HEADER_BYTES as usize);
        Ok(buf)
    }

    /// Walk the frames from Lsn `from` to Lsn `to` (both frame boundaries of durable log:
    /// where a record ends, or where the writer continued at open) and hand `visit` the Lsn
    /// past and the checked payload of every record whose payload starts with `prefix`; other
    /// records cost a read of their header and first bytes only (their CRC is not checked).
    /// Roll markers (CRC-checked) and a segment's unused end are stepped over as recovery does.
    /// A header that cannot be a frame there (all zero, a durable mark past its own position,
    /// a length past the segment or past `to`), or a walk that does not end exactly at `to`, is
    /// an error: positions not on frame boundaries are caught, never walked through silently.
    pub fn scan(
        &self,
        from: Lsn,
        to: Lsn,
        prefix: &[u8],
        visit: &mut dyn FnMut(Lsn, Vec<u8>),
    ) -> Result<(), LogError> {
        let sb = self.segment_bytes;
        let mut at = from;
        let mut head = vec![0u8; FRAME_HEADER_BYTES as usize + prefix.len()];
        while at < to {
            let (index, offset) = (at / sb, at % sb);
            if sb - offset < FRAME_HEADER_BYTES {
                at = (index + 1) * sb;
                continue;
            }
            let path = segment_path(&self.log_dir, index);
            let file = self.file(index)?;
            let want = head.len().min((sb - offset) as usize);
            let got = read_full(&*file, offset, &mut head[..want])
                .map_err(|e| LogError::io("read", &path, e))?;
            if got < FRAME_HEADER_BYTES as usize {
                return Err(LogError::corrupt(
                    path,
                    offset,
                    "short read of a frame header",
                ));
            }
            let header = decode_header(&head[..FRAME_HEADER_BYTES as usize]);
            let zero = head[..FRAME_HEADER_BYTES as usize].iter().all(|&b| b == 0);
            if header.len == ROLL_MARKER_LEN
                && !zero
                && header.durable <= at
                && header.crc == frame_crc(ROLL_MARKER_LEN, header.durable, &[])
            {
                at = (index + 1) * sb;
                continue;
            }
            let end = at + FRAME_HEADER_BYTES + u64::from(header.len);
            if zero
                || header.len == ROLL_MARKER_LEN
                || header.durable > at
                || offset + FRAME_HEADER_BYTES + u64::from(header.len) > sb
                || end > to
            {
                return Err(LogError::corrupt(
                    path,
                    offset,
                    format!(
                        "no record frame here (length {}) inside the durable log up to {to}",
                        header.len
                    ),
                ));
            }
            let shown = (got - FRAME_HEADER_BYTES as usize).min(header.len as usize);
            if head[FRAME_HEADER_BYTES as usize..FRAME_HEADER_BYTES as usize + shown]
                .starts_with(prefix)
            {
                visit(end, self.read(end, header.len)?);
            }
            at = end;
        }
        if at != to {
            return Err(LogError::corrupt(
                segment_path(&self.log_dir, to / sb),
                to % sb,
                format!(
                    "the frames from {from} step past {to} (to {at}): {to} is no frame boundary"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{open, FaultIo, StorageOptions};
    use std::path::Path;
    use std::sync::Arc;

    /// `scan` walks frames across segment rolls (markers and too-short ends alike) and hands
    /// over exactly the records with the prefix, checked; a range not on frame boundaries is an
    /// error, never a silent skip.
    #[test]
    fn scan_finds_the_prefixed_records_across_segments() {
        let io = FaultIo::new();
        let opts = StorageOptions {
            segment_bytes: 256,
            checkpoints_kept: 1,
        };
        let mut opened = open(Path::new("/data"), &opts, Arc::new(io.clone())).unwrap();
        let start = opened.writer.end();
        let mut want = Vec::new();
        for i in 0..40u32 {
            let payload = if i % 3 == 0 {
                format!(
                    "{{\"pending\":{i},\"pad\":\"{}\"}}",
                    "x".repeat((i * 7 % 50) as usize)
                )
            } else {
                format!(
                    "{{\"version\":{i},\"pad\":\"{}\"}}",
                    "y".repeat((i * 11 % 90) as usize)
                )
            };
            let end = opened.writer.append(payload.as_bytes()).unwrap();
            if i % 3 == 0 {
                want.push((end, payload.into_bytes()));
            }
        }
        let end = opened.writer.end();
        assert!(end / 256 >= 5, "the payloads span several segments");
        let mut got = Vec::new();
        opened
            .reader
            .scan(start, end, b"{\"pending\":", &mut |at, p| got.push((at, p)))
            .unwrap();
        assert_eq!(got, want);
        // From the middle of the range: only what follows.
        let (from, _) = want[5].clone();
        let mut later = Vec::new();
        opened
            .reader
            .scan(from, end, b"{\"pending\":", &mut |at, _| later.push(at))
            .unwrap();
        assert_eq!(later, want[6..].iter().map(|w| w.0).collect::<Vec<_>>());
        // Not frame boundaries: refused (inside a header, inside a payload, past the end).
        // (A position in a segment's last 15 bytes stands for the next segment's start, as in
        // recovery, so the ones tried lie well inside a segment.)
        let (inside, _) = want
            .iter()
            .find(|w| w.0 % 256 < 150 && w.0 < end)
            .expect("a record ends early in a segment")
            .clone();
        for bad in [inside + 3, inside + 20, end - 1] {
            let r = opened
                .reader
                .scan(bad, end, b"{\"pending\":", &mut |_, _| {});
            assert!(
                r.is_err(),
                "from {bad} (offset {}) walked through",
                bad % 256
            );
        }
        assert!(opened
            .reader
            .scan(start, end - 1, b"{\"pending\":", &mut |_, _| {})
            .is_err());
    }
}
