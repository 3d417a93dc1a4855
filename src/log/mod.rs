//! Durable storage under `data_dir`: the append-only segmented log, checkpoints, the directory
//! lock, recovery and hot backup.
//!
//! ```text
//! data_dir/LOCK                                   flock'd while open (lock.rs)
//! data_dir/log/segment-{index:010}.log            segment_bytes each, preallocated (segment.rs)
//! data_dir/checkpoints/checkpoint-{seq:020}.ckpt  the caller's snapshots (checkpoint.rs)
//! ```
//!
//! Threads: the writer thread owns the [`LogWriter`] (appends into the mapped current segment);
//! the fsync thread holds a [`Syncer`] (makes prefixes of the log durable, group commit);
//! a checkpoint thread may call [`write_checkpoint`]; an admin route may call [`Syncer::backup`].
//! Everything goes through the [`Io`] seam (io.rs), so [`FaultIo`] (fault.rs) can crash the
//! storage at any write or sync in tests.
//!
//! Architecture invariants:
//! - Nothing counts as durable before a successful sync covers it; the first failed sync poisons
//!   the log for good (no retry on the same data).
//! - A mapped file is never truncated or shrunk; its blocks are reserved before it is mapped, so a
//!   full disk is [`LogError::NoSpace`] and never a SIGBUS.
//! - No slice of a map is handed out: recovery and backup read with positioned reads.
//! - Damage is never skipped: it is cut only when it provably lies after everything acknowledged
//!   (a torn tail), otherwise open refuses with [`LogError::Corrupt`] (recovery.rs).

mod backup;
mod checkpoint;
mod error;
mod fault;
mod io;
mod lock;
mod read;
mod recovery;
mod segment;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::Mutex;

pub use checkpoint::{checkpoints_dir, write_checkpoint, Checkpoint, StreamParse};
pub use error::LogError;
pub use fault::{FaultIo, FaultKind, Op, SplitMix};
pub use io::{write_atomic, FileHandle, Io, LockHandle, MapSyncer, MapWriter, OsIo};
pub use lock::{lock_dir, DirLock};
pub use read::LogReader;
pub use recovery::PAYLOAD_HEAD_BYTES;
pub use segment::{
    payload_bytes_max, segment_path, LogWriter, Syncer, FRAME_HEADER_BYTES, SEGMENT_BYTES_MIN,
};

use segment::{Shared, SyncSegment};

/// A position in the log: `segment index * segment_bytes + offset in the segment`. Grows
/// monotonically; the Lsn "of" a record is the one just past it.
pub type Lsn = u64;

/// Limits of the storage layer, from `[storage]`.
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// Length of every segment file. Fixed when the log is created: if it differs from the
    /// segments already on disk, those win (with a warning).
    pub segment_bytes: u64,
    /// How many checkpoints the caller keeps (pass it to [`write_checkpoint`]).
    pub checkpoints_kept: usize,
}

/// One valid record found at open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Lsn just past this record: what [`LogWriter::append`] returned for it.
    pub lsn: Lsn,
    /// The segment file holding it (shared by all records of that segment).
    pub path: Arc<Path>,
    /// Byte offset of the frame inside that file (for error messages naming file and offset).
    pub offset: u64,
    pub payload: Vec<u8>,
}

/// What recovery cut from the end of the log (also logged with `warn!`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment the cut starts in, and the offset of the first byte cut.
    pub path: PathBuf,
    pub offset: u64,
    /// How many bytes were zeroed in that segment.
    pub zeroed_bytes: u64,
    /// Later segments removed whole (they held only unacknowledged bytes).
    pub removed_segments: Vec<PathBuf>,
    /// What was wrong with the frame at `offset`.
    pub reason: String,
}

/// An open data directory.
pub struct Opened {
    /// The append side; owned by the writer thread.
    pub writer: LogWriter,
    /// The durability side (Send + Sync + Clone): for the fsync thread and backups.
    pub syncer: Syncer,
    /// The newest checkpoint that verified (older ones are tried in turn; which was used and which
    /// were skipped is logged). None when opened with [`open_index`], which streams it instead.
    pub checkpoint: Option<Checkpoint>,
    /// With [`open_index`]: the seq and path of the checkpoint whose parse the caller keeps.
    pub streamed_checkpoint: Option<(u64, PathBuf)>,
    /// Every valid record in the log, in order (empty when opened with [`open_visit`]). All of
    /// them are durable when `open` returns.
    pub records: Vec<Record>,
    /// What recovery cut from the end of the log, if anything.
    pub truncated_tail: Option<TornTail>,
    /// Reads records back by location (history's read path); shares nothing with the writer
    /// but the files.
    pub reader: Arc<LogReader>,
    /// The data directory lock; released on drop (drop it last).
    pub lock: DirLock,
    /// The oldest segment on disk: 0 unless a retention window dropped older ones (then the
    /// genesis record is not in the log, and a checkpoint must cover what was dropped).
    pub first_segment: u64,
}

/// `data_dir/log`
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("log")
}

/// Open a data directory (creating it if missing): take the lock, load the newest checkpoint
/// that verifies, scan and repair the log, and map the segment the writer continues in.
pub fn open(data_dir: &Path, opts: &StorageOptions, io: Arc<dyn Io>) -> Result<Opened, LogError> {
    let mut records = Vec::new();
    let mut opened = open_visit(data_dir, opts, io, &mut |record| records.push(record))?;
    opened.records = records;
    Ok(opened)
}

