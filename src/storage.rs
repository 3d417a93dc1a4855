//! Glue between the writer's roles and the on-disk log: the journal and sync target the writer
//! and fsync thread use, history's read path over the log, and start-up restore from
//! `data_dir`.
//!
//! Start-up keeps no record bytes: recovery's scan yields each record's location, and restore
//! reads back only what it needs (the checkpoint's record, what follows it, recent proposal ids).

use crate::domain::record::CommitRecord;
use crate::history::{History, HistorySource, Loc};
use crate::log::{self as rlog, LogError, LogReader, LogWriter, OsIo, StorageOptions, Syncer};
use crate::restore::{self, Located, Restored};
use crate::roles::fsync::SyncTarget;
use crate::roles::writer::{Journal, JournalError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

impl Located for rlog::Record {
    fn location(&self) -> String {
        format!("{}:{}", self.path.display(), self.offset)
    }
    fn payload(&self) -> &[u8] {
        &self.payload
    }
}

impl HistorySource for LogReader {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        LogReader::read(self, loc.end, loc.len).map_err(|e| e.to_string())
    }
}

/// The history of an opened log: genesis, then every record recovery found, read through
/// `reader`.
pub fn history_of(
    registry_id: &str,
    reader: Arc<LogReader>,
    locs: impl IntoIterator<Item = Loc>,
) -> History {
    let mut history = History::new(Arc::new(CommitRecord::genesis(registry_id)), reader);
    for loc in locs {
        history.push(loc);
    }
    history
}

/// `segment path:offset` of the record at `loc`, for error messages.
fn describe(reader: &LogReader, log_dir: &Path, loc: Loc) -> String {
    let sb = reader.segment_bytes();
    let start = loc.end - u64::from(loc.len) - rlog::FRAME_HEADER_BYTES;
    format!(
        "{}:{}",
        rlog::segment_path(log_dir, start / sb).display(),
        start % sb
    )
}

/// Restore over an opened log's history, falling back to a replay of the whole log when the
/// checkpoint disagrees with it (the log is the source of truth), and saying so.
pub fn restore_opened(
    registry_id: &str,
    checkpoint: Option<&rlog::Checkpoint>,
    history: History,
    reader: &LogReader,
    log_dir: &Path,
) -> Result<Restored, restore::RestoreError> {
    let location = |v: u64| match history.loc(v) {
        Some(loc) => describe(reader, log_dir, loc),
        None => format!("version {v}"),
    };
    let cp = checkpoint.map(|c| (c.seq, c.payload.as_slice()));
    match restore::restore_history(registry_id, cp, history.clone(), &location) {
        Ok(r) => Ok(r),
        Err(e) if cp.is_some() => {
            log::warn!(
                "msg=\"checkpoint unusable; replaying the whole log\" checkpoint={:?} error={:?}",
                checkpoint.map(|c| c.path.display().to_string()),
                e.0
            );
            restore::restore_history(registry_id, None, history.clone(), &location)
        }
        Err(e) => Err(e),
    }
}

/// The writer's journal on disk.
pub struct DiskJournal {
    pub writer: LogWriter,
    /// false with `fsync = "never"`: commits are acknowledged without a sync (benchmarks only).
    pub sync: bool,
}

impl Journal for DiskJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        self.writer.append(payload).map_err(|e| match e {
            LogError::NoSpace { .. } => JournalError::NoSpace(e.to_string()),
            LogError::TooLarge { .. } => JournalError::TooLarge(e.to_string()),
            other => JournalError::Failed(other.to_string()),
        })
    }
    fn needs_sync(&self) -> bool {
        self.sync
    }
}

impl SyncTarget for Syncer {
    fn sync_to(&self, position: u64) -> Result<u64, String> {
        Syncer::sync_to(self, position).map_err(|e| e.to_string())
    }
}

/// Why start-up could not restore state.
pub enum OpenError {
    /// Another process holds the data directory: exit at once.
    Locked(String),
    /// The data directory or its log cannot be created, opened or read (permissions, a path
    /// under a file, a full disk): exit at once with this reason, so a supervisor restarts the
    /// process (and the operator sees why) instead of it staying up and never ready.
    Io(String),
    /// Corruption found by recovery: stay up, not ready, with this reason (an operator must
    /// look; restarting cannot help).
    Refused(String),
}

pub struct OpenedStorage {
    pub restored: Restored,
    pub writer: LogWriter,
    pub syncer: Syncer,
    pub lock: rlog::DirLock,
    pub data_dir: PathBuf,
}

/// Open `data_dir`, recover the log and rebuild the snapshot.
pub fn open(
    data_dir: &Path,
    registry_id: &str,
    opts: &StorageOptions,
) -> Result<OpenedStorage, OpenError> {
    let mut locs = Vec::new();
    let trust = |c: &rlog::Checkpoint| restore::checkpoint_log_end(&c.payload).unwrap_or(0);
    let opened = rlog::open_index(data_dir, opts, Arc::new(OsIo), &trust, &mut |end, len| {
        locs.push(Loc { end, len })
    })
    .map_err(|e| match e {
        LogError::Locked { .. } => OpenError::Locked(e.to_string()),
        LogError::Io { .. } | LogError::NoSpace { .. } => OpenError::Io(e.to_string()),
        other => OpenError::Refused(other.to_string()),
    })?;
    if let Some(t) = &opened.truncated_tail {
        log::warn!(
            "msg=\"torn log tail truncated\" path={:?} offset={} bytes={} reason={:?}",
            t.path.display().to_string(),
            t.offset,
            t.zeroed_bytes,
            t.reason
        );
    }
    let history = history_of(registry_id, opened.reader.clone(), locs);
    let restored = restore_opened(
        registry_id,
        opened.checkpoint.as_ref(),
        history,
        &opened.reader,
        &rlog::log_dir(data_dir),
    )
    .map_err(|e| OpenError::Refused(e.0))?;
    Ok(OpenedStorage {
        restored,
        writer: opened.writer,
        syncer: opened.syncer,
        lock: opened.lock,
        data_dir: data_dir.to_path_buf(),
    })
}
