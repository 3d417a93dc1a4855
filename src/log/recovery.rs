//! Recovery: scan every segment at open, deliver the valid records, and decide what the bytes
//! after them are.
//!
//! Segments are read in index order with ordinary reads (pread through the seam), never through a
//! map, and repaired (a torn tail zeroed) before anything is mapped. Frame format: `segment.rs`.
//!
//! # Assumptions about the disk
//!
//! A successful sync makes the synced bytes durable, and durable bytes read back unchanged unless
//! the disk is damaged. Bytes written after the last successful sync may, after a power cut, be
//! there, be missing (zero: segments are preallocated zero-filled) or be garbage, each sector
//! independently and in any order (write-back is not ordered). Syncs cover prefixes of the log,
//! so everything acknowledged lies below every unsynced byte.
//!
//! The consequence: after a crash the damage is confined to the unsynced suffix, but inside it a
//! later record can survive while an earlier one is lost. A plain "stop at the first bad frame if
//! only zeros follow" rule would then refuse to start after an ordinary power cut. The durable
//! mark in every frame header settles it: a frame written when position P was already durable
//! vouches for P.
//!
//! # Decision table
//!
//! Positions are Lsns (segment index * segment_bytes + offset). At each frame position P of
//! segment S exactly one row applies, checked in this order:
//!
//! | row | what is at P                                          | decision                         |
//! |-----|-------------------------------------------------------|----------------------------------|
//! | 1   | fewer than 16 bytes left in S                         | S is full: go on at S+1 offset 0 |
//! | 2   | a valid roll marker                                   | S is sealed: go on at S+1 offset 0 |
//! | 3   | a valid record (length fits in S, durable mark <= P, CRC matches) | deliver it, go on at P + 16 + len |
//! | 4   | a zero header, only zeros to the end of S, S is the last segment | clean end: the writer resumes at P |
//! | 5   | anything else: a zero header in a segment that is not the last (the marker or the record at the end of S was lost), a zero header followed by non-zero bytes, a length past the end of S, a CRC mismatch, a durable mark above P | damage at P: rule D |
//!
//! Rows 1 and 2 in the last segment leave the writer to roll on its next append.
//!
//! Below a caller's trusted end (the `log_end` of a checkpoint the caller then ties to the log;
//! see [`recover`]) row 3 checks a record's header only, not its CRC: those records were durable
//! and published when the checkpoint was written, so no torn write can lie there, and every
//! later read of one checks its CRC (`read.rs`). Every other row, and rule D, is unchanged.
//!
//! Rule D (damage at P): look at every later byte position of S and of every later segment for an
//! intact frame (record or marker) whose durable mark is above P.
//!
//! | row | finding                         | decision                                        |
//! |-----|---------------------------------|-------------------------------------------------|
//! | D1  | such a frame at Q               | P was durable before Q was written, so it was acknowledged and has changed since: `Corrupt { path of S, offset of P }` naming Q. Start-up stops; nothing is skipped. |
//! | D2  | none                            | everything from P on was written after the last sync that could cover P: a torn tail, never acknowledged. Zero S from P to its last non-zero byte, sync S, remove the later segments (highest index first, so no gap can appear), sync the directory, and warn with what was cut. The writer resumes at P. |
//!
//! Before the scan: segment indices must run F, F+1, F+2, ... without a gap (a gap is `Corrupt`).
//! F is 0 unless a retention window dropped the oldest segments (oldest first, so a drop cut
//! short by a crash never leaves a gap); whether a checkpoint covers what was dropped is the
//! caller's check (`storage.rs`), recovery only reports F ([`Recovered::first_index`]);
//! every segment but the last must be `segment_bytes` long (else `Corrupt`); a last segment of a
//! different length that holds only zeros is an interrupted preallocation and is removed; one that
//! holds data is `Corrupt`.
//!
//! After the scan every segment that may hold bytes not yet durable (from the segment of the
//! highest durable mark seen to the end) is fsynced: after a process crash (not a power cut) the
//! page cache still holds unsynced appends, the scan accepts them, and the caller is about to
//! serve them as history, so they must not vanish in a later power cut.
//!
//! What this cannot see: damage to the frames of the very last group commit before a stop, when
//! no later frame vouches for them, is indistinguishable from a torn write and is cut (D2). Every
//! other damaged frame is followed by a frame written after it was durable, and is refused (D1).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::LogError;
use super::io::{read_full, FileHandle, Io};
use super::segment::{
    decode_header, frame_crc, parse_segment_name, segment_path, FRAME_HEADER_BYTES,
    ROLL_MARKER_LEN, SEGMENT_BYTES_MIN,
};
use super::{Lsn, TornTail};

