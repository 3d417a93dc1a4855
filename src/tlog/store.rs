//! Where the stored hashes live: `tlog.hashes` in the data directory (32 bytes per hash, in
//! [`super::tree::stored_hash_index`] order, ~2 hashes per version), or memory with `--amnesia`.
//!
//! Invariant: one thread appends (the `tlog` thread); HTTP workers read concurrently, only
//! indices below the count the appender has published (so a read never sees a half-written
//! hash). The file is truncated only by the start-up check, before the first map of it exists;
//! after that it only grows. The file is derived data and is never fsynced: start-up checks it
//! against the durable log and rebuilds whatever does not match (docs/ARCHITECTURE.md,
//! "Transparency log").
//!
//! Reads come from a read-only map of the file's first bytes (a proof reads ~2·log₂ n hashes:
//! one `pread` each cost more than the rest of the request); the newest hashes, past the map,
//! are read with `pread`. The appender maps the file again once [`REMAP_BYTES`] have been
//! written past the map, after the start-up check (which may truncate, so it runs unmapped), and
//! when it has been idle with hashes past the map ([`HashStore::map_to`]): a tree that is not
//! growing is read with no system call at all.

use super::tree::{Hash, HashReader};
use arc_swap::ArcSwapOption;
use memmap2::Mmap;
use parking_lot::RwLock;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The tree file's name in the data directory.
pub const TREE_FILE: &str = "tlog.hashes";

/// Bytes written past the map before the appender maps the file again.
pub const REMAP_BYTES: u64 = 64 * 1024;

pub enum HashStore {
    /// The file, and a map of its first bytes (None until the first append after start-up).
    File(File, ArcSwapOption<Mmap>),
    Memory(RwLock<Vec<Hash>>),
}

impl HashStore {
    /// Open (or create) the tree file in `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<HashStore> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(data_dir.join(TREE_FILE))?;
        Ok(HashStore::File(file, ArcSwapOption::empty()))
    }

    pub fn memory() -> HashStore {
        HashStore::Memory(RwLock::new(Vec::new()))
    }

    /// Whole hashes held (a torn last hash does not count).
    pub fn count(&self) -> io::Result<u64> {
        match self {
            HashStore::File(f, _) => Ok(f.metadata()?.len() / 32),
            HashStore::Memory(v) => Ok(v.read().len() as u64),
        }
    }

    /// Keep the first `count` hashes.
    pub fn truncate(&self, count: u64) -> io::Result<()> {
        match self {
            HashStore::File(f, map) => {
                // A map over bytes cut off would SIGBUS its readers: truncation is for the
                // start-up check, which runs before anything is mapped.
                assert!(
                    map.load().is_none(),
                    "the tree file is truncated while mapped"
                );
                f.set_len(count * 32)
            }
            HashStore::Memory(v) => {
                v.write().truncate(count as usize);
                Ok(())
            }
        }
    }

    /// Write `hashes` from index `at` on (`at` ≤ count: the appender overwrites a torn tail).
    pub fn write_at(&self, at: u64, hashes: &[Hash]) -> io::Result<()> {
        match self {
            HashStore::File(f, map) => {
                f.write_all_at(hashes.concat().as_slice(), at * 32)?;
                let end = (at + hashes.len() as u64) * 32;
                let mapped = map.load().as_ref().map_or(0, |m| m.len() as u64);
                if end >= mapped + REMAP_BYTES {
                    // SAFETY: the map is read-only and covers [0, end), bytes the file holds
                    // now; the file never shrinks after start-up (`truncate` refuses while a
                    // map exists, and only the start-up check calls it, before this), so no
                    // read of the map can SIGBUS. Bytes in it change only by this thread's
                    // appends past what readers may read (they read below the published size).
                    let m = unsafe { memmap2::MmapOptions::new().len(end as usize).map(f)? };
                    map.store(Some(std::sync::Arc::new(m)));
                }
                Ok(())
            }
            HashStore::Memory(v) => {
                let mut v = v.write();
                v.truncate(at as usize);
                v.extend_from_slice(hashes);
                Ok(())
            }
        }
    }

    /// Map the first `count` hashes if the map holds fewer (the appender's call, with `count`
    /// hashes written; never while the start-up check may still truncate). Returns whether it
    /// mapped.
    pub fn map_to(&self, count: u64) -> io::Result<bool> {
        let HashStore::File(f, map) = self else {
            return Ok(false);
        };
        let end = count * 32;
        let mapped = map.load().as_ref().map_or(0, |m| m.len() as u64);
        if end <= mapped {
            return Ok(false);
        }
        // SAFETY: as in `write_at`: read-only, over bytes the file holds, and the file never
        // shrinks once mapped (`truncate` refuses).
        let m = unsafe { memmap2::MmapOptions::new().len(end as usize).map(f)? };
        map.store(Some(std::sync::Arc::new(m)));
        Ok(true)
    }

    /// `count` consecutive hashes from index `at`.
    pub fn read_range(&self, at: u64, count: u64) -> io::Result<Vec<Hash>> {
        match self {
            HashStore::File(f, map) => {
                let (from, to) = ((at * 32) as usize, ((at + count) * 32) as usize);
                if let Some(bytes) = map.load().as_ref().and_then(|m| m.get(from..to)) {
                    return Ok(bytes
                        .chunks_exact(32)
                        .map(|c| c.try_into().expect("32 bytes"))
                        .collect());
                }
                let mut buf = vec![0u8; (count * 32) as usize];
                f.read_exact_at(&mut buf, at * 32)?;
                Ok(buf
                    .chunks_exact(32)
                    .map(|c| c.try_into().expect("32 bytes"))
                    .collect())
            }
            HashStore::Memory(v) => {
                let v = v.read();
                v.get(at as usize..(at + count) as usize)
                    .map(<[Hash]>::to_vec)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "past the end"))
            }
        }
    }
}

