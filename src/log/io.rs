//! The storage seam: every file access of this module goes through [`Io`].
//!
//! Two implementations: [`OsIo`] (real files: `posix_fallocate`, `memmap2`, `flock`, `fsync`) and
//! [`crate::log::FaultIo`] (in-memory files that model what survives a power cut, and inject
//! errors). Keeping the seam small is what lets the tests crash the storage at every write and
//! every sync and check what recovery makes of it.
//!
//! The unit of the seam is "bytes at an offset of a file". For a mapped segment that is a
//! `memcpy` into the map ([`MapWriter::write`]) and its durability is `msync(MS_SYNC)` of a range
//! ([`MapSyncer::sync_range`]); the fault model treats both exactly like `pwrite` and
//! `fdatasync`, which is what they are to the kernel.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

use super::LogError;

/// Write `bytes` to `path` so that a crash leaves either the old file (or none) or the new one
/// whole, never a partial one: `{path}.tmp` → write → fsync → rename → fsync of the directory.
/// The one copy of this sequence (checkpoints, the backup manifest).
pub fn write_atomic(io: &dyn Io, path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = path.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = std::path::PathBuf::from(temp);
    {
        let file = io
            .create(&temp)
            .map_err(|e| LogError::io_or_no_space("create", &temp, e))?;
        file.write_at(0, bytes)
            .map_err(|e| LogError::io_or_no_space("write", &temp, e))?;
        // The contents must be durable before the rename can be: otherwise a crash could leave
        // the new name pointing at an empty or partial file.
        file.sync()
            .map_err(|e| LogError::io_or_no_space("fsync", &temp, e))?;
    }
    io.rename(&temp, path)
        .map_err(|e| LogError::io("rename", &temp, e))?;
    // IMPORTANT: the rename is durable only once the directory is fsynced.
    io.sync_dir(dir)
        .map_err(|e| LogError::io("fsync dir", dir, e))
}

/// All file access of the log, checkpoints, lock and backup.
pub trait Io: Send + Sync {
    /// Create `dir` and any missing parents (not made durable: call [`Io::sync_dir`] on the
    /// parent).
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `dir`, in no particular order.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
    /// Create a file, or truncate an existing one to zero length.
    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>>;
    /// Create a NEW file exactly `len` bytes long with all its blocks reserved (fallocate) and
    /// zero-filled, and make its length durable (fsync). On failure no file is left behind; a
    /// full disk fails with `ENOSPC`. The directory entry is not yet durable.
    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Map the whole of an existing file read-write. The caller promises the file's length never
    /// changes while the map exists (a shrink would turn later accesses into SIGBUS).
    fn map(&self, path: &Path) -> io::Result<(Box<dyn MapWriter>, Arc<dyn MapSyncer>)>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsync a directory: makes the entries created, renamed or removed in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Take an exclusive lock on `path` (created if missing) without waiting;
    /// `ErrorKind::WouldBlock` when someone else holds it. Released when the handle drops.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockHandle>>;
}

/// An open file, accessed with positioned reads and writes.
pub trait FileHandle: Send + Sync {
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Read into `buf` from `offset`; returns fewer bytes than asked only at end of file.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Write all of `bytes` at `offset` (not durable until [`FileHandle::sync`]).
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// fsync: data and metadata (length) of this file become durable.
    fn sync(&self) -> io::Result<()>;
}

/// The writing half of a mapped file. Exactly one exists per map, owned by the writer thread, so
/// writes through it never race each other.
pub trait MapWriter: Send {
    /// Length of the map (== the file length, fixed).
    fn size(&self) -> u64;
    /// Copy `bytes` into the map at `offset`. Panics if the range is outside the map.
    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
}

/// The durability half of a mapped file, shared with the fsync thread.
pub trait MapSyncer: Send + Sync {
    /// `msync(MS_SYNC)` of `[offset, offset + len)`: when it returns Ok those bytes are durable.
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()>;
}

/// Holds a lock taken by [`Io::lock`]; dropping it releases the lock.
pub trait LockHandle: Send {}

/// Read until `buf` is full or end of file; returns the number of bytes read.
pub(crate) fn read_full(file: &dyn FileHandle, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(offset + done as u64, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsIo;

struct OsFile(File);

impl FileHandle for OsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all_at(bytes, offset)
    }
    fn sync(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

/// Both halves of a mapped segment hold the same map; it is unmapped when the last one drops.
struct OsMap {
    map: Arc<MmapRaw>,
}

impl MapWriter for OsMap {
    fn size(&self) -> u64 {
        self.map.len() as u64
    }

    fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset.checked_add(bytes.len() as u64);
        assert!(
            end.is_some_and(|end| end <= self.map.len() as u64),
            "write of {} bytes at {offset} outside a map of {} bytes",
            bytes.len(),
            self.map.len()
        );
        // SAFETY: the range [offset, offset + len) lies inside the map (asserted above), and the
        // mapped file keeps that length for the map's whole life: it was reserved with fallocate
        // before mapping, and this module never truncates or shrinks a mapped file, so no SIGBUS.
        // This `&mut self` is the only writer of the map (`Io::map` hands out exactly one
        // `MapWriter`), and no slice or reference into the map is ever handed out (recovery and
        // backup read with pread), so the copy cannot race a Rust-level access of these bytes.
        // The source is a live slice that cannot overlap the map (the map is never borrowed).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                bytes.len(),
            );
        }
        Ok(())
    }
}

impl MapSyncer for OsMap {
    fn sync_range(&self, offset: u64, len: u64) -> io::Result<()> {
        // memmap2 aligns the start down to a page and calls msync(MS_SYNC); it reads no memory.
        self.map.flush_range(offset as usize, len as usize)
    }
}

struct OsLock {
    _file: File,
}

impl LockHandle for OsLock {}

impl Io for OsIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn FileHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        Ok(Box::new(OsFile(file)))
    }

    fn create_preallocated(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let len_off = libc::off_t::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment length too large"))?;
        // posix_fallocate is fallocate(2) with glibc's write-zeros fallback for file systems that
        // lack it; either way every block is reserved, so later writes through the map cannot
        // fail for lack of space (which would be a SIGBUS, not an error).
        // SAFETY: the fd belongs to `file`, which outlives the call; no memory is passed.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len_off) };
        let result = if rc != 0 {
            Err(io::Error::from_raw_os_error(rc))
        } else {
            file.sync_all()
        };
        if let Err(e) = result {
            drop(file);
            // Leave no half-reserved file behind: the next roll creates it again. The file was
            // never mapped, so removing it is safe.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(())
    }

    fn map(&self, path: &Path) -> io::Result<(Box<dyn MapWriter>, Arc<dyn MapSyncer>)> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file too large to map"))?;
        let map = Arc::new(MmapOptions::new().len(len).map_raw(&file)?);
        let syncer: Arc<dyn MapSyncer> = Arc::new(OsMap { map: map.clone() });
        Ok((Box::new(OsMap { map }), syncer))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockHandle>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        // flock locks belong to the open file description, so a second open of the same file
        // (even in this process) conflicts, and closing the fd (on drop) releases it.
        // SAFETY: the fd belongs to `file`, which outlives the call; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // Record who holds the lock, for the "in use" message of the next process that tries.
        // Only the holder writes, and only while holding the lock.
        use std::os::unix::fs::FileExt;
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)?;
        file.write_all_at(pid.as_bytes(), 0)?;
        Ok(Box::new(OsLock { _file: file }))
    }
}