/// How much of a segment is read at a time.
const READ_WINDOW_BYTES: usize = 1 << 20;

/// What recovery found, for `open` to build the writer from.
pub(crate) struct Recovered {
    pub segment_bytes: u64,
    /// The segment the writer continues in (it exists on disk with the right length) and the
    /// offset of its next frame (`segment_bytes` if sealed or full).
    pub index: u64,
    pub offset: u64,
    pub torn_tail: Option<TornTail>,
    /// The oldest segment on disk (0 unless a retention window dropped older ones).
    pub first_index: u64,
}

/// A segment file found on disk.
struct SegmentFile {
    index: u64,
    path: Arc<Path>,
    file: Box<dyn FileHandle>,
    size: u64,
}

/// Buffered positioned reads of one segment.
struct Reader<'a> {
    segment: &'a SegmentFile,
    window: Vec<u8>,
    window_start: u64,
}

impl<'a> Reader<'a> {
    fn new(segment: &'a SegmentFile) -> Reader<'a> {
        Reader {
            segment,
            window: Vec::new(),
            window_start: 0,
        }
    }

    /// The bytes `[offset, offset + len)`, which must lie inside the file.
    fn bytes(&mut self, offset: u64, len: usize) -> Result<&[u8], LogError> {
        assert!(offset + len as u64 <= self.segment.size);
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || offset + len as u64 > window_end {
            let want = (self.segment.size - offset).min(len.max(READ_WINDOW_BYTES) as u64) as usize;
            self.window.resize(want, 0);
            let got = read_full(&*self.segment.file, offset, &mut self.window)
                .map_err(|e| LogError::io("read", &*self.segment.path, e))?;
            if got < want {
                return Err(LogError::io(
                    "read",
                    &*self.segment.path,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("short read at {offset}: file changed length during recovery"),
                    ),
                ));
            }
            self.window_start = offset;
        }
        let at = (offset - self.window_start) as usize;
        Ok(&self.window[at..at + len])
    }

    /// The bytes from `offset` to the end of the current window (loading a window there if
    /// `offset` is outside it); empty at the end of the file.
    fn chunk(&mut self, offset: u64) -> Result<&[u8], LogError> {
        let size = self.segment.size;
        if offset >= size {
            return Ok(&[]);
        }
        let window_end = self.window_start + self.window.len() as u64;
        if offset < self.window_start || offset >= window_end {
            let len = (size - offset).min(READ_WINDOW_BYTES as u64) as usize;
            self.bytes(offset, len)?;
        }
        let at = (offset - self.window_start) as usize;
        Ok(&self.window[at..])
    }

    /// The offset just past the last non-zero byte in `[from, size)`, or None if all are zero.
    fn last_non_zero(&mut self, from: u64) -> Result<Option<u64>, LogError> {
        let mut last = None;
        let mut at = from;
        loop {
            let chunk = self.chunk(at)?;
            if chunk.is_empty() {
                return Ok(last);
            }
            if let Some(i) = chunk.iter().rposition(|&b| b != 0) {
                last = Some(at + i as u64 + 1);
            }
            at += chunk.len() as u64;
        }
    }

    /// The first non-zero byte in `[from, size)`, or None.
    fn first_non_zero(&mut self, from: u64) -> Result<Option<u64>, LogError> {
        let mut at = from;
        loop {
            let chunk = self.chunk(at)?;
            if chunk.is_empty() {
                return Ok(None);
            }
            if let Some(i) = first_non_zero_in(chunk) {
                return Ok(Some(at + i as u64));
            }
            at += chunk.len() as u64;
        }
    }
}

