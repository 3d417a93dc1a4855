//! Where the writer's commit records go before they count: the [`Journal`] seam, implemented by
//! the on-disk log (src/storage.rs) and by the in-memory journal of `--amnesia` below.
//!
//! Invariant: an append either writes the whole record and returns the position just past it,
//! or writes nothing and says why.

use crate::history::MemoryStore;
use std::sync::Arc;

/// Why the journal refused an append.
#[derive(Debug)]
pub enum JournalError {
    /// The disk is full; nothing was written (507, the write plane stays up).
    NoSpace(String),
    /// The record does not fit a log segment; nothing was written (413).
    TooLarge(String),
    /// Anything else; the write plane is poisoned.
    Failed(String),
}

/// Where commit records go before they count. Implemented by the on-disk log and by the
/// in-memory journal of `--amnesia`.
pub trait Journal: Send {
    /// Append one record; returns the journal position just past it.
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError>;
    /// Does durability need a sync (false for `--amnesia` and `fsync = "never"`)?
    fn needs_sync(&self) -> bool;
}

/// The journal of `--amnesia`: records go to an in-memory file that history reads back, and
/// nothing is ever written to disk or synced.
pub struct MemoryJournal {
    store: Arc<MemoryStore>,
    end: u64,
}

impl MemoryJournal {
    /// A journal appending to `store` (give the same store to the snapshot's history).
    pub fn new(store: Arc<MemoryStore>) -> MemoryJournal {
        MemoryJournal { store, end: 0 }
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        if u32::try_from(payload.len()).is_err() {
            return Err(JournalError::TooLarge(format!(
                "a record of {} bytes is past the journal's limit",
                payload.len()
            )));
        }
        match self.store.write_at(self.end, payload) {
            Ok(()) => {
                self.end += payload.len() as u64;
                Ok(self.end)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                Err(JournalError::NoSpace(format!("in-memory journal: {e}")))
            }
            Err(e) => Err(JournalError::Failed(format!("in-memory journal: {e}"))),
        }
    }
    fn needs_sync(&self) -> bool {
        false
    }
}
