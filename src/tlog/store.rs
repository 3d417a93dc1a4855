//! Where the stored hashes live: `tlog.hashes` in the data directory (32 bytes per hash, in
//! [`super::tree::stored_hash_index`] order, ~2 hashes per version), or memory with `--amnesia`.
//!
//! Invariant: one thread appends (the `tlog` thread); HTTP workers read concurrently, only
//! indices below the count the appender has published (so a read never sees a half-written
//! hash). Truncation happens only at start-up, before anything is published. The file is
//! derived data and is never fsynced: start-up checks it against the durable log and rebuilds
//! whatever does not match (docs/ARCHITECTURE.md, "Transparency log").

use super::tree::{Hash, HashReader};
use parking_lot::RwLock;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The tree file's name in the data directory.
pub const TREE_FILE: &str = "tlog.hashes";

pub enum HashStore {
    File(File),
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
        Ok(HashStore::File(file))
    }

    pub fn memory() -> HashStore {
        HashStore::Memory(RwLock::new(Vec::new()))
    }

    /// Whole hashes held (a torn last hash does not count).
    pub fn count(&self) -> io::Result<u64> {
        match self {
            HashStore::File(f) => Ok(f.metadata()?.len() / 32),
            HashStore::Memory(v) => Ok(v.read().len() as u64),
        }
    }

    /// Keep the first `count` hashes.
    pub fn truncate(&self, count: u64) -> io::Result<()> {
        match self {
            HashStore::File(f) => f.set_len(count * 32),
            HashStore::Memory(v) => {
                v.write().truncate(count as usize);
                Ok(())
            }
        }
    }

    /// Write `hashes` from index `at` on (`at` ≤ count: the appender overwrites a torn tail).
    pub fn write_at(&self, at: u64, hashes: &[Hash]) -> io::Result<()> {
        match self {
            HashStore::File(f) => f.write_all_at(hashes.concat().as_slice(), at * 32),
            HashStore::Memory(v) => {
                let mut v = v.write();
                v.truncate(at as usize);
                v.extend_from_slice(hashes);
                Ok(())
            }
        }
    }

    /// `count` consecutive hashes from index `at`.
    pub fn read_range(&self, at: u64, count: u64) -> io::Result<Vec<Hash>> {
        match self {
            HashStore::File(f) => {
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

impl HashReader for HashStore {
    fn read_hash(&self, index: u64) -> Result<Hash, String> {
        match self {
            HashStore::File(f) => {
                let mut h = [0u8; 32];
                f.read_exact_at(&mut h, index * 32)
                    .map_err(|e| format!("tree file, hash {index}: {e}"))?;
                Ok(h)
            }
            HashStore::Memory(v) => v.read().as_slice().read_hash(index),
        }
    }
}