/// The index of the first non-zero byte of `bytes`. Whole 64-byte blocks are OR-ed together
/// first (the compiler vectorizes that): at every open the rest of the last segment, up to a
/// whole segment of zeros, is checked here (row 4), and a byte-at-a-time search was a quarter
/// of start-up's instructions.
fn first_non_zero_in(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for block in bytes.chunks_exact(64) {
        if block.iter().fold(0u8, |acc, &b| acc | b) != 0 {
            break;
        }
        at += 64;
    }
    bytes[at..].iter().position(|&b| b != 0).map(|i| at + i)
}

/// What a frame position holds.
enum Frame {
    /// Row 3: a valid record of `len` payload bytes with this durable mark.
    Record { len: u64, durable: Lsn },
    /// Row 2.
    Marker { durable: Lsn },
    /// Row 4 or 5: an all-zero header.
    ZeroHeader,
    /// Row 5, with the reason.
    Invalid(String),
}

/// Read the frame at `offset` of a segment (at least 16 bytes must remain). With
/// `check_payload` false (a frame below the trusted end, see [`recover`]) a record's header is
/// checked but its payload is neither read nor CRC-checked.
fn read_frame(
    reader: &mut Reader<'_>,
    sb: u64,
    offset: u64,
    check_payload: bool,
) -> Result<Frame, LogError> {
    let position = reader.segment.index * sb + offset;
    let raw = reader.bytes(offset, FRAME_HEADER_BYTES as usize)?;
    if raw.iter().all(|&b| b == 0) {
        return Ok(Frame::ZeroHeader);
    }
    let header = decode_header(raw);
    if header.durable > position {
        return Ok(Frame::Invalid(format!(
            "frame header claims the log was durable up to {} before its own position {position}",
            header.durable
        )));
    }
    if header.len == ROLL_MARKER_LEN {
        return Ok(
            if header.crc == frame_crc(ROLL_MARKER_LEN, header.durable, &[]) {
                Frame::Marker {
                    durable: header.durable,
                }
            } else {
                Frame::Invalid("roll marker checksum mismatch".to_string())
            },
        );
    }
    let room = sb - offset - FRAME_HEADER_BYTES;
    if u64::from(header.len) > room {
        return Ok(Frame::Invalid(format!(
            "record length {} runs past the end of the segment ({room} bytes left)",
            header.len
        )));
    }
    if !check_payload {
        return Ok(Frame::Record {
            len: u64::from(header.len),
            durable: header.durable,
        });
    }
    let payload = reader.bytes(offset + FRAME_HEADER_BYTES, header.len as usize)?;
    let crc = frame_crc(header.len, header.durable, payload);
    if crc != header.crc {
        return Ok(Frame::Invalid(format!(
            "record checksum mismatch (stored {:#010x}, computed {crc:#010x}, length {})",
            header.crc, header.len
        )));
    }
    Ok(Frame::Record {
        len: u64::from(header.len),
        durable: header.durable,
    })
}

/// How many first bytes of every payload the scan reads, even below the trusted end: enough to
/// tell a pending frame (`{"pending":`) from a commit record without reading the rest.
pub const PAYLOAD_HEAD_BYTES: usize = 16;

/// One valid record found by the scan. `payload` is None for a record below the trusted end
/// (its payload was not read); `head` is its first bytes (at most [`PAYLOAD_HEAD_BYTES`]), not
/// CRC-checked there.
pub(crate) struct Found<'a> {
    pub lsn: Lsn,
    pub path: &'a Arc<Path>,
    pub offset: u64,
    pub len: u64,
    pub payload: Option<&'a [u8]>,
    pub head: &'a [u8],
}