/// Like [`open`], but hands each record to `visit` in log order instead of collecting them (so a
/// large log need not be held in memory twice). Records are visited during the scan: if `open`
/// then fails (corruption found later), the caller must discard what it was given.
pub fn open_visit(
    data_dir: &Path,
    opts: &StorageOptions,
    io: Arc<dyn Io>,
    visit: &mut dyn FnMut(Record),
) -> Result<Opened, LogError> {
    open_scan(data_dir, opts, io, Load::Whole, &mut |found| {
        visit(Record {
            lsn: found.lsn,
            path: found.path.clone(),
            offset: found.offset,
            payload: found
                .payload
                .expect("nothing is trusted: every payload is read")
                .to_vec(),
        })
    })
}

/// Open for serving: hands `visit` each record's location (the Lsn just past it and its
/// payload length) and its first payload bytes (up to [`PAYLOAD_HEAD_BYTES`], read even where
/// the payload is not checked, so the caller can tell kinds of frames apart), and keeps no record
/// bytes. The newest checkpoint that verifies is streamed through `load` (see
/// [`StreamParse`]; the one kept is [`Opened::streamed_checkpoint`]), which names the Lsn
/// below which records are checked by header only (see `recovery.rs`); the caller must then tie
/// that checkpoint to the log and read every record it serves through [`LogReader`], which
/// checks each CRC.
pub fn open_index(
    data_dir: &Path,
    opts: &StorageOptions,
    io: Arc<dyn Io>,
    load: &mut StreamParse<'_>,
    visit: &mut dyn FnMut(Lsn, u32, &[u8]),
) -> Result<Opened, LogError> {
    open_scan(data_dir, opts, io, Load::Streamed(load), &mut |found| {
        // A payload is below 4 GiB: the length field is a u32.
        visit(found.lsn, found.len as u32, found.head)
    })
}

/// How `open_scan` loads the checkpoint.
enum Load<'a, 'b> {
    /// Read whole into [`Opened::checkpoint`]; every record is checked in full.
    Whole,
    /// Streamed through the caller's parser, which names the trusted end.
    Streamed(&'a mut StreamParse<'b>),
}

fn open_scan(
    data_dir: &Path,
    opts: &StorageOptions,
    io: Arc<dyn Io>,
    load: Load<'_, '_>,
    visit: &mut dyn FnMut(recovery::Found<'_>),
) -> Result<Opened, LogError> {
    assert!(
        opts.segment_bytes >= SEGMENT_BYTES_MIN,
        "segment_bytes {} is below the minimum {SEGMENT_BYTES_MIN}",
        opts.segment_bytes
    );
    io.create_dir_all(data_dir)
        .map_err(|e| LogError::io_or_no_space("create dir", data_dir, e))?;
    let lock = lock_dir(&*io, data_dir)?;
    if let Some(parent) = data_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        // IMPORTANT: if the data directory was just created, its own entry must be durable too.
        io.sync_dir(parent)
            .map_err(|e| LogError::io("fsync dir", parent, e))?;
    }

    let log = log_dir(data_dir);
    let checkpoints = checkpoints_dir(data_dir);
    for dir in [&log, &checkpoints] {
        io.create_dir_all(dir)
            .map_err(|e| LogError::io_or_no_space("create dir", dir, e))?;
    }
    // IMPORTANT: the entries of `log/` and `checkpoints/` in the data directory must be durable
    // before anything inside them can be.
    io.sync_dir(data_dir)
        .map_err(|e| LogError::io("fsync dir", data_dir, e))?;

    checkpoint::remove_temps(&*io, &checkpoints)?;
    let (checkpoint, streamed_checkpoint, trusted_end) = match load {
        Load::Whole => (checkpoint::load_newest(&*io, data_dir)?, None, 0),
        Load::Streamed(parse) => match checkpoint::load_newest_streamed(&*io, data_dir, parse)? {
            Some((seq, path, trusted)) => (None, Some((seq, path)), trusted),
            None => (None, None, 0),
        },
    };
    let mut records = 0u64;
    let recovered = recovery::recover(&*io, &log, opts.segment_bytes, trusted_end, &mut |found| {
        records += 1;
        visit(found)
    })?;
    let sb = recovered.segment_bytes;
    let path = segment_path(&log, recovered.index);
    let (map, map_syncer) = io.map(&path).map_err(|e| LogError::io("mmap", &path, e))?;
    let end = recovered.index * sb + recovered.offset;
    let reader = Arc::new(LogReader::new(io.clone(), log.clone(), sb, recovered.index));
    reader.set_first_segment(recovered.first_index);
    let shared = Arc::new(Shared {
        data_dir: data_dir.to_path_buf(),
        log_dir: log,
        io: io.clone(),
        segment_bytes: sb,
        appended: AtomicU64::new(end),
        // Recovery synced everything it accepted.
        durable: AtomicU64::new(end),
        sync_poisoned: AtomicBool::new(false),
        segments: Mutex::new(VecDeque::from([SyncSegment {
            index: recovered.index,
            path,
            map: map_syncer,
            dir_synced: true,
        }])),
        sync_lock: Mutex::new(()),
        retention_lock: reader.retention_lock.clone(),
    });
    log::info!(
        "msg=\"log opened\" data_dir={} records={records} segment={} offset={} lsn={end} \
         torn_tail={} trusted_end={trusted_end}",
        data_dir.display(),
        recovered.index,
        recovered.offset,
        recovered.torn_tail.is_some()
    );
    Ok(Opened {
        writer: LogWriter::new(shared.clone(), recovered.index, recovered.offset, map),
        syncer: Syncer { shared },
        checkpoint,
        streamed_checkpoint,
        records: Vec::new(),
        truncated_tail: recovered.torn_tail,
        reader,
        lock,
        first_segment: recovered.first_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn the_halves_can_move_to_their_threads() {
        send::<LogWriter>();
        send_sync::<Syncer>();
        send::<Opened>();
        send_sync::<OsIo>();
        send_sync::<FaultIo>();
    }
}