/// A reader that loads the map once for many reads (a proof's ~log₂ n reads each loading it
/// cost more than the reads themselves). Reads past that map go to the store as usual.
pub struct Reader<'a> {
    store: &'a HashStore,
    map: Option<arc_swap::Guard<Option<std::sync::Arc<Mmap>>>>,
}

impl HashStore {
    /// A [`Reader`] over the map as it is now; hold it for one request, not longer.
    pub fn reader(&self) -> Reader<'_> {
        let map = match self {
            HashStore::File(_, map) => Some(map.load()),
            HashStore::Memory(_) => None,
        };
        Reader { store: self, map }
    }
}

impl HashReader for Reader<'_> {
    fn read_hash(&self, index: u64) -> Result<Hash, String> {
        let at = (index * 32) as usize;
        if let Some(Some(m)) = self.map.as_deref() {
            if let Some(bytes) = m.get(at..at + 32) {
                return Ok(bytes.try_into().expect("32 bytes"));
            }
        }
        self.store.read_hash(index)
    }
}

impl HashReader for HashStore {
    fn read_hash(&self, index: u64) -> Result<Hash, String> {
        match self {
            HashStore::File(f, map) => {
                let at = (index * 32) as usize;
                if let Some(m) = &*map.load() {
                    if let Some(bytes) = m.get(at..at + 32) {
                        return Ok(bytes.try_into().expect("32 bytes"));
                    }
                }
                let mut h = [0u8; 32];
                f.read_exact_at(&mut h, index * 32)
                    .map_err(|e| format!("tree file, hash {index}: {e}"))?;
                Ok(h)
            }
            HashStore::Memory(v) => v.read().as_slice().read_hash(index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `map_to` maps a tail the appends left unmapped (a file opened and only checked, or an
    /// idle appender), never shrinks the map, and is a no-op in memory.
    #[test]
    fn map_to_covers_what_appends_left_unmapped() {
        let dir = tempfile::tempdir().unwrap();
        let file = HashStore::open(dir.path()).unwrap();
        let hash = |i: u64| -> Hash { super::super::tree::leaf_hash(&i.to_be_bytes()) };
        let hashes: Vec<Hash> = (0..100).map(hash).collect();
        file.write_at(0, &hashes).unwrap();
        let HashStore::File(_, map) = &file else {
            unreachable!()
        };
        let mapped = || map.load().as_ref().map_or(0, |m| m.len() as u64 / 32);
        assert_eq!(mapped(), 0, "100 hashes are fewer than REMAP_BYTES");
        assert!(file.map_to(100).unwrap());
        assert_eq!(mapped(), 100);
        let before = file.reader();
        file.write_at(100, &[hash(100)]).unwrap();
        assert!(!file.map_to(60).unwrap(), "a shorter map is never taken");
        assert_eq!(mapped(), 100);
        // A reader holds the map it started with; past it, it reads the file.
        assert!(file.map_to(101).unwrap());
        for i in 0..=100 {
            assert_eq!(file.read_hash(i).unwrap(), hash(i));
            assert_eq!(before.read_hash(i).unwrap(), hash(i));
            assert_eq!(file.reader().read_hash(i).unwrap(), hash(i));
        }
        assert!(file.read_hash(101).is_err());
        assert!(before.read_hash(101).is_err());
        assert!(HashStore::memory().reader().read_hash(0).is_err());
        assert!(!HashStore::memory().map_to(5).unwrap());
    }

    /// Reads agree whether they come from the map, from `pread` past it, or from memory.
    #[test]
    fn mapped_and_unmapped_reads_agree() {
        let dir = tempfile::tempdir().unwrap();
        let file = HashStore::open(dir.path()).unwrap();
        let memory = HashStore::memory();
        let hash = |i: u64| -> Hash { super::super::tree::leaf_hash(&i.to_be_bytes()) };
        let total = 3 * REMAP_BYTES / 32 + 77;
        let mut at = 0;
        while at < total {
            let chunk: Vec<Hash> = (at..(at + 100).min(total)).map(hash).collect();
            file.write_at(at, &chunk).unwrap();
            memory.write_at(at, &chunk).unwrap();
            at += chunk.len() as u64;
        }
        let HashStore::File(_, map) = &file else {
            unreachable!()
        };
        let mapped = map.load().as_ref().map_or(0, |m| m.len() as u64 / 32);
        assert!(
            mapped >= 2 * REMAP_BYTES / 32 && mapped < total,
            "mapped {mapped} of {total}"
        );
        for i in (0..total).step_by(97).chain(mapped - 2..total) {
            assert_eq!(file.read_hash(i).unwrap(), hash(i), "hash {i}");
            assert_eq!(memory.read_hash(i).unwrap(), hash(i), "hash {i}");
        }
        // A range across the end of the map is read whole.
        let across = file.read_range(mapped - 3, 6).unwrap();
        assert_eq!(
            across,
            (mapped - 3..mapped + 3).map(hash).collect::<Vec<_>>()
        );
        assert_eq!(memory.read_range(mapped - 3, 6).unwrap(), across);
        assert!(file.read_hash(total).is_err());
        assert_eq!(file.count().unwrap(), total);
    }
}