/// Scan (and repair) the log in `log_dir`, passing each valid record to `visit` in order.
///
/// `trusted_end`: records whose frames end at or below this Lsn (what a checkpoint that the
/// caller checks against the log says was durable and published) are checked by their header
/// only (row 3 without the CRC: the length fits, the durable mark is not above the position);
/// their payloads are not read. Every other row of the table is unchanged. What that skips is
/// caught later, never served: every read of a record checks its CRC (`read.rs`), and the
/// server re-reads them all in its background check. Pass 0 to check every record in full.
pub(crate) fn recover(
    io: &dyn Io,
    log_dir: &Path,
    segment_bytes_configured: u64,
    trusted_end: Lsn,
    visit: &mut dyn FnMut(Found<'_>),
) -> Result<Recovered, LogError> {
    let mut segments = list_segments(io, log_dir)?;
    let sb = decide_segment_bytes(&mut segments, segment_bytes_configured)?;
    check_lengths(io, log_dir, &mut segments, sb)?;

    if segments.is_empty() {
        // A new log: segment 0, reserved now so that a full disk is found at start-up.
        let path = segment_path(log_dir, 0);
        io.create_preallocated(&path, sb)
            .map_err(|e| LogError::io_or_no_space("fallocate", &path, e))?;
        sync_dir(io, log_dir)?;
        return Ok(Recovered {
            segment_bytes: sb,
            index: 0,
            offset: 0,
            torn_tail: None,
            first_index: 0,
        });
    }

    // The scan proper. `durable_max` is the highest durable mark seen: below it nothing needs a
    // sync after recovery.
    let mut durable_max: Lsn = 0;
    let last = segments.len() - 1;
    let mut end: Option<(usize, u64)> = None; // (segment position in `segments`, offset)
    let mut damage: Option<(usize, u64, String)> = None;
    'segments: for (n, segment) in segments.iter().enumerate() {
        let mut reader = Reader::new(segment);
        let mut offset = 0u64;
        loop {
            // Row 1: no room for a header.
            if sb - offset < FRAME_HEADER_BYTES {
                if n == last {
                    end = Some((n, sb));
                }
                continue 'segments;
            }
            // Trusted only if the whole frame (at most the rest of the segment) lies below the
            // trusted end; a frame whose header claims otherwise is checked in full.
            let base = segment.index * sb;
            let trusted = base + sb <= trusted_end || {
                let header = reader.bytes(offset, FRAME_HEADER_BYTES as usize)?;
                let len = u64::from(decode_header(header).len);
                len != u64::from(ROLL_MARKER_LEN)
                    && base + offset + FRAME_HEADER_BYTES + len <= trusted_end
            };
            match read_frame(&mut reader, sb, offset, !trusted)? {
                // Row 2: sealed.
                Frame::Marker { durable } => {
                    durable_max = durable_max.max(durable);
                    if n == last {
                        end = Some((n, sb));
                    }
                    continue 'segments;
                }
                // Row 3: a record.
                Frame::Record { len, durable } => {
                    durable_max = durable_max.max(durable);
                    let frame_end = offset + FRAME_HEADER_BYTES + len;
                    let head_len = (len as usize).min(PAYLOAD_HEAD_BYTES);
                    let read_len = if trusted { head_len } else { len as usize };
                    let bytes = reader.bytes(offset + FRAME_HEADER_BYTES, read_len)?;
                    visit(Found {
                        lsn: segment.index * sb + frame_end,
                        path: &segment.path,
                        offset,
                        len,
                        payload: (!trusted).then_some(bytes),
                        head: &bytes[..head_len],
                    });
                    offset = frame_end;
                }
                Frame::ZeroHeader => {
                    let rest = reader.first_non_zero(offset)?;
                    match (rest, n == last) {
                        // Row 4: the clean end of the log.
                        (None, true) => {
                            end = Some((n, offset));
                            break 'segments;
                        }
                        // Row 5: the end of a non-last segment without its marker.
                        (None, false) => {
                            damage = Some((
                                n,
                                offset,
                                "the segment ends without a roll marker but a later segment exists"
                                    .to_string(),
                            ));
                            break 'segments;
                        }
                        // Row 5: zeros, then data.
                        (Some(at), _) => {
                            damage = Some((
                                n,
                                offset,
                                format!(
                                    "zero frame header followed by non-zero bytes at offset {at}"
                                ),
                            ));
                            break 'segments;
                        }
                    }
                }
                // Row 5.
                Frame::Invalid(reason) => {
                    damage = Some((n, offset, reason));
                    break 'segments;
                }
            }
        }
    }

    let mut torn_tail = None;
    let (keep, offset) = match (end, damage) {
        (Some(end), None) => end,
        (None, Some((n, offset, reason))) => {
            let position = segments[n].index * sb + offset;
            if let Some((path, at, durable)) = find_voucher(&segments, sb, n, offset, position)? {
                // D1.
                return Err(LogError::corrupt(
                    &*segments[n].path,
                    offset,
                    format!(
                        "{reason}; the intact frame at {}:{at} was written when the log was \
                         durable up to {durable}, past this position ({position}), so this data \
                         was acknowledged and has changed on disk",
                        path.display()
                    ),
                ));
            }
            // D2.
            let tail = cut_tail(io, log_dir, &segments, n, offset, reason)?;
            segments.truncate(n + 1);
            torn_tail = Some(tail);
            (n, offset)
        }
        _ => unreachable!("the scan ends with either an end or a damage"),
    };

    // Make what the scan accepted durable (see the module comment), then the directory.
    let first_unsure = durable_max / sb;
    for segment in segments.iter().filter(|s| s.index >= first_unsure) {
        segment
            .file
            .sync()
            .map_err(|e| LogError::io("fsync", &*segment.path, e))?;
    }
    sync_dir(io, log_dir)?;

    Ok(Recovered {
        segment_bytes: sb,
        index: segments[keep].index,
        offset,
        torn_tail,
        first_index: segments[0].index,
    })
}

