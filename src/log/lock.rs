//! The data directory lock: `data_dir/LOCK`, held with `flock(LOCK_EX | LOCK_NB)` for as long as
//! the [`DirLock`] lives, so two processes never append to the same log.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::LogError;
use super::io::{Io, LockHandle};

/// Proof that this process owns the data directory. Released on drop.
pub struct DirLock {
    path: PathBuf,
    _handle: Box<dyn LockHandle>,
}

impl DirLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl std::fmt::Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirLock").field("path", &self.path).finish()
    }
}

/// Take the lock on `data_dir` (which must exist) without waiting.
pub fn lock_dir(io: &dyn Io, data_dir: &Path) -> Result<DirLock, LogError> {
    let path = data_dir.join("LOCK");
    match io.lock(&path) {
        Ok(handle) => Ok(DirLock {
            path,
            _handle: handle,
        }),
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            // The holder wrote its PID into the file when it locked it (OsIo::lock): name it,
            // so the operator knows which process to look at. Best effort: only for the message.
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse().ok());
            Err(LogError::Locked { path, holder })
        }
        Err(e) => Err(LogError::io("lock", path, e)),
    }
}
