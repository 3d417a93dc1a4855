//! The operational failures of the storage layer, one small enum.
//!
//! Programmer errors (an append past the end of a map, a sync of a segment the syncer never saw)
//! are assertions, not variants: they mean the code is wrong, not the disk.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why the storage layer refused or failed.
#[derive(Debug)]
pub enum LogError {
    /// A system call failed. `op` names what was being done ("msync", "fallocate", ...).
    Io {
        op: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    /// The disk could not reserve space for a new segment or a checkpoint. Nothing was written,
    /// and the writer is NOT poisoned: the append can be retried once space is freed (507).
    NoSpace { path: PathBuf },
    /// The bytes on disk are not what this module wrote, and it is not a torn tail: start-up must
    /// stop and an operator must look. `offset` is the byte offset inside `path`.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier I/O error (or failed sync) made the in-memory state untrustworthy; no further
    /// appends or syncs are attempted until the process restarts and recovers from disk.
    Poisoned,
    /// Another process (or another `open` in this process) holds the data directory lock.
    /// `holder` is the PID the holder wrote into the lock file, when it could be read.
    Locked { path: PathBuf, holder: Option<u32> },
    /// The record cannot fit in one segment. Nothing was written; the writer is NOT poisoned.
    TooLarge { len: usize, max: usize },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, err: io::Error) -> LogError {
        LogError::Io {
            op,
            path: path.into(),
            err,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> LogError {
        LogError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Like [`LogError::io`], but a full disk becomes [`LogError::NoSpace`].
    pub(crate) fn io_or_no_space(
        op: &'static str,
        path: impl Into<PathBuf>,
        err: io::Error,
    ) -> LogError {
        if is_no_space(&err) {
            LogError::NoSpace { path: path.into() }
        } else {
            LogError::io(op, path, err)
        }
    }
}

pub(crate) fn is_no_space(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC) || err.raw_os_error() == Some(libc::EDQUOT)
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io { op, path, err } => {
                write!(f, "storage {op} failed on {}: {err}", path.display())
            }
            LogError::NoSpace { path } => {
                write!(f, "no space left on device to reserve {}", path.display())
            }
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at offset {offset}: {reason}",
                path.display()
            ),
            LogError::Poisoned => write!(
                f,
                "storage is stopped after an earlier I/O or sync failure; restart to recover from disk"
            ),
            LogError::Locked { path, holder } => match holder {
                Some(pid) => write!(
                    f,
                    "data directory is in use: {} is locked by another process (PID {pid})",
                    path.display()
                ),
                None => write!(
                    f,
                    "data directory is in use: {} is locked by another process (or another open in this one)",
                    path.display()
                ),
            },
            LogError::TooLarge { len, max } => {
                write!(f, "record of {len} bytes does not fit in a segment (at most {max})")
            }
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io { err, .. } => Some(err),
            _ => None,
        }
    }
}