fn sync_dir(io: &dyn Io, dir: &Path) -> Result<(), LogError> {
    io.sync_dir(dir)
        .map_err(|e| LogError::io("fsync dir", dir, e))
}

/// The segment files in index order; a gap in the indices is corruption (the first index may
/// be above 0: a retention window dropped the segments before it).
fn list_segments(io: &dyn Io, log_dir: &Path) -> Result<Vec<SegmentFile>, LogError> {
    let names = io
        .list_dir(log_dir)
        .map_err(|e| LogError::io("list dir", log_dir, e))?;
    let mut indices = Vec::new();
    for name in names {
        match parse_segment_name(&name) {
            Some(index) => indices.push(index),
            None => log::warn!(
                "msg=\"ignoring a file that is not a log segment\" path={}",
                log_dir.join(&name).display()
            ),
        }
    }
    indices.sort_unstable();
    let mut segments = Vec::with_capacity(indices.len());
    let first = indices.first().copied().unwrap_or(0);
    for (expected, index) in (first..).zip(indices) {
        let path: Arc<Path> = Arc::from(segment_path(log_dir, index));
        if index != expected {
            return Err(LogError::corrupt(
                segment_path(log_dir, expected),
                0,
                format!(
                    "log segment {expected} is missing but segment {index} exists ({})",
                    path.display()
                ),
            ));
        }
        let file = io
            .open(&path)
            .map_err(|e| LogError::io("open", &*path, e))?;
        let size = file.size().map_err(|e| LogError::io("stat", &*path, e))?;
        segments.push(SegmentFile {
            index,
            path,
            file,
            size,
        });
    }
    Ok(segments)
}

/// The segment size is fixed when the log is created: if the configuration changed since, the
/// existing segments win (with a warning), because every Lsn depends on it.
fn decide_segment_bytes(segments: &mut [SegmentFile], configured: u64) -> Result<u64, LogError> {
    let Some(first) = segments.first() else {
        return Ok(configured);
    };
    if first.size == configured {
        return Ok(configured);
    }
    if segments.len() == 1 && Reader::new(first).last_non_zero(0)?.is_none() {
        // An empty, lone segment 0: check_lengths removes it if it has the wrong length.
        return Ok(configured);
    }
    if first.size < SEGMENT_BYTES_MIN {
        return Err(LogError::corrupt(
            &*first.path,
            first.size,
            format!("segment is only {} bytes long", first.size),
        ));
    }
    log::warn!(
        "msg=\"log segments on disk differ from storage.segment_bytes; using the on-disk size\" \
         on_disk={} configured={configured}",
        first.size
    );
    Ok(first.size)
}

