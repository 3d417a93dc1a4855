//! Glue between the writer's roles and the on-disk log: the journal and sync target the writer
//! and fsync thread use, and start-up restore from `data_dir`.

use crate::domain::record::CommitRecord;
use crate::domain::signers::SignerSet;
use crate::log::{self as rlog, LogError, LogWriter, OsIo, StorageOptions, Syncer};
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

/// Open `data_dir`, recover the log and rebuild the snapshot. A new (empty) log gets its
/// genesis record first (docs/FORMATS.md, genesis v2): `bootstrap` (the config's `[signers]`) is fixed
/// into it and made durable before anything else; for an existing log `bootstrap` is not used.
pub fn open(
    data_dir: &Path,
    registry_id: &str,
    opts: &StorageOptions,
    bootstrap: &Arc<SignerSet>,
) -> Result<OpenedStorage, OpenError> {
    let mut opened = rlog::open(data_dir, opts, Arc::new(OsIo)).map_err(|e| match e {
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
    if opened.records.is_empty() {
        let record = write_genesis(&mut opened, data_dir, registry_id, bootstrap)
            .map_err(|e| OpenError::Refused(format!("writing the genesis record: {e}")))?;
        opened.records.push(record);
    }
    let cp = opened
        .checkpoint
        .as_ref()
        .map(|c| (c.seq, c.payload.as_slice()));
    let restored = match restore::restore(registry_id, cp, &opened.records) {
        Ok(r) => r,
        Err(e) if cp.is_some() => {
            // The checkpoint disagrees with the log (the log is the source of truth): replay
            // the whole log instead, and say so.
            log::warn!(
                "msg=\"checkpoint unusable; replaying the whole log\" checkpoint={:?} error={:?}",
                opened
                    .checkpoint
                    .as_ref()
                    .map(|c| c.path.display().to_string()),
                e.0
            );
            restore::restore(registry_id, None, &opened.records)
                .map_err(|e| OpenError::Refused(e.0))?
        }
        Err(e) => return Err(OpenError::Refused(e.0)),
    };
    Ok(OpenedStorage {
        restored,
        writer: opened.writer,
        syncer: opened.syncer,
        lock: opened.lock,
        data_dir: data_dir.to_path_buf(),
    })
}

/// Append the genesis record of a new log and sync it: the data directory's signer set is fixed
/// from here on. Returns it as the record recovery would have delivered.
pub fn write_genesis(
    opened: &mut rlog::Opened,
    data_dir: &Path,
    registry_id: &str,
    bootstrap: &Arc<SignerSet>,
) -> Result<rlog::Record, LogError> {
    let genesis = CommitRecord::genesis(registry_id, bootstrap.clone());
    let payload = genesis.to_json();
    let start = opened.writer.end();
    let lsn = opened.writer.append(&payload)?;
    opened.syncer.sync_to(lsn)?;
    log::info!(
        "msg=\"new data directory: genesis v2 written\" data_dir={:?} hash={} signers_digest={} threshold={} keys={}",
        data_dir.display().to_string(),
        genesis.hash,
        bootstrap.digest(),
        bootstrap.threshold,
        bootstrap.keys.len()
    );
    Ok(rlog::Record {
        lsn,
        path: rlog::segment_path(&rlog::log_dir(data_dir), 0).into(),
        offset: start,
        payload,
    })
}
