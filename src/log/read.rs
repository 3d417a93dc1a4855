//! Reading records back from the log while it is open: the read path of history
//! (`/registry/{version}`, `/registry/log`, stream replay) and of start-up restore.
//!
//! Reads are positioned reads (`pread` through the [`Io`] seam), never slices of a map: sealed
//! segments then cost the process no resident memory at all (the kernel's page cache holds them,
//! outside RSS), the writer's map stays the only one, and no reader can ever touch a page past a
//! file's end (no SIGBUS). Every read checks the frame's CRC and length, so a record that changed
//! on disk is an error naming file and offset, never wrong bytes served.
//!
//! Invariant: callers only ask for locations of whole frames that were appended before (their
//! Lsns come from [`super::LogWriter::append`] or from recovery); the writer only ever writes past
//! them, so a read never races a write of the same bytes. No lock here is held across I/O: the
//! handle cache is locked only to look up or insert a handle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::RwLock;

use super::io::{read_full, FileHandle, Io};
use super::segment::{decode_header, frame_crc, segment_path, FRAME_HEADER_BYTES};
use super::{LogError, Lsn};

/// Reads frames of an open log. Cheap to share (`Arc`) between threads.
pub struct LogReader {
    io: Arc<dyn Io>,
    log_dir: PathBuf,
    segment_bytes: u64,
    /// Open handles by segment index (segments are never removed while the log is open), at
    /// most [`HANDLES_MAX`]: a long log does not hold a descriptor per segment.
    files: RwLock<HashMap<u64, Arc<dyn FileHandle>>>,
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
        };
        // A failure here is met again (and reported) by the first read of that segment.
        let _ = reader.file(active);
        reader
    }

    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
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
}