/// Every segment but the last is exactly `sb` long. A last segment of another length that holds
/// only zeros is an interrupted preallocation (created, not yet fully reserved, crash) and is
/// removed; the writer makes it again when it rolls.
fn check_lengths(
    io: &dyn Io,
    log_dir: &Path,
    segments: &mut Vec<SegmentFile>,
    sb: u64,
) -> Result<(), LogError> {
    let count = segments.len();
    for (n, segment) in segments.iter().enumerate() {
        if segment.size == sb {
            continue;
        }
        let empty = Reader::new(segment).last_non_zero(0)?.is_none();
        if n + 1 < count || !empty {
            return Err(LogError::corrupt(
                &*segment.path,
                segment.size.min(sb),
                format!(
                    "segment is {} bytes long, expected {sb}{}",
                    segment.size,
                    if n + 1 < count {
                        ""
                    } else {
                        " (and it holds data, so it is not an interrupted preallocation)"
                    }
                ),
            ));
        }
    }
    if let Some(last) = segments.last() {
        if last.size != sb {
            log::warn!(
                "msg=\"removing an interrupted log segment preallocation\" path={} bytes={} expected={sb}",
                last.path.display(),
                last.size
            );
            let path = last.path.clone();
            segments.pop();
            io.remove(&path)
                .map_err(|e| LogError::io("remove", &*path, e))?;
            sync_dir(io, log_dir)?;
        }
    }
    Ok(())
}

/// Rule D: the first intact frame after `offset` of segment `n` (in it or in a later segment)
/// whose durable mark is above `position`. Returns its segment path, offset and mark.
fn find_voucher(
    segments: &[SegmentFile],
    sb: u64,
    n: usize,
    offset: u64,
    position: Lsn,
) -> Result<Option<(Arc<Path>, u64, Lsn)>, LogError> {
    for (m, segment) in segments.iter().enumerate().skip(n) {
        let mut reader = Reader::new(segment);
        let mut at = if m == n { offset + 1 } else { 0 };
        while at + FRAME_HEADER_BYTES <= sb {
            // A valid header is never all zero, so a candidate must have a non-zero byte within
            // its first 16: skip zero runs.
            let Some(non_zero) = reader.first_non_zero(at)? else {
                break;
            };
            let candidate = at.max(non_zero.saturating_sub(FRAME_HEADER_BYTES - 1));
            if candidate + FRAME_HEADER_BYTES > sb {
                break;
            }
            at = candidate;
            // Every byte position, as the table says: a frame that does not vouch is not skipped
            // over, nor taken as the end of the segment, because one found by this scan (inside
            // damaged bytes) need not be a real frame boundary, and trusting it could hide a
            // voucher behind it — a cut of acknowledged data. (Found by the `log_recovery` fuzz
            // target: a marker inside a damaged frame's payload ended the scan.)
            match read_frame(&mut reader, sb, at, true)? {
                Frame::Record { durable, .. } | Frame::Marker { durable } if durable > position => {
                    return Ok(Some((segment.path.clone(), at, durable)));
                }
                _ => at += 1,
            }
        }
    }
    Ok(None)
}

