//! Where the writer's commit records go before they count: the [`Journal`] seam, implemented by
//! the on-disk log (src/storage.rs) and by the in-memory journal of `--amnesia` below.
//!
//! Invariant: an append either writes the whole record and returns the position just past it,
//! or writes nothing and says why.

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

/// A journal that keeps nothing: `--amnesia` (state lives in the snapshot only).
pub struct MemoryJournal {
    end: u64,
}

impl MemoryJournal {
    pub fn new() -> MemoryJournal {
        MemoryJournal { end: 0 }
    }
}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal for MemoryJournal {
    fn append(&mut self, payload: &[u8]) -> Result<u64, JournalError> {
        self.end += payload.len() as u64;
        Ok(self.end)
    }
    fn needs_sync(&self) -> bool {
        false
    }
}
