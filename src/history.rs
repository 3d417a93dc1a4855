//! The chain's history as a compact index into the log: what `/registry/{version}`,
//! `/registry/log`, stream replay and `GET /proposals/{id}` read past records through.
//!
//! Per version the heap holds one [`Loc`] (16 bytes: where the record's bytes end in the journal
//! and how long they are), in a persistent vector that a published snapshot shares with the
//! next one (pushing is O(1) amortised, readers take no lock). The bytes themselves stay in the
//! journal: the on-disk log read with positioned reads ([`crate::log::LogReader`]), or, with
//! `--amnesia`, an anonymous in-memory file ([`MemoryStore`]). Genesis is never in a journal and
//! stays in memory.
//!
//! Invariants: a [`History`] only ever holds locations of records that were written whole to its
//! source; a snapshot is published only once its head is durable, so a reader bounded by a
//! published snapshot never reads a torn tail. The stored bytes ARE the served JSON of the record
//! (`CommitRecord::to_json`): they are answered as they are, never re-encoded.

use crate::domain::record::CommitRecord;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Where one record's bytes lie in its journal: the journal position just past them (what
/// `Journal::append` returned) and their length. 16 bytes per version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loc {
    pub end: u64,
    pub len: u32,
}

/// Something history can be read from. Implementations are shared by every reader thread; a
/// read never blocks on the writer (the writer only appends past every indexed location).
pub trait HistorySource: Send + Sync {
    /// The record bytes at `loc`, checked as far as the medium allows (the log checks the
    /// frame's CRC). An error says what failed and where.
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String>;
}

/// Every record from genesis to a head: genesis in memory, the others as locations.
#[derive(Clone)]
pub struct History {
    genesis: Arc<CommitRecord>,
    /// `index[i]` is version `i + 1`.
    index: imbl::Vector<Loc>,
    source: Arc<dyn HistorySource>,
}

impl History {
    /// A history holding only genesis.
    pub fn new(genesis: Arc<CommitRecord>, source: Arc<dyn HistorySource>) -> History {
        History {
            genesis,
            index: imbl::Vector::new(),
            source,
        }
    }

    /// Versions held (genesis included): head version + 1.
    pub fn len(&self) -> u64 {
        self.index.len() as u64 + 1
    }

    /// Never true: genesis is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Append the location of the next version's record.
    pub fn push(&mut self, loc: Loc) {
        self.index.push_back(loc);
    }

    /// The location of `version` (None for genesis or past the head).
    pub fn loc(&self, version: u64) -> Option<Loc> {
        let i = usize::try_from(version.checked_sub(1)?).ok()?;
        self.index.get(i).copied()
    }

    pub fn source(&self) -> &Arc<dyn HistorySource> {
        &self.source
    }

    pub fn genesis(&self) -> &Arc<CommitRecord> {
        &self.genesis
    }

    /// The served JSON of `version`: `Ok(None)` past the head, `Err` if the journal could not be
    /// read back intact.
    pub fn bytes(&self, version: u64) -> Result<Option<Vec<u8>>, String> {
        if version == 0 {
            return Ok(Some(self.genesis.to_json()));
        }
        match self.loc(version) {
            Some(loc) => self.source.read(loc).map(Some),
            None => Ok(None),
        }
    }

    /// The parsed record of `version` (stream replay, committed proposals, checks).
    pub fn record(&self, version: u64) -> Result<Option<CommitRecord>, String> {
        if version == 0 {
            return Ok(Some((*self.genesis).clone()));
        }
        let Some(bytes) = self.bytes(version)? else {
            return Ok(None);
        };
        let rec = CommitRecord::from_json(&bytes).map_err(|e| {
            format!(
                "version {version}: stored record is not valid: {}",
                e.message
            )
        })?;
        if rec.version != version {
            return Err(format!(
                "version {version}: the log holds version {} at its place",
                rec.version
            ));
        }
        Ok(Some(rec))
    }
}

/// The `--amnesia` journal's bytes: an anonymous in-memory file (memfd), appended by the writer
/// and read with positioned reads by everyone else, exactly like a log segment. What an amnesiac
/// node's memory grows with is these bytes (the records themselves); they are kernel shmem pages,
/// not part of the process heap.
pub struct MemoryStore {
    file: std::fs::File,
}

impl MemoryStore {
    pub fn new() -> std::io::Result<MemoryStore> {
        // SAFETY: the name is a NUL-terminated C string literal; no other memory is passed.
        let fd = unsafe { libc::memfd_create(c"svc-registry-amnesia".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by memfd_create and is owned by nothing else.
        let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        Ok(MemoryStore { file })
    }

    /// Write `bytes` at `at` (the journal's end: only the writer calls this).
    pub fn write_at(&self, at: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, at)
    }
}

impl HistorySource for MemoryStore {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        let start = loc.end - u64::from(loc.len);
        let mut buf = vec![0u8; loc.len as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .map_err(|e| format!("reading the in-memory journal at {start}: {e}"))?;
        Ok(buf)
    }
}

/// A source for histories that hold only genesis and never grow (tests, `Snapshot::genesis`
/// before a journal exists).
pub struct NoSource;

impl HistorySource for NoSource {
    fn read(&self, loc: Loc) -> Result<Vec<u8>, String> {
        Err(format!("no journal holds the record ending at {}", loc.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loc_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Loc>(), 16);
    }

    #[test]
    fn memory_store_round_trips_and_history_serves_what_was_written() {
        let store = Arc::new(MemoryStore::new().unwrap());
        let genesis = Arc::new(CommitRecord::genesis(
            "r",
            crate::domain::signers::test_set(1, 1),
        ));
        let mut h = History::new(genesis.clone(), store.clone());
        let mut end = 0u64;
        for word in [&b"alpha"[..], b"beta", b"gamma"] {
            store.write_at(end, word).unwrap();
            end += word.len() as u64;
            h.push(Loc {
                end,
                len: word.len() as u32,
            });
        }
        assert_eq!(h.len(), 4);
        assert_eq!(h.bytes(0).unwrap().unwrap(), genesis.to_json());
        assert_eq!(h.bytes(2).unwrap().unwrap(), b"beta");
        assert_eq!(h.bytes(3).unwrap().unwrap(), b"gamma");
        assert_eq!(h.bytes(4).unwrap(), None);
        // "beta" is not a record: parsing says so instead of panicking.
        assert!(h.record(2).is_err());
    }
}