/// Rule D2: zero segment `n` from `offset` to its last non-zero byte, sync it, and remove every
/// later segment (highest index first: a crash part way leaves no gap).
fn cut_tail(
    io: &dyn Io,
    log_dir: &Path,
    segments: &[SegmentFile],
    n: usize,
    offset: u64,
    reason: String,
) -> Result<TornTail, LogError> {
    let segment = &segments[n];
    let last_non_zero = Reader::new(segment).last_non_zero(offset)?;
    let zeroed_bytes = last_non_zero.map_or(0, |end| end - offset);
    if zeroed_bytes > 0 {
        let zeros = vec![0u8; READ_WINDOW_BYTES.min(zeroed_bytes as usize)];
        let mut at = offset;
        let end = offset + zeroed_bytes;
        while at < end {
            let len = (end - at).min(zeros.len() as u64) as usize;
            segment
                .file
                .write_at(at, &zeros[..len])
                .map_err(|e| LogError::io("write", &*segment.path, e))?;
            at += len as u64;
        }
        segment
            .file
            .sync()
            .map_err(|e| LogError::io("fsync", &*segment.path, e))?;
    }
    let mut removed_segments: Vec<PathBuf> = Vec::new();
    for later in segments[n + 1..].iter().rev() {
        io.remove(&later.path)
            .map_err(|e| LogError::io("remove", &*later.path, e))?;
        removed_segments.push(later.path.to_path_buf());
    }
    removed_segments.reverse();
    if !removed_segments.is_empty() {
        sync_dir(io, log_dir)?;
    }
    let tail = TornTail {
        path: segment.path.to_path_buf(),
        offset,
        zeroed_bytes,
        removed_segments,
        reason,
    };
    log::warn!(
        "msg=\"cut a torn log tail (writes after the last sync that did not fully land)\" \
         path={} offset={offset} zeroed_bytes={zeroed_bytes} removed_segments={} reason=\"{}\"",
        tail.path.display(),
        tail.removed_segments.len(),
        tail.reason
    );
    Ok(tail)
}

#[cfg(test)]
mod tests {
    use super::super::segment::encode_header;
    use super::super::{open, FaultIo, Io, LogError, StorageOptions};
    use super::*;

    /// Regression (found by the `log_recovery` fuzz target): rule D's scan for a voucher stopped
    /// at the first roll marker it met, and skipped over any record it met, although what the
    /// byte scan finds inside damaged bytes need not be a frame boundary. A marker-shaped header
    /// inside a damaged frame hid a later intact record whose durable mark vouched for the
    /// damaged position, so the damage was cut as a torn tail instead of refused as corruption.
    #[test]
    fn regression_a_marker_inside_damaged_bytes_does_not_hide_a_voucher() {
        let sb = 256u64;
        let mut seg = vec![0u8; sb as usize];
        // A good record at 0.
        seg[..16].copy_from_slice(&encode_header(5, 0, b"first"));
        seg[16..21].copy_from_slice(b"first");
        // Damage at 21: a record header whose CRC does not match its 97 payload bytes...
        let payload = [b'x'; 97];
        let mut bad = encode_header(97, 0, &payload);
        bad[4] ^= 0xFF;
        seg[21..37].copy_from_slice(&bad);
        seg[37..134].copy_from_slice(&payload);
        // ...inside which sits a well-formed roll marker (durable 0: no voucher itself)...
        seg[60..76].copy_from_slice(&encode_header(ROLL_MARKER_LEN, 0, &[]));
        // ...and after it an intact record written when 162 (> 21) was already durable.
        seg[162..178].copy_from_slice(&encode_header(4, 162, b"late"));
        seg[178..182].copy_from_slice(b"late");

        let io = FaultIo::new();
        let data = Path::new("/data");
        let log = data.join("log");
        io.create_dir_all(&log).unwrap();
        let file = io.create(&segment_path(&log, 0)).unwrap();
        file.write_at(0, &seg).unwrap();
        file.sync().unwrap();
        io.sync_dir(&log).unwrap();
        let opts = StorageOptions {
            segment_bytes: sb,
            checkpoints_kept: 1,
        };
        match open(data, &opts, std::sync::Arc::new(io.clone())) {
            Err(LogError::Corrupt { offset, .. }) => assert_eq!(offset, 21),
            Err(e) => panic!("expected Corrupt at 21, got {e}"),
            Ok(o) => panic!(
                "cut the damage as a torn tail ({} records kept): the record at 162 vouched for it",
                o.records.len()
            ),
        }
    }

    #[test]
    fn first_non_zero_finds_the_first_byte_in_and_across_blocks() {
        for len in [0usize, 1, 63, 64, 65, 200] {
            assert_eq!(first_non_zero_in(&vec![0u8; len]), None);
            for at in 0..len {
                let mut bytes = vec![0u8; len];
                bytes[at] = 1;
                if at + 1 < len {
                    bytes[len - 1] = 9;
                }
                assert_eq!(first_non_zero_in(&bytes), Some(at), "len {len} at {at}");
            }
        }
    }
}
